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
use meterstack_core::records::{Aggregate, AlertType, Rule};
use meterstack_core::wire::Decoder;

use crate::config::PipelineConfig;
use crate::output::Outputs;
use crate::registry::Registry;
pub use crate::state::State;
use crate::transforms::anomaly::meter::Observed;
use crate::transforms::anomaly::{Subject, meter, silence};
use crate::transforms::completeness;
use crate::transforms::intervals::{SpanRules, resend};
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
        let meter_id = decoded.meter_id.as_ref().map(ToString::to_string);
        out.rejected
            .extend(decoded.rejections.into_iter().map(|rejection| {
                vee::undecodable(meter_id.clone(), record.timestamp, &record.value, rejection)
            }));
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
        let rules = self.config.rules_for(info.class);
        let (dt, now) = (self.dt, self.state.clock);
        let rated_w = rules.rated_w(info.rated_current_a);
        let feeder = info.feeder.as_deref();
        let mut fired: Vec<Rule> = Vec::new();
        let ms = self.state.meters.entry(id.clone()).or_default();
        let was_silent = ms.alerts.is_open(AlertType::MeterSilent);
        ms.last_received = ms.last_received.max(received);

        let (t, point) = match vee::validate(
            &r,
            received,
            dt,
            rules,
            rated_w,
            &ms.track,
            &mut ms.missing,
            self.lateness,
            &mut fired,
        ) {
            Verdict::New { t, point } => (t, point),
            Verdict::Reject { rule, ts, detail } => {
                out.rejected
                    .push(vee::rejected(&r, received, rule, ts, detail));
                return;
            }
            Verdict::Behind { t } => {
                completeness::count_received(&mut self.state.received, feeder, t - dt);
                out.clean.push(vee::clean(&r, t, received, &fired));
                return;
            }
        };

        let span_rules = SpanRules::new(rules, dt, rated_w, info.exchanged_on, ms.feeder_out);
        let (ins, in_order) = match ms.track.place(t, point, received, &span_rules, &mut fired) {
            Ok(placed) => placed,
            Err(detail) => {
                let rule = Rule::NegativeConsumption;
                out.rejected
                    .push(vee::rejected(&r, received, rule, Some(t), detail));
                return;
            }
        };
        ms.missing.remove(&t);
        ms.feeder_out &= !in_order;
        completeness::count_received(&mut self.state.received, feeder, t - dt);

        for change in &ins.changes {
            ms.windows.apply(change, dt);
        }
        let voltage = r.voltage_v.filter(|_| !fired.contains(&Rule::Range));
        ms.windows.observe(t, dt, r.power_w, voltage);
        self.dirty.insert(id.clone());

        let observed = Observed {
            who: Subject {
                meter: Some(&id),
                feeder,
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
        let baseline = &self.config.baseline;
        meter::observe(
            &observed,
            ms.rules_state(),
            rules,
            baseline,
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
            if let Some(ms) = self.state.meters.get_mut(&id) {
                ms.settle(&id, self.lateness, self.resend_after, self.dt, &mut windows);
            }
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
