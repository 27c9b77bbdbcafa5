//! A meter's rules on each reading, after the interval stage: the register steps it flags
//! (rollover, exchange, reset, spike, frozen register) and its condition alerts — spike,
//! frozen register, reverse flow, zero consumption, consumption far from its baseline,
//! voltage sag and swell (on its newest reading only) — and the end of its silence.

use meterstack_core::records::{Alert, AlertType, Rule};
use serde_json::json;

use super::{Alerts, Baseline, Judgement, Subject};
use crate::config::{self, Rules};
use crate::transforms::intervals::{Inserted, Step};

/// One reading as the meter's rules see it.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The meter and its feeder.
    pub who: Subject<'a>,
    /// The reading's time on the grid, µs.
    pub t: i64,
    /// The pipeline clock, µs.
    pub now: i64,
    /// The interval, µs.
    pub dt: i64,
    /// What the interval stage made of it.
    pub inserted: &'a Inserted,
    /// Its import register, Wh.
    pub import_wh: f64,
    /// The register of the reading before it, Wh.
    pub previous_import_wh: Option<f64>,
    /// Reported power, W.
    pub power_w: Option<f64>,
    /// Reported voltage, V, when it passed the range check.
    pub voltage_v: Option<f64>,
    /// Newer than everything the meter sent before.
    pub in_order: bool,
    /// The meter measures import only (export means reverse flow).
    pub import_only: bool,
    /// Rated power: rated current × nominal voltage × phases, W.
    pub rated_w: f64,
    /// A `meter_silent` alert was open before this reading.
    pub was_silent: bool,
}

/// The parts of a meter's state its rules keep.
#[derive(Debug)]
pub struct MeterRulesState<'a> {
    /// Its open alerts.
    pub alerts: &'a mut Alerts,
    /// Its consumption baseline.
    pub baseline: &'a mut Baseline,
    /// Intervals in a row without consumption.
    pub zero_run: &'a mut u32,
    /// Intervals in a row far outside the baseline.
    pub anomaly_run: &'a mut u32,
}

/// Applies the meter's rules to `o`: flags go to `fired` (in the order the rules run), alert
/// events to `out`.
pub fn observe(
    o: &Observed<'_>,
    s: MeterRulesState<'_>,
    rules: &Rules,
    baseline: &config::Baseline,
    fired: &mut Vec<Rule>,
    out: &mut Vec<Alert>,
) {
    let (who, t, now, dt) = (o.who, o.t, o.now, o.dt);
    let ins = o.inserted;
    let interval_h = dt as f64 / 3.6e9;
    let k = ins.intervals_from_prev.max(1);
    let energy = ins.energy_from_prev;
    match ins.step {
        Some(Step::Rollover) => fired.push(Rule::RegisterRollover),
        Some(Step::Exchange) => fired.push(Rule::MeterExchange),
        Some(Step::Reset) => {
            fired.push(Rule::RegisterReset);
            s.alerts.open(
                AlertType::RegisterReset,
                who,
                t,
                now,
                json!({ "previous_import_wh": o.previous_import_wh, "import_wh": o.import_wh }),
                out,
            );
        }
        _ => {}
    }
    let counted = matches!(ins.step, Some(Step::Normal | Step::Rollover));
    // A spike: more energy per interval than the rated current allows.
    let spike_limit = o.rated_w * interval_h * rules.spike_factor;
    let spike = counted && ins.step.is_some() && energy / k as f64 > spike_limit;
    if spike {
        fired.push(Rule::Spike);
    }
    // A frozen register: no movement while power is reported.
    let frozen = counted
        && k == 1
        && energy == 0.0
        && ins.export_from_prev == 0.0
        && o.power_w
            .is_some_and(|p| p.abs() >= rules.frozen_min_power_w);
    if frozen {
        fired.push(Rule::FrozenRegister);
    }

    // Condition alerts follow the meter's newest reading only.
    if o.in_order && ins.step.is_some() {
        s.alerts.set(
            AlertType::ConsumptionSpike,
            spike,
            who,
            t,
            now,
            json!({ "energy_wh": energy, "intervals": k, "limit_wh": spike_limit }),
            out,
        );
        let still_frozen = frozen || (s.alerts.is_open(AlertType::FrozenRegister) && energy == 0.0);
        s.alerts.set(
            AlertType::FrozenRegister,
            still_frozen,
            who,
            t,
            now,
            json!({ "import_wh": o.import_wh, "power_w": o.power_w }),
            out,
        );
        if o.import_only {
            let reverse = ins.export_from_prev > rules.reverse_min_wh * k as f64;
            s.alerts.set(
                AlertType::ReverseFlow,
                reverse,
                who,
                t,
                now,
                json!({ "export_wh": ins.export_from_prev, "intervals": k, "power_w": o.power_w }),
                out,
            );
        }
        let zero =
            energy == 0.0 && ins.export_from_prev == 0.0 && o.power_w.is_none_or(|p| p.abs() < 1.0);
        *s.zero_run = if zero {
            s.zero_run.saturating_add(k as u32)
        } else {
            0
        };
        s.alerts.set(
            AlertType::ZeroConsumption,
            *s.zero_run >= rules.zero_consumption_intervals,
            who,
            t,
            now,
            json!({ "intervals": *s.zero_run }),
            out,
        );
        if k == 1 && counted && !spike {
            let judgement = s.baseline.observe(t - dt, energy, baseline);
            *s.anomaly_run = match judgement {
                Judgement::Outside { .. } => *s.anomaly_run + 1,
                _ => 0,
            };
            let evidence = match judgement {
                Judgement::Outside { mean, band } => {
                    json!({ "energy_wh": energy, "normal_wh": mean, "band_wh": band })
                }
                _ => json!({ "energy_wh": energy }),
            };
            s.alerts.set(
                AlertType::ConsumptionAnomaly,
                *s.anomaly_run >= baseline.sustain_intervals,
                who,
                t,
                now,
                evidence,
                out,
            );
        }
    }
    if o.in_order
        && let Some(v) = o.voltage_v
    {
        let nominal = rules.nominal_voltage_v;
        s.alerts.set(
            AlertType::VoltageSag,
            v < nominal * (1.0 - rules.voltage_tolerance),
            who,
            t,
            now,
            json!({ "voltage_v": v, "nominal_v": nominal }),
            out,
        );
        s.alerts.set(
            AlertType::VoltageSwell,
            v > nominal * (1.0 + rules.voltage_tolerance),
            who,
            t,
            now,
            json!({ "voltage_v": v, "nominal_v": nominal }),
            out,
        );
    }
    if o.was_silent {
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
        s.alerts.resolve(
            AlertType::MeterSilent,
            who,
            end,
            now,
            json!({ "cause": cause }),
            out,
        );
    }
}
