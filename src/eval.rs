//! `meterstack eval`: the pipeline against a simulated fleet with labelled faults.
//!
//! The fleet runs offline tick by tick; each tick's readings go through the pipeline as
//! `readings.raw` records (the wire format the broker stores), the pipeline's resend commands
//! go back to the meters, and what the pipeline found is scored against the labels: a finding
//! matches a label of its type on the same meter (feeder, for feeder outages) when their times
//! overlap within two intervals. Precision is the share of findings that match a label;
//! recall the share of labels matched by a finding.
//!
//! Bypasses and appliances left on are found by the `ml` role's forecast-deviation check, not
//! the pipeline: each meter's history before the scored days (the same homes, simulated
//! without faults) and the hours the pipeline measured form its series; a forecast from each
//! scored local midnight (the 7-day median baseline by default, or the learned model trained
//! on the history) gives the band the day's hours are checked against.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use meterstack_core::bus::{Record, headers};
use meterstack_core::records::{Aggregate, Alert, AlertEvent, Width};
use meterstack_core::store::meters::MeterClass;
use meterstack_core::wire;
use meterstack_core::wire::command::Command;
use meterstack_ml::deviation::{self, Active};
use meterstack_ml::model::baseline::Baseline;
use meterstack_ml::series::{Hour, hour_of, start_of};
use meterstack_ml::{Calendar, Forecaster, MlConfig, ModelKind, Series};
use meterstack_pipeline::output::Outputs;
use meterstack_pipeline::{MeterInfo, PipelineConfig, Processor, Registry, State};
use meterstack_sim::load::Weather;
use meterstack_sim::offline::Offline;
use meterstack_sim::score::{Outputs as ScoredOutputs, Score, findings, merge, misses, score};
use meterstack_sim::{FaultConfig, FaultType, FleetConfig, Label, RunShape, build_fleet};
use serde::Serialize;

/// `meterstack eval` arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Meters in the fleet.
    #[arg(long, default_value_t = 500)]
    meters: usize,
    /// Simulated days that are scored.
    #[arg(long, default_value_t = 7)]
    days: u32,
    /// Meters per feeder.
    #[arg(long, default_value_t = 25)]
    meters_per_feeder: usize,
    /// Multiplies every fault rate (the default makes each type frequent enough to score).
    #[arg(long, default_value_t = 4.0)]
    fault_scale: f64,
    /// A clean fleet: no faults; every alert is false.
    #[arg(long)]
    clean: bool,
    /// Seed of the fleet.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// First simulated day (UTC midnight).
    #[arg(long, default_value = "2026-03-02T00:00:00Z")]
    start: DateTime<Utc>,
    /// Fail unless every type reaches this precision and recall (with `--clean`, where every
    /// finding is false, unless false alerts stay within `--max-false-alerts` per 1,000
    /// meter-days).
    #[arg(long)]
    check: Option<f64>,
    /// With `--check`: a type's own bar, `TYPE=PRECISION:RECALL` (repeatable).
    #[arg(long = "check-type", value_parser = parse_bar)]
    check_type: Vec<(String, f64, f64)>,
    /// With `--clean --check`: the most false alerts allowed per 1,000 meter-days.
    #[arg(long, default_value_t = 1.0)]
    max_false_alerts: f64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also list findings that match no label and labels no finding matched.
    #[arg(long)]
    show_misses: bool,
    /// Days of each meter's history before the scored days (forecast-deviation check).
    #[arg(long, default_value_t = 28)]
    history_days: u32,
    /// The model whose band the deviation check uses: `median_7d` (the baseline, nothing to
    /// train) or `gbm` (trained on the history, as `[ml]` configures it; give it
    /// `--history-days 70` or more).
    #[arg(long, default_value = "median_7d", value_parser = ["median_7d", "gbm"])]
    forecast_model: String,
}

/// What `meterstack eval` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Report {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    misses: Vec<String>,
    meters: usize,
    days: u32,
    readings: u64,
    meter_days: f64,
    by_type: BTreeMap<String, Score>,
    alerts_opened: BTreeMap<String, usize>,
    false_alerts_per_1000_meter_days: Option<f64>,
    flags_on_clean_fleet: Option<usize>,
    resend_commands: usize,
    resent_readings: usize,
    seconds: f64,
    /// Time spent in the pipeline alone (decoding and processing, not the simulator).
    pipeline_seconds: f64,
    /// Readings per second through the pipeline on one core.
    pipeline_readings_per_second: f64,
}

/// Runs the evaluation.
pub(crate) fn evaluate(
    args: &Args,
    pipeline: &PipelineConfig,
    ml: &MlConfig,
) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let dt = TimeDelta::from_std(pipeline.interval)?;
    let faults = if args.clean {
        FaultConfig::none()
    } else {
        let mut f = FaultConfig {
            scale: args.fault_scale,
            ..FaultConfig::default()
        };
        // Feeder outages are rare per feeder-day, bypasses per meter-day; a week of a few
        // feeders needs more to score.
        f.rates.insert(FaultType::FeederOutage, 0.05);
        f.rates.insert(FaultType::Bypass, 0.002);
        f
    };
    faults.validate().map_err(|e| anyhow::anyhow!(e))?;
    let scored = dt
        * (i32::try_from(args.days)?
            * i32::try_from(TimeDelta::days(1).num_seconds() / dt.num_seconds())?);
    let shape = RunShape {
        start: args.start,
        dt,
        horizon: Some(scored),
        seed: args.seed,
        faults: Arc::new(faults),
        buffer: 192,
    };
    let fleet = FleetConfig {
        meters: args.meters,
        meters_per_feeder: args.meters_per_feeder,
        ..FleetConfig::default()
    };
    let site = fleet.site()?;
    let specs = build_fleet(&fleet, &shape).map_err(|e| anyhow::anyhow!(e))?;
    let registry = Arc::new(Registry::new(specs.iter().map(|s| {
        (
            s.id.to_string(),
            MeterInfo {
                class: Some(MeterClass::from(s.class)),
                feeder: Some(s.feeder.clone()),
                rated_current_a: Some(s.rated_current_a),
                exchanged_on: s.exchanged_on,
            },
        )
    })));
    let mut config = pipeline.clone();
    config.idle_clock = std::time::Duration::ZERO;
    let mut processor = Processor::new(config.clone(), registry.clone(), State::default());
    let mut offline = Offline::new(specs, &shape, site);
    let weather = Weather::new(shape.seed);
    // Run past the scored days long enough for every resend request to be made.
    let tail = TimeDelta::from_std(config.resend_after + config.allowed_lateness)? + dt * 4;
    let ticks = (scored + tail).num_seconds() / dt.num_seconds();
    let (mut labels, mut found) = (Vec::new(), Vec::new());
    let mut report = Report {
        meters: args.meters,
        days: args.days,
        meter_days: args.meters as f64 * f64::from(args.days),
        ..Report::default()
    };
    let end = args.start + scored;
    let mut received = Vec::new();
    let mut t = args.start;
    let mut pipeline_time = std::time::Duration::ZERO;
    // Each meter's hourly energy as the pipeline measured it: (revision, Wh or NaN) by hour.
    let mut measured: HashMap<String, BTreeMap<Hour, (u32, f64)>> = HashMap::new();
    for _ in 0..ticks {
        let ctx = meterstack_sim::load::TickContext::new(t, dt, &site, &weather);
        received.clear();
        offline.step_with(&ctx, &mut received, &mut labels);
        let mut out = Outputs::default();
        let records: Vec<Record> = received
            .drain(..)
            .map(|(reading, at)| Record {
                key: reading.meter_id.to_string(),
                value: wire::encode(std::slice::from_ref(&reading)).into(),
                timestamp: at,
                headers: vec![(
                    headers::SOURCE_TOPIC.into(),
                    wire::readings_topic(&reading.meter_id),
                )],
            })
            .collect();
        let timer = std::time::Instant::now();
        for record in &records {
            processor.record(record, &mut out);
            report.readings += 1;
        }
        processor.flush(&mut out);
        pipeline_time += timer.elapsed();
        for (meter, c) in &out.commands {
            if let Command::Resend { from, to } = c.command {
                report.resend_commands += 1;
                report.resent_readings += offline.resend(meter, from, to);
            }
        }
        for a in out
            .alerts
            .iter()
            .filter(|a| a.event == AlertEvent::Opened && a.start < end)
        {
            *report
                .alerts_opened
                .entry(a.kind.name().to_owned())
                .or_default() += 1;
        }
        for a in &out.aggregates {
            if let Aggregate::MeterWindow(w) = a
                && w.window == Width::Hour
            {
                let wh = if w.measured_intervals >= w.expected_intervals {
                    w.energy_wh
                } else {
                    f64::NAN
                };
                let slot = measured
                    .entry(w.meter_id.clone())
                    .or_default()
                    .entry(hour_of(w.start))
                    .or_insert((w.revision, wh));
                if w.revision >= slot.0 {
                    *slot = (w.revision, wh);
                }
            }
        }
        findings(
            ScoredOutputs {
                clean: &out.clean,
                rejected: &out.rejected,
                commands: &out.commands,
                aggregates: &out.aggregates,
                alerts: &out.alerts,
            },
            dt,
            &mut found,
        );
        t += dt;
    }
    let deviations = forecast_deviations(args, ml, &fleet, &registry, &measured)?;
    for a in deviations
        .iter()
        .filter(|a| a.event == AlertEvent::Opened && a.start < end)
    {
        *report
            .alerts_opened
            .entry(a.kind.name().to_owned())
            .or_default() += 1;
    }
    findings(
        ScoredOutputs {
            clean: &[],
            rejected: &[],
            commands: &[],
            aggregates: &[],
            alerts: &deviations,
        },
        dt,
        &mut found,
    );
    let labels: Vec<Label> = labels.into_iter().filter(|l| l.start < end).collect();
    found.retain(|f| f.start < end);
    let found = merge(found, dt);
    report.by_type = score(&labels, &found, dt);
    if args.show_misses {
        report.misses = misses(&labels, &found, dt);
    }
    if args.clean {
        let alerts: usize = report.alerts_opened.values().sum();
        report.false_alerts_per_1000_meter_days = Some(alerts as f64 * 1000.0 / report.meter_days);
        report.flags_on_clean_fleet = Some(found.len());
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.pipeline_seconds = pipeline_time.as_secs_f64();
    report.pipeline_readings_per_second =
        report.readings as f64 / report.pipeline_seconds.max(1e-9);
    Ok(report)
}

/// The `ml` role's forecast-deviation events over the scored days: each meter's series is its
/// simulated history (no faults) followed by the hours the pipeline `measured`; each scored
/// local midnight's forecast gives the band of that day's hours.
fn forecast_deviations(
    args: &Args,
    ml: &MlConfig,
    fleet: &FleetConfig,
    registry: &Registry,
    measured: &HashMap<String, BTreeMap<Hour, (u32, f64)>>,
) -> anyhow::Result<Vec<Alert>> {
    let calendar = Calendar::new(&ml.calendar).map_err(anyhow::Error::msg)?;
    let history_start = args.start - TimeDelta::days(i64::from(args.history_days));
    let shape = RunShape::clean(history_start, args.history_days as usize, args.seed);
    let history = meterstack_sim::offline::hourly_fleet(fleet, &shape, args.history_days as usize)
        .map_err(anyhow::Error::msg)?;
    let series: Vec<Series> = history
        .into_iter()
        .map(|(id, class, values)| {
            let mut s = Series {
                class: Some(MeterClass::from(class)),
                start: hour_of(history_start),
                values,
                meter_id: id,
                temperature: None,
            };
            for (h, (_, wh)) in measured.get(&s.meter_id).into_iter().flatten() {
                s.set(*h, *wh);
            }
            s
        })
        .collect();
    let model: Box<dyn Forecaster> = match args.forecast_model.as_str() {
        "gbm" => {
            let before: Vec<Series> = series
                .iter()
                .map(|s| s.before(hour_of(args.start)))
                .collect();
            Box::new(meterstack_ml::train::fit(&before, args.start, &calendar, ml)?.0)
        }
        _ => Box::new(Baseline(ModelKind::Median7d)),
    };
    let version = model.kind().name();
    let (from, to) = (
        hour_of(args.start),
        hour_of(args.start) + 24 * Hour::from(args.days),
    );
    let midnights = calendar.midnights(from, to + 48);
    let refs: Vec<&Series> = series.iter().collect();
    let mut active: HashMap<&str, Active> = HashMap::new();
    let mut out = Vec::new();
    for day in midnights.windows(2).filter(|d| d[0] < to) {
        let (origin, hours) = (day[0], (day[1] - day[0]) as usize);
        let predicted = model.predict(&refs, origin, hours, &calendar);
        for (s, band) in series.iter().zip(predicted) {
            let who = deviation::Subject {
                meter_id: &s.meter_id,
                feeder: registry.get(&s.meter_id).and_then(|m| m.feeder.as_deref()),
                model_version: version,
                at: start_of(day[1]),
            };
            let found = deviation::check(
                who,
                s,
                origin,
                &band,
                active.get(s.meter_id.as_str()),
                &ml.deviation,
            );
            for a in found {
                match a.event {
                    AlertEvent::Opened => active.insert(&s.meter_id, Active::opened(&a)),
                    AlertEvent::Resolved => active.remove(s.meter_id.as_str()),
                };
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// `TYPE=PRECISION:RECALL`.
fn parse_bar(s: &str) -> Result<(String, f64, f64), String> {
    let bad = || format!("{s:?}: expected TYPE=PRECISION:RECALL, e.g. bypass=0.85:0.6");
    let (kind, bar) = s.split_once('=').ok_or_else(bad)?;
    let (p, r) = bar.split_once(':').ok_or_else(bad)?;
    let (p, r) = (p.parse().map_err(|_| bad())?, r.parse().map_err(|_| bad())?);
    FaultType::from_name(kind).ok_or_else(|| format!("{kind:?}: no such fault type"))?;
    Ok((kind.to_owned(), p, r))
}

/// `meterstack eval`.
pub(crate) fn run(args: &Args, pipeline: &PipelineConfig, ml: &MlConfig) -> anyhow::Result<()> {
    let report = evaluate(args, pipeline, ml)?;
    #[allow(clippy::print_stdout)]
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} meters × {} days ({} readings, {:.1} s; pipeline {:.0} readings/s on one core){}",
            report.meters,
            report.days,
            report.readings,
            report.seconds,
            report.pipeline_readings_per_second,
            if args.clean { ", no faults" } else { "" }
        );
        println!(
            "{:<18} {:>6} {:>8} {:>9} {:>7} {:>6}",
            "type", "labels", "findings", "precision", "recall", "F1"
        );
        for (kind, s) in &report.by_type {
            if s.labels + s.findings == 0 {
                continue;
            }
            println!(
                "{kind:<18} {:>6} {:>8} {:>9.3} {:>7.3} {:>6.3}",
                s.labels, s.findings, s.precision, s.recall, s.f1
            );
        }
        println!("alerts opened: {:?}", report.alerts_opened);
        for m in &report.misses {
            println!("{m}");
        }
        println!(
            "resend commands: {}, readings resent: {}",
            report.resend_commands, report.resent_readings
        );
        if let Some(f) = report.false_alerts_per_1000_meter_days {
            println!(
                "false alerts per 1,000 meter-days: {f:.2}; VEE findings on the clean fleet: {}",
                report.flags_on_clean_fleet.unwrap_or(0)
            );
        }
    }
    if let Some(min) = args.check {
        let mut failures = Vec::new();
        for (kind, s) in report.by_type.iter().filter(|_| !args.clean) {
            if s.labels == 0 {
                failures.push(format!(
                    "{kind}: no labels to score (raise --fault-scale or --days)"
                ));
            } else if let (p, r) = args
                .check_type
                .iter()
                .find(|(k, ..)| k == kind)
                .map_or((min, min), |(_, p, r)| (*p, *r))
                && (s.precision < p || s.recall < r)
            {
                failures.push(format!(
                    "{kind}: precision {:.3}, recall {:.3}",
                    s.precision, s.recall
                ));
            }
        }
        if let Some(f) = report.false_alerts_per_1000_meter_days
            && f > args.max_false_alerts
        {
            failures.push(format!("{f:.2} false alerts per 1,000 meter-days"));
        }
        anyhow::ensure!(failures.is_empty(), "below target: {}", failures.join("; "));
    }
    Ok(())
}
