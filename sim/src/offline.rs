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

/// Each meter's imported energy per hour (Wh) over `hours` hours from `shape.start` (which
/// must be on the hour): the register differences of its on-the-hour readings, `NaN` for an
/// hour whose readings were not received by its end. What a forecast is scored against, without
/// going through the lake.
pub fn hourly_energy(
    specs: Vec<MeterSpec>,
    shape: &RunShape,
    site: Site,
    hours: usize,
) -> Vec<Vec<f64>> {
    let n = specs.len();
    let index: std::collections::HashMap<String, usize> = specs
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.to_string(), i))
        .collect();
    let mut offline = Offline::new(specs, shape, site);
    let mut energy = vec![vec![f64::NAN; hours]; n];
    // The newest on-the-hour register of each meter and its hour.
    let mut last: Vec<Option<(i64, f64)>> = vec![None; n];
    let start_h = shape.start.timestamp().div_euclid(3600);
    let (mut out, mut labels) = (Vec::new(), Vec::new());
    let mut t = shape.start;
    while (t.timestamp().div_euclid(3600) - start_h) < hours as i64 + 1 {
        offline.step(t, &mut out, &mut labels);
        labels.clear();
        for (r, _) in out.drain(..) {
            let secs = r.ts.timestamp();
            if secs.rem_euclid(3600) != 0 {
                continue;
            }
            let Some(&i) = index.get(r.meter_id.as_str()) else {
                continue;
            };
            let h = secs / 3600;
            if let Some((prev_h, prev)) = last[i]
                && prev_h == h - 1
                && let Some(slot) = usize::try_from(prev_h - start_h)
                    .ok()
                    .and_then(|k| energy[i].get_mut(k))
            {
                *slot = r.import_wh - prev;
            }
            last[i] = Some((h, r.import_wh));
        }
        t += shape.dt;
    }
    energy
}

/// The fleet's outdoor temperature, °C, for each of `hours` hours from `shape.start` (on the
/// hour): the mean of the hour's quarter-hour values, as a weather service reports an hour.
/// What the loads of [`hourly_fleet`] responded to (heating and cooling).
pub fn hourly_temperature(
    config: &crate::FleetConfig,
    shape: &RunShape,
    hours: usize,
) -> Result<Vec<f64>, String> {
    let site = config.site().map_err(|e| e.to_string())?;
    let weather = Weather::new(shape.seed);
    let quarter = TimeDelta::minutes(15);
    Ok((0..hours as i32)
        .map(|h| {
            let hour = shape.start + TimeDelta::hours(i64::from(h));
            (1..=4)
                .map(|k| {
                    TickContext::new(hour + quarter * k, quarter, &site, &weather).temperature_c
                })
                .sum::<f64>()
                / 4.0
        })
        .collect())
}

/// [`hourly_energy`] of the fleet `config` builds in a run of `shape` over `days` days, on
/// every core: each meter's id, class and hourly energy.
pub fn hourly_fleet(
    config: &crate::FleetConfig,
    shape: &RunShape,
    days: usize,
) -> Result<Vec<(String, crate::meter::Class, Vec<f64>)>, String> {
    let site = config.site().map_err(|e| e.to_string())?;
    let specs = crate::build_fleet(config, shape)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = specs.len().div_ceil(threads).max(1);
    let handles: Vec<_> = specs
        .chunks(chunk)
        .map(|c| {
            let (c, shape) = (c.to_vec(), shape.clone());
            std::thread::spawn(move || {
                let meta: Vec<_> = c.iter().map(|s| (s.id.to_string(), s.class)).collect();
                let energy = hourly_energy(c, &shape, site, days * 24);
                meta.into_iter()
                    .zip(energy)
                    .map(|((id, class), e)| (id, class, e))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut out = Vec::with_capacity(specs.len());
    for h in handles {
        out.extend(
            h.join()
                .map_err(|_| "a simulator thread panicked".to_owned())?,
        );
    }
    Ok(out)
}
