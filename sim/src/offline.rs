//! Driving meters without a network: what `meterstack backfill` writes to the lake, and what
//! the simulator's own tests check labels against.
//!
//! A sample handed over at tick `t` counts as received `RECEIVE_LATENCY` after `t`; samples a
//! meter holds while its link is down (or that it sends late on purpose) are received at the
//! tick that releases them, exactly as the MQTT driver sends them.

use chrono::{DateTime, TimeDelta, Utc};
use meterstack_core::Reading;

use crate::faults::Label;
use crate::load::{Site, TickContext, Weather};
use crate::meter::{Meter, MeterSpec, RunShape};

/// Delay between a meter handing over a reading and the platform receiving it.
pub const RECEIVE_LATENCY: TimeDelta = TimeDelta::milliseconds(200);

/// A reading and when it was received.
pub type Received = (Reading, DateTime<Utc>);

/// A set of meters stepped tick by tick.
#[derive(Debug)]
pub struct Offline {
    meters: Vec<Meter>,
    site: Site,
    weather: Weather,
    dt: TimeDelta,
}

impl Offline {
    /// Meters `specs` in a run of `shape`, at `site`.
    pub fn new(specs: Vec<MeterSpec>, shape: &RunShape, site: Site) -> Self {
        Self {
            meters: specs
                .into_iter()
                .map(|s| Meter::new(s, shape.clone()))
                .collect(),
            weather: Weather::new(shape.seed),
            site,
            dt: shape.dt,
        }
    }

    /// Steps every meter through the tick at `t`, appending what was received to `out`
    /// (meter by meter) and what faults began to `labels`.
    pub fn step(&mut self, t: DateTime<Utc>, out: &mut Vec<Received>, labels: &mut Vec<Label>) {
        let ctx = TickContext::new(t, self.dt, &self.site, &self.weather);
        self.step_with(&ctx, out, labels);
    }

    /// [`Offline::step`] with a context computed by the caller (shared across chunks).
    pub fn step_with(
        &mut self,
        ctx: &TickContext,
        out: &mut Vec<Received>,
        labels: &mut Vec<Label>,
    ) {
        let received = ctx.t + RECEIVE_LATENCY;
        for meter in &mut self.meters {
            let tick = meter.tick(ctx);
            labels.extend(tick.labels);
            out.extend(
                tick.due
                    .iter()
                    .map(|s| (s.reading(&meter.spec.id), received)),
            );
        }
    }

    /// Runs `intervals` ticks from `shape.start` and hands over what is left at the end:
    /// everything received, and every label.
    pub fn run(
        specs: Vec<MeterSpec>,
        shape: &RunShape,
        site: Site,
        intervals: u64,
    ) -> (Vec<Received>, Vec<Label>) {
        let mut offline = Self::new(specs, shape, site);
        let (mut out, mut labels) = (Vec::new(), Vec::new());
        let mut t = shape.start;
        for _ in 0..intervals {
            offline.step(t, &mut out, &mut labels);
            t += shape.dt;
        }
        offline.finish(t, &mut out);
        (out, labels)
    }

    /// Passes a resend command to meter `meter_id`: it queues what it still holds of
    /// `[from, to)` for its next tick. Returns how many readings it found.
    pub fn resend(&mut self, meter_id: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
        self.meters
            .iter_mut()
            .find(|m| m.spec.id.as_str() == meter_id)
            .map_or(0, |m| m.resend(from, to))
    }

    /// Hands over whatever the meters still hold at the end of the run, received at `t`.
    pub fn finish(&mut self, t: DateTime<Utc>, out: &mut Vec<Received>) {
        for meter in &mut self.meters {
            let id = meter.spec.id.clone();
            out.extend(meter.drain().iter().map(|s| (s.reading(&id), t)));
        }
    }
}
