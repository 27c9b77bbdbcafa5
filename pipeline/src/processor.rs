//! The pipeline's state machine: raw records in, clean and rejected readings, window
//! aggregates, alerts and resend commands out. It sequences the stages of
//! [`crate::transforms`] and owns their state ([`crate::state`]).
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
use meterstack_core::records::{Aggregate, AlertType, RejectedReading, Rule};
use meterstack_core::wire::Decoder;

use crate::config::PipelineConfig;
use crate::output::Outputs;
use crate::registry::Registry;
pub use crate::state::State;
use crate::transforms::anomaly::meter::{MeterRulesState, Observed};
use crate::transforms::anomaly::{Subject, meter, silence};
use crate::transforms::completeness;
use crate::transforms::intervals::{SpanRules, Step, resend};
use crate::transforms::vee::{self, Verdict};

/// How often (pipeline time) silence, outages, resends and completeness are evaluated, µs.
const TICK_US: i64 = 60_000_000;

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

    /// One decoded reading through the stages: placement and validation, admission, the
    /// interval stage, windows, the meter's rules, the clean record.
    fn reading(&mut self, r: Reading, received: i64, out: &mut Outputs) {
        let id = r.meter_id.as_str().to_owned();
        let info = self.registry.get(&id).cloned().unwrap_or_default();
        let rules = self.config.rules_for(info.class).clone();
        let (dt, now) = (self.dt, self.state.clock);
        let rated_w = info
            .rated_current_a
            .unwrap_or(rules.default_rated_current_a)
            * rules.nominal_voltage_v
            * f64::from(rules.phases);
        let feeder = info.feeder.clone();
        let mut fired: Vec<Rule> = Vec::new();
        let ms = self.state.meters.entry(id.clone()).or_default();
        let was_silent = ms.alerts.is_open(AlertType::MeterSilent);
        ms.last_received = ms.last_received.max(received);

        // Validation.
        let verdict = vee::validate(
            &r,
            received,
            dt,
            &rules,
            rated_w,
            &ms.track,
            &mut ms.missing,
            self.lateness,
            &mut fired,
        );
        let (t, point) = match verdict {
            Verdict::New { t, point } => (t, point),
            Verdict::Reject { rule, ts, detail } => {
                out.rejected
                    .push(vee::rejected(&r, received, rule, ts, detail));
                return;
            }
            Verdict::Behind { t } => {
                completeness::count_received(&mut self.state.received, feeder.as_deref(), t - dt);
                out.clean.push(vee::clean(&r, t, received, &fired));
                return;
            }
        };

        // Intervals.
        let span_rules = SpanRules {
            dt_us: dt,
            capacity_wh: rules.register_capacity_wh,
            max_interval_wh: rated_w * (dt as f64 / 3.6e9) * 3.0,
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
            let detail = format!(
                "import register {} Wh is below the {neighbour} reading's without a rollover, reset or exchange",
                point.import_wh
            );
            let rejected = vee::rejected(&r, received, Rule::NegativeConsumption, Some(t), detail);
            out.rejected.push(rejected);
            return;
        }
        let newest = ms.track.last_ts();
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
        completeness::count_received(&mut self.state.received, feeder.as_deref(), t - dt);

        // Windows.
        for change in &ins.changes {
            ms.windows.apply(change, dt);
        }
        let voltage = r.voltage_v.filter(|_| !fired.contains(&Rule::Range));
        ms.windows.observe(t, dt, r.power_w, voltage);
        self.dirty.insert(id.clone());

        // The meter's rules, then the gaps to ask for again.
        let observed = Observed {
            who: Subject {
                meter: Some(&id),
                feeder: feeder.as_deref(),
            },
            t,
            now,
            dt,
            inserted: &ins,
            import_wh: point.import_wh,
            previous_import_wh: ms.track.before(t).map(|(_, p)| p.import_wh),
            power_w: r.power_w,
            voltage_v: voltage,
            in_order,
            import_only: info.import_only(),
            rated_w,
            was_silent,
        };
        let state = MeterRulesState {
            alerts: &mut ms.alerts,
            baseline: &mut ms.baseline,
            zero_run: &mut ms.zero_run,
            anomaly_run: &mut ms.anomaly_run,
        };
        meter::observe(
            &observed,
            state,
            &rules,
            &self.config.baseline,
            &mut fired,
            &mut out.alerts,
        );
        resend::remember_gap(&mut ms.missing, &ins, t, dt);
        out.clean.push(vee::clean(&r, t, received, &fired));
    }

    /// Time-driven rules: silent meters and feeder outages, resend requests, completeness.
    fn tick(&mut self, out: &mut Outputs) {
        let (now, dt) = (self.state.clock, self.dt);
        let s = &mut self.state;
        silence::tick(
            &mut s.meters,
            &mut s.feeders,
            &self.registry,
            &self.config,
            now,
            dt,
            &mut out.alerts,
        );
        resend::requests(&mut s.meters, now, self.resend_after, dt, &mut out.commands);
        completeness::close_days(
            &mut s.received,
            &self.registry,
            now,
            dt,
            self.lateness,
            &mut out.aggregates,
        );
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

#[cfg(test)]
mod tests;
