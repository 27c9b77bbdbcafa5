//! The pipeline's state machine: raw records in, clean and rejected readings, window
//! aggregates, alerts and resend commands out.
//!
//! Time is the records' own: the pipeline clock is the newest receive time seen (in a live
//! process it also follows the wall clock when the bus is idle), so replaying the same records
//! yields the same outputs, which is what makes checkpoints, the golden replay and
//! `meterstack eval` exact.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use meterstack_core::Reading;
use meterstack_core::bus::{Record, headers};
use meterstack_core::metrics as m;
use meterstack_core::wire::Decoder;
use meterstack_core::wire::command::{Command, CommandMessage};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::anomaly::{Alerts, Baseline, Judgement, Subject};
use crate::config::{PipelineConfig, Rules};
use crate::intervals::{Point, SpanRules, Step, Track};
use crate::output::{
    Aggregate, AlertType, CleanReading, FeederCompleteness, Outputs, RejectedReading, Rule,
};
use crate::registry::{MeterInfo, Registry};
use crate::vee::{self, Placement};
use crate::windows::Windows;

/// How often (pipeline time) silence, outages, resends and completeness are evaluated, µs.
const TICK_US: i64 = 60_000_000;

fn ts(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// One meter's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct MeterState {
    track: Track,
    windows: Windows,
    alerts: Alerts,
    baseline: Baseline,
    /// Receive time of its newest record, µs.
    last_received: i64,
    /// Missing interval ends still awaited, and whether a resend was requested.
    missing: BTreeMap<i64, bool>,
    zero_run: u32,
    anomaly_run: u32,
    /// Its feeder was out while it was silent.
    feeder_out: bool,
}

/// A feeder's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct FeederState {
    alerts: Alerts,
    /// Meters named by the open outage alert.
    out: BTreeSet<String>,
}

/// Everything the pipeline knows, as checkpointed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Per bus partition of `readings.raw`, the offset of the first record not yet reflected.
    pub offsets: BTreeMap<u32, u64>,
    clock: i64,
    next_tick: i64,
    meters: BTreeMap<String, MeterState>,
    feeders: BTreeMap<String, FeederState>,
    /// Intervals received per feeder and UTC day (start µs).
    received: BTreeMap<String, BTreeMap<i64, u64>>,
}

impl State {
    /// The pipeline clock.
    pub fn clock(&self) -> DateTime<Utc> {
        ts(self.clock)
    }

    /// Meters with state.
    pub fn meters(&self) -> usize {
        self.meters.len()
    }
}

/// The processor: configuration, registry and state.
#[derive(Debug)]
pub struct Processor {
    config: PipelineConfig,
    registry: Arc<Registry>,
    decoder: Decoder,
    dt: i64,
    lateness: i64,
    resend_after: i64,
    state: State,
    dirty: BTreeSet<String>,
}

impl Processor {
    /// A processor starting from `state` (`State::default()` for a fresh start).
    pub fn new(config: PipelineConfig, registry: Arc<Registry>, state: State) -> Self {
        Self {
            decoder: Decoder::new(config.decode.clone()),
            dt: config.interval.as_micros() as i64,
            lateness: config.allowed_lateness.as_micros() as i64,
            resend_after: config.resend_after.as_micros() as i64,
            config,
            registry,
            state,
            dirty: BTreeSet::new(),
        }
    }

    /// The state, for a checkpoint.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Mutable offsets, for the runner.
    pub fn offsets_mut(&mut self) -> &mut BTreeMap<u32, u64> {
        &mut self.state.offsets
    }

    /// Replaces the registry (refreshed from the store).
    pub fn set_registry(&mut self, registry: Arc<Registry>) {
        self.registry = registry;
    }

    /// Processes one `readings.raw` record.
    pub fn record(&mut self, record: &Record, out: &mut Outputs) {
        let received = record.timestamp.timestamp_micros();
        self.advance(received, out);
        let topic = record.header(headers::SOURCE_TOPIC).unwrap_or_default();
        let decoded = self.decoder.decode(topic, &record.value, record.timestamp);
        for rejection in decoded.rejections {
            metrics::counter!(m::PIPELINE_READINGS, "quality" => "rejected", "rule" => Rule::Schema.name()).increment(1);
            let reading = rejection
                .index
                .is_some()
                .then(|| {
                    String::from_utf8_lossy(&record.value)
                        .chars()
                        .take(1024)
                        .collect::<String>()
                })
                .map(serde_json::Value::String);
            out.rejected.push(RejectedReading {
                meter_id: decoded.meter_id.as_ref().map(ToString::to_string),
                ts: None,
                received_at: record.timestamp,
                rule: Rule::Schema,
                reason: Some(rejection.reason.code().to_owned()),
                detail: rejection.detail,
                reading,
            });
        }
        for reading in decoded.readings {
            self.reading(reading, received, out);
        }
    }

    /// Processes one decoded reading of a batch replay (the lake's ETL), fed in time order:
    /// the clock follows the readings' own times, and `received` is when the reading arrived
    /// (for clock-skew placement and backfill).
    pub fn replay(&mut self, reading: Reading, received: DateTime<Utc>, out: &mut Outputs) {
        self.advance(reading.ts.timestamp_micros(), out);
        self.reading(reading, received.timestamp_micros(), out);
    }

    /// Emits every window that changed, complete or not (the end of a batch replay: the
    /// windows of the last, partial day are what is known so far).
    pub fn close(&mut self, out: &mut Outputs) {
        self.flush(out);
        let mut windows = Vec::new();
        for (id, ms) in &mut self.state.meters {
            // Far past every window's end, without dropping any.
            ms.windows
                .flush(id, i64::MAX / 4, i64::MIN / 4, self.dt, &mut windows);
        }
        out.aggregates
            .extend(windows.into_iter().map(Aggregate::MeterWindow));
    }

    /// Moves the pipeline clock to `now` (µs) if that is later, and evaluates time-driven
    /// rules when a tick has passed.
    pub fn advance(&mut self, now: i64, out: &mut Outputs) {
        if now <= self.state.clock {
            return;
        }
        self.state.clock = now;
        if now >= self.state.next_tick {
            self.tick(out);
            self.state.next_tick = now - now.rem_euclid(TICK_US) + TICK_US;
        }
    }

    fn rules(&self, info: &MeterInfo) -> &Rules {
        self.config.rules_for(info.class)
    }

    fn reading(&mut self, r: Reading, received: i64, out: &mut Outputs) {
        let id = r.meter_id.as_str().to_owned();
        let info = self.registry.get(&id).cloned().unwrap_or_default();
        let rules = self.rules(&info).clone();
        let (dt, lateness, now) = (self.dt, self.lateness, self.state.clock);
        let rated_w = info
            .rated_current_a
            .unwrap_or(rules.default_rated_current_a)
            * rules.nominal_voltage_v
            * f64::from(rules.phases);
        let interval_h = dt as f64 / 3.6e9;
        let feeder = info.feeder.clone();
        let who = Subject {
            meter: Some(&id),
            feeder: feeder.as_deref(),
        };
        let mut fired: Vec<Rule> = Vec::new();
        let reject = |out: &mut Outputs, rule: Rule, ts_us: Option<i64>, detail: String| {
            metrics::counter!(m::PIPELINE_READINGS, "quality" => "rejected", "rule" => rule.name())
                .increment(1);
            out.rejected.push(RejectedReading {
                meter_id: Some(r.meter_id.to_string()),
                ts: ts_us.map(ts),
                received_at: ts(received),
                rule,
                reason: None,
                detail,
                reading: serde_json::to_value(&r).ok(),
            });
        };

        let ms = self.state.meters.entry(id.clone()).or_default();
        let was_silent = ms.alerts.is_open(AlertType::MeterSilent);
        ms.last_received = ms.last_received.max(received);

        // Where it belongs on the grid.
        let reported = r.ts.timestamp_micros();
        let t = match vee::place(reported, received, dt, &rules) {
            Placement::OnGrid(t) => t,
            Placement::Corrected(t) => {
                fired.push(Rule::ClockSkew);
                t
            }
            Placement::Unplaceable => {
                reject(
                    out,
                    Rule::ClockSkew,
                    Some(reported),
                    format!(
                        "timestamp {} is off the {}-minute grid and its arrival at {} does not tell the true time",
                        r.ts,
                        dt / 60_000_000,
                        ts(received)
                    ),
                );
                return;
            }
        };
        if !vee::in_range(r.voltage_v, r.power_w, rated_w, &rules) {
            fired.push(Rule::Range);
        }
        let point = Point {
            import_wh: r.import_wh,
            export_wh: r.export_wh.unwrap_or(0.0),
            power_w: r.power_w,
        };

        // Duplicates.
        if let Some(held) = ms.track.point(t) {
            if held.import_wh == point.import_wh {
                reject(
                    out,
                    Rule::Duplicate,
                    Some(t),
                    "the same reading arrived again".to_owned(),
                );
            } else {
                // Two different registers for one time: the meter's clock is off.
                reject(
                    out,
                    Rule::ClockSkew,
                    Some(t),
                    format!(
                        "a different reading for {}, already measured (import {} Wh, held {} Wh)",
                        ts(t),
                        point.import_wh,
                        held.import_wh
                    ),
                );
            }
            return;
        }

        // Late: behind what the windows still accept.
        let newest = ms.track.last_ts();
        let anchor = ms.track.first_ts();
        if anchor.is_some_and(|a| t <= a) || newest.is_some_and(|n| t < n - lateness) {
            let rule = match ms.missing.remove(&t) {
                Some(true) => {
                    metrics::counter!(m::PIPELINE_RESEND_RECOVERED).increment(1);
                    Rule::Resent
                }
                _ => Rule::Late,
            };
            fired.push(rule);
            count_received(&mut self.state.received, feeder.as_deref(), t - dt);
            emit_clean(out, &r, t, reported, received, &fired);
            return;
        }

        let span_rules = SpanRules {
            dt_us: dt,
            capacity_wh: rules.register_capacity_wh,
            max_interval_wh: rated_w * interval_h * 3.0,
            reset_max_wh: rules.reset_max_wh,
            exchanged_on: info.exchanged_on,
            outage_min_missing: rules.outage_min_missing,
            outage_max_share: rules.outage_max_share,
            feeder_out: ms.feeder_out,
        };
        let (before, after) = ms.track.check(t, &point, &span_rules);
        if before == Some(Step::Negative) || after == Some(Step::Negative) {
            let neighbour = if before == Some(Step::Negative) {
                "previous"
            } else {
                "next"
            };
            reject(
                out,
                Rule::NegativeConsumption,
                Some(t),
                format!(
                    "import register {} Wh is below the {neighbour} reading's without a rollover, reset or exchange",
                    point.import_wh
                ),
            );
            return;
        }

        let in_order = newest.is_none_or(|n| t > n);
        if !in_order {
            fired.push(Rule::OutOfOrder);
        } else if newest.is_some() && received - t >= 2 * dt {
            fired.push(Rule::Backfill);
        }
        let ins = ms.track.insert(t, point, &span_rules);
        ms.missing.remove(&t);
        if ms.feeder_out && in_order {
            ms.feeder_out = false;
        }
        count_received(&mut self.state.received, feeder.as_deref(), t - dt);
        for change in &ins.changes {
            ms.windows.apply(change, dt);
        }
        let voltage = r.voltage_v.filter(|_| !fired.contains(&Rule::Range));
        ms.windows.observe(t, dt, r.power_w, voltage);
        self.dirty.insert(id.clone());

        let k = ins.intervals_from_prev.max(1);
        let energy = ins.energy_from_prev;
        match ins.step {
            Some(Step::Rollover) => fired.push(Rule::RegisterRollover),
            Some(Step::Exchange) => fired.push(Rule::MeterExchange),
            Some(Step::Reset) => {
                fired.push(Rule::RegisterReset);
                let prev = ms.track.before(t).map(|(_, p)| p.import_wh);
                ms.alerts.open(
                    AlertType::RegisterReset,
                    who,
                    t,
                    now,
                    json!({ "previous_import_wh": prev, "import_wh": point.import_wh }),
                    &mut out.alerts,
                );
            }
            _ => {}
        }
        let counted = matches!(ins.step, Some(Step::Normal | Step::Rollover));
        // A spike: more energy per interval than the rated current allows.
        let spike_limit = rated_w * interval_h * rules.spike_factor;
        let spike = counted && ins.step.is_some() && energy / k as f64 > spike_limit;
        if spike {
            fired.push(Rule::Spike);
        }
        // A frozen register: no movement while power is reported.
        let frozen = counted
            && k == 1
            && energy == 0.0
            && ins.export_from_prev == 0.0
            && r.power_w
                .is_some_and(|p| p.abs() >= rules.frozen_min_power_w);
        if frozen {
            fired.push(Rule::FrozenRegister);
        }
        if let Some(Rule::Gap) = ins.hole {
            let prev = t - ins.intervals_from_prev * dt;
            for missing in (1..ins.intervals_from_prev).map(|i| prev + i * dt) {
                ms.missing.entry(missing).or_insert(false);
            }
        }

        // Condition alerts follow the meter's newest reading only.
        if in_order && ins.step.is_some() {
            ms.alerts.set(
                AlertType::ConsumptionSpike,
                spike,
                who,
                t,
                now,
                json!({ "energy_wh": energy, "intervals": k, "limit_wh": spike_limit }),
                &mut out.alerts,
            );
            ms.alerts.set(
                AlertType::FrozenRegister,
                frozen || (ms.alerts.is_open(AlertType::FrozenRegister) && energy == 0.0),
                who,
                t,
                now,
                json!({ "import_wh": point.import_wh, "power_w": r.power_w }),
                &mut out.alerts,
            );
            if info.import_only() {
                let reverse = ins.export_from_prev > rules.reverse_min_wh * k as f64;
                ms.alerts.set(AlertType::ReverseFlow, reverse, who, t, now,
                    json!({ "export_wh": ins.export_from_prev, "intervals": k, "power_w": r.power_w }), &mut out.alerts);
            }
            let zero = energy == 0.0
                && ins.export_from_prev == 0.0
                && r.power_w.is_none_or(|p| p.abs() < 1.0);
            ms.zero_run = if zero {
                ms.zero_run.saturating_add(k as u32)
            } else {
                0
            };
            ms.alerts.set(
                AlertType::ZeroConsumption,
                ms.zero_run >= rules.zero_consumption_intervals,
                who,
                t,
                now,
                json!({ "intervals": ms.zero_run }),
                &mut out.alerts,
            );
            if k == 1 && counted && !spike {
                let judgement = ms.baseline.observe(t - dt, energy, &self.config.baseline);
                ms.anomaly_run = match judgement {
                    Judgement::Outside { .. } => ms.anomaly_run + 1,
                    _ => 0,
                };
                let evidence = match judgement {
                    Judgement::Outside { mean, band } => {
                        json!({ "energy_wh": energy, "normal_wh": mean, "band_wh": band })
                    }
                    _ => json!({ "energy_wh": energy }),
                };
                ms.alerts.set(
                    AlertType::ConsumptionAnomaly,
                    ms.anomaly_run >= self.config.baseline.sustain_intervals,
                    who,
                    t,
                    now,
                    evidence,
                    &mut out.alerts,
                );
            }
        }
        if in_order && let Some(v) = voltage {
            let nominal = rules.nominal_voltage_v;
            ms.alerts.set(
                AlertType::VoltageSag,
                v < nominal * (1.0 - rules.voltage_tolerance),
                who,
                t,
                now,
                json!({ "voltage_v": v, "nominal_v": nominal }),
                &mut out.alerts,
            );
            ms.alerts.set(
                AlertType::VoltageSwell,
                v > nominal * (1.0 + rules.voltage_tolerance),
                who,
                t,
                now,
                json!({ "voltage_v": v, "nominal_v": nominal }),
                &mut out.alerts,
            );
        }
        if was_silent {
            let cause = if fired.contains(&Rule::Backfill) {
                "connection"
            } else {
                match ins.hole {
                    Some(Rule::Outage) => "no_supply",
                    Some(Rule::Gap) => "gap",
                    _ => "unknown",
                }
            };
            let end = if cause == "connection" { t } else { t - dt };
            ms.alerts.resolve(
                AlertType::MeterSilent,
                who,
                end,
                now,
                json!({ "cause": cause }),
                &mut out.alerts,
            );
        }
        emit_clean(out, &r, t, reported, received, &fired);
    }

    /// Time-driven rules: silent meters, feeder outages, resend requests, completeness.
    fn tick(&mut self, out: &mut Outputs) {
        let now = self.state.clock;
        let dt = self.dt;
        // Silent meters, grouped by feeder.
        let mut silent_by_feeder: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut silent_alone: Vec<String> = Vec::new();
        for (id, ms) in &self.state.meters {
            let info = self.registry.get(id);
            let rules = self.config.rules_for(info.and_then(|i| i.class));
            let limit = i64::from(rules.silent_intervals) * dt + dt / 2;
            if now - ms.last_received <= limit || ms.feeder_out {
                continue;
            }
            match info.and_then(|i| i.feeder.clone()) {
                Some(f) => silent_by_feeder.entry(f).or_default().push(id.clone()),
                None => silent_alone.push(id.clone()),
            }
        }
        // Feeders: open an outage when enough meters are silent together; close it when most
        // of its meters are back.
        let fo = &self.config.feeder_outage;
        let feeder_names: BTreeSet<String> = self
            .state
            .feeders
            .keys()
            .cloned()
            .chain(silent_by_feeder.keys().cloned())
            .collect();
        for feeder in feeder_names {
            let silent = silent_by_feeder.remove(&feeder).unwrap_or_default();
            let size = self.registry.feeder_size(&feeder).max(1);
            let fs = self.state.feeders.entry(feeder.clone()).or_default();
            let who = Subject {
                meter: None,
                feeder: Some(&feeder),
            };
            let enough =
                silent.len() >= fo.min_meters && silent.len() as f64 >= fo.min_share * size as f64;
            if !fs.alerts.is_open(AlertType::FeederOutage) && enough {
                let start = silent
                    .iter()
                    .filter_map(|id| self.state.meters.get(id)?.track.last_ts())
                    .min()
                    .map_or(now, |t| t + dt);
                fs.alerts.open(
                    AlertType::FeederOutage,
                    who,
                    start,
                    now,
                    json!({ "meters": silent, "feeder_meters": size }),
                    &mut out.alerts,
                );
                for id in &silent {
                    if let Some(ms) = self.state.meters.get_mut(id) {
                        ms.feeder_out = true;
                        let mw = Subject {
                            meter: Some(id),
                            feeder: Some(&feeder),
                        };
                        ms.alerts.resolve(
                            AlertType::MeterSilent,
                            mw,
                            now,
                            now,
                            json!({ "cause": "feeder_outage" }),
                            &mut out.alerts,
                        );
                    }
                }
                fs.out = silent.into_iter().collect();
                continue;
            }
            if fs.alerts.is_open(AlertType::FeederOutage) {
                let still_out = fs
                    .out
                    .iter()
                    .filter(|id| self.state.meters.get(*id).is_some_and(|ms| ms.feeder_out))
                    .count();
                if (still_out as f64) < fo.min_share * fs.out.len() as f64 {
                    let restored = fs.out.len() - still_out;
                    fs.alerts.resolve(
                        AlertType::FeederOutage,
                        who,
                        now,
                        now,
                        json!({ "meters": fs.out, "restored": restored }),
                        &mut out.alerts,
                    );
                    fs.out.clear();
                }
            }
            if !enough {
                silent_alone.extend(silent);
            }
        }
        for id in silent_alone {
            let Some(ms) = self.state.meters.get_mut(&id) else {
                continue;
            };
            let feeder = self.registry.get(&id).and_then(|i| i.feeder.clone());
            let since = ms.track.last_ts().map_or(ms.last_received, |t| t + dt);
            let who = Subject {
                meter: Some(&id),
                feeder: feeder.as_deref(),
            };
            ms.alerts.open(
                AlertType::MeterSilent,
                who,
                since,
                now,
                json!({ "last_received": ts(ms.last_received) }),
                &mut out.alerts,
            );
        }

        // Resend requests for gaps older than `resend_after`; forget requests twice as old.
        let due = now - self.resend_after;
        for (id, ms) in &mut self.state.meters {
            ms.missing
                .retain(|t, requested| !(*requested && *t < due - self.resend_after));
            let wanted: Vec<i64> = ms
                .missing
                .iter_mut()
                .filter(|(t, requested)| **t <= due && !**requested)
                .map(|(t, requested)| {
                    *requested = true;
                    *t
                })
                .collect();
            for run in runs(&wanted, dt) {
                let (from, to) = (run[0], run[run.len() - 1] + dt);
                metrics::counter!(m::PIPELINE_RESEND_REQUESTED).increment(run.len() as u64);
                out.commands.push((
                    id.clone(),
                    CommandMessage {
                        command_id: format!("resend-{id}-{from}"),
                        issued_at: ts(now),
                        command: Command::Resend {
                            from: ts(from),
                            to: ts(to),
                        },
                    },
                ));
            }
        }

        // Completeness of days that closed (plus the allowed lateness).
        let day = 86_400_000_000_i64;
        let intervals_per_day = (day / dt) as u64;
        for (feeder, days) in &mut self.state.received {
            let closed: Vec<i64> = days
                .keys()
                .copied()
                .filter(|d| d + day + self.lateness <= now)
                .collect();
            for d in closed {
                let received = days.remove(&d).unwrap_or(0);
                let expected = self.registry.feeder_size(feeder) as u64 * intervals_per_day;
                let ratio = if expected == 0 {
                    0.0
                } else {
                    received as f64 / expected as f64
                };
                metrics::gauge!(m::PIPELINE_COMPLETENESS, "feeder" => feeder.clone()).set(ratio);
                out.aggregates
                    .push(Aggregate::FeederCompleteness(FeederCompleteness {
                        feeder: feeder.clone(),
                        day: ts(d).date_naive(),
                        expected_intervals: expected,
                        received_intervals: received,
                        completeness: ratio,
                    }));
            }
        }
    }

    /// Emits the windows that changed and finalizes what fell out of the allowed lateness.
    pub fn flush(&mut self, out: &mut Outputs) {
        let mut windows = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            let Some(ms) = self.state.meters.get_mut(&id) else {
                continue;
            };
            let Some(newest) = ms.track.last_ts() else {
                continue;
            };
            ms.track.prune(newest - self.lateness);
            let anchor = ms.track.first_ts().unwrap_or(newest);
            ms.missing
                .retain(|t, requested| *requested || *t > anchor - self.resend_after);
            ms.windows.flush(&id, newest, anchor, self.dt, &mut windows);
        }
        for w in windows {
            let version = if w.revision == 0 { "first" } else { "restated" };
            metrics::counter!(m::PIPELINE_AGGREGATES, "window" => w.window.name(), "version" => version)
                .increment(1);
            out.aggregates.push(Aggregate::MeterWindow(w));
        }
    }
}

/// Counts an interval starting at `start` as received for `feeder`'s completeness.
fn count_received(
    received: &mut BTreeMap<String, BTreeMap<i64, u64>>,
    feeder: Option<&str>,
    start: i64,
) {
    if let Some(f) = feeder {
        let day = start.div_euclid(86_400_000_000) * 86_400_000_000;
        *received
            .entry(f.to_owned())
            .or_default()
            .entry(day)
            .or_default() += 1;
    }
}

/// Splits sorted times into runs of consecutive grid points.
fn runs(times: &[i64], dt: i64) -> Vec<&[i64]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=times.len() {
        if i == times.len() || times[i] != times[i - 1] + dt {
            if start < i {
                out.push(&times[start..i]);
            }
            start = i;
        }
    }
    out
}

fn emit_clean(
    out: &mut Outputs,
    r: &Reading,
    t: i64,
    reported: i64,
    received: i64,
    fired: &[Rule],
) {
    let (quality, rule) = vee::flag(fired);
    let also = fired.iter().copied().filter(|r| Some(*r) != rule).collect();
    metrics::counter!(m::PIPELINE_READINGS, "quality" => quality.name(), "rule" => rule.map_or("none", Rule::name)).increment(1);
    out.clean.push(CleanReading {
        meter_id: r.meter_id.to_string(),
        ts: ts(t),
        reported_ts: (reported != t).then(|| ts(reported)),
        import_wh: r.import_wh,
        export_wh: r.export_wh,
        power_w: r.power_w,
        voltage_v: r.voltage_v,
        current_a: r.current_a,
        seq: r.seq,
        received_at: ts(received),
        quality,
        rule,
        also,
    });
}

#[cfg(test)]
mod tests;
