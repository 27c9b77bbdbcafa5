//! The fleet and one meter's behaviour: what it measures each interval, the faults it
//! suffers, what it keeps in its local buffer, and what it hands to its connection.
//!
//! A [`Meter`] knows nothing about MQTT: each [`Meter::tick`] returns the samples due for
//! sending and whether the meter should be connected; the MQTT driver ([`crate::run`]) and
//! the lake backfill both drive it the same way.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use meterstack_core::{MeterId, Reading};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::faults::{self, FaultConfig, FaultType, Label, Planned};
use crate::household::Household;
use crate::load::{Profile, TickContext};

mod fleet;

pub use fleet::{Class, FleetConfig, MeterSpec, RunShape, build_fleet, registry_csv};

/// Nominal voltage, V.
pub const NOMINAL_V: f64 = 230.0;

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// One reading as the meter stores it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Timestamp as the meter's clock says, µs since the epoch.
    pub ts_us: i64,
    /// Import register, Wh.
    pub import_wh: f64,
    /// Export register, Wh.
    pub export_wh: f64,
    /// Active power, W (negative: export).
    pub power_w: f32,
    /// Voltage, V.
    pub voltage_v: f32,
    /// Current, A.
    pub current_a: f32,
    /// The meter's sequence number.
    pub seq: u64,
}

impl Sample {
    /// The reading in meterstack's model.
    pub fn reading(&self, id: &MeterId) -> Reading {
        Reading {
            meter_id: id.clone(),
            ts: DateTime::from_timestamp_micros(self.ts_us).unwrap_or_default(),
            import_wh: self.import_wh,
            export_wh: Some(self.export_wh),
            power_w: Some(f64::from(self.power_w)),
            voltage_v: Some(f64::from(self.voltage_v)),
            current_a: Some(f64::from(self.current_a)),
            seq: Some(self.seq),
        }
    }
}

/// What one tick hands to the meter's connection.
#[derive(Debug, Default)]
pub struct Tick {
    /// Samples due for sending now, oldest first.
    pub due: Vec<Sample>,
    /// Whether the meter should be connected (powered and its link up).
    pub online: bool,
    /// Faults that began at this tick.
    pub labels: Vec<Label>,
}

/// One simulated meter.
#[derive(Debug)]
pub struct Meter {
    /// What it is.
    pub spec: MeterSpec,
    shape: RunShape,
    load_rng: StdRng,
    fault_rng: StdRng,
    /// The home behind a household or prosumer meter.
    household: Option<Household>,
    noise_x: f64,
    import_wh: f64,
    export_wh: f64,
    seq: u64,
    plan: VecDeque<Planned>,
    /// Load faults ([`FaultType::of_the_load`]) not yet over, by start.
    load_plan: Vec<Planned>,
    planned_through: DateTime<Utc>,
    feeder_plan: (i64, Vec<Planned>),
    outbox: BTreeMap<(i64, u64), Sample>,
    order: u64,
    buffer: VecDeque<Sample>,
}

impl Meter {
    /// The meter `spec` in a run of `shape`.
    pub fn new(spec: MeterSpec, shape: RunShape) -> Self {
        let seed = shape.seed ^ spec.n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let day0 = shape.start.timestamp().div_euclid(86_400) * 86_400;
        Self {
            load_rng: StdRng::seed_from_u64(seed),
            fault_rng: StdRng::seed_from_u64(seed ^ 0xFA17),
            household: (spec.class != Class::Commercial)
                .then(|| Household::new(seed, spec.annual_kwh)),
            noise_x: 0.0,
            import_wh: spec.initial_import_wh,
            export_wh: if spec.class == Class::Prosumer {
                (spec.initial_import_wh * 0.3).round()
            } else {
                0.0
            },
            seq: 0,
            plan: spec.once.iter().cloned().collect(),
            load_plan: Vec::new(),
            planned_through: DateTime::from_timestamp(day0, 0).unwrap_or(shape.start),
            feeder_plan: (i64::MIN, Vec::new()),
            outbox: BTreeMap::new(),
            order: 0,
            buffer: VecDeque::with_capacity(shape.buffer.min(4096)),
            spec,
            shape,
        }
    }

    fn label(
        &self,
        kind: FaultType,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        params: serde_json::Value,
    ) -> Label {
        Label {
            kind,
            meter: Some(self.spec.id.to_string()),
            feeder: self.spec.feeder.clone(),
            start,
            end,
            params,
        }
    }

    /// The feeder's outages around `t` (today's and yesterday's, which may reach into today).
    fn feeder_outages(&mut self, t: DateTime<Utc>) -> &[Planned] {
        let day = t.timestamp().div_euclid(86_400);
        if self.feeder_plan.0 != day {
            let mut plan = Vec::new();
            for d in [day - 1, day, day + 1] {
                let day_start = DateTime::from_timestamp(d * 86_400, 0).unwrap_or(t);
                plan.extend(faults::feeder_outages(
                    &self.shape.faults,
                    self.shape.seed,
                    self.spec.feeder_index,
                    day_start,
                    self.shape.dt,
                ));
            }
            self.feeder_plan = (day, plan);
        }
        &self.feeder_plan.1
    }

    /// Plans this meter's faults through the day of `t`.
    fn plan_through(&mut self, t: DateTime<Utc>) {
        let not_after = self.shape.horizon.map(|h| self.shape.start + h);
        while self.planned_through <= t {
            let day_start = self.planned_through;
            let mut busy: Vec<Planned> = self.feeder_outages(day_start).to_vec();
            busy.extend(
                self.feeder_outages(day_start + TimeDelta::days(1))
                    .iter()
                    .cloned(),
            );
            busy.extend(self.plan.iter().cloned());
            let day = faults::plan_day(
                &self.shape.faults,
                &mut self.fault_rng,
                day_start,
                self.shape.dt,
                self.spec.import_only(),
                &busy,
                not_after,
            );
            self.plan
                .extend(day.into_iter().filter(|p| p.start >= self.shape.start));
            self.plan.make_contiguous().sort_by_key(|p| p.start);
            for p in faults::load_faults(
                &self.shape.faults,
                self.shape.seed,
                self.spec.n,
                day_start,
                self.shape.dt,
                not_after,
            ) {
                // One at a time, a day apart.
                let apart = |q: &Planned| {
                    p.start >= q.end + TimeDelta::days(1) || q.start >= p.end + TimeDelta::days(1)
                };
                if p.start >= self.shape.start && self.load_plan.iter().all(apart) {
                    self.load_plan.push(p);
                }
            }
            self.planned_through = day_start + TimeDelta::days(1);
        }
    }

    /// Measures the interval ending at `ctx.t`, applies this tick's faults, and returns what
    /// is due for sending.
    pub fn tick(&mut self, ctx: &TickContext) -> Tick {
        let t = ctx.t;
        let dt = self.shape.dt;
        self.plan_through(t);
        while self.plan.front().is_some_and(|p| p.end <= t) {
            self.plan.pop_front();
        }
        self.load_plan.retain(|p| p.end > t);
        let load_fault = self.load_plan.iter().find(|p| p.start <= t).cloned();
        let active: Vec<Planned> = self
            .plan
            .iter()
            .take_while(|p| p.start <= t)
            .cloned()
            .collect();
        let mut out = Tick {
            online: true,
            ..Tick::default()
        };

        // The load, drawn the same way whatever the faults.
        let profile = match self.spec.class {
            Class::Commercial => Profile::commercial(),
            _ => Profile::household(),
        };
        let base_w = ctx.profile_w(profile, self.spec.annual_kwh, self.spec.shift_quarters);
        let (heating, cooling) = match self.spec.class {
            Class::Commercial => (0.008, 0.02),
            _ => (0.012, 0.0),
        };
        let weather = (1.0
            + heating * (ctx.normal_c - ctx.temperature_c)
            + cooling * (ctx.temperature_c - 24.0).max(0.0))
        .clamp(0.7, 1.5);
        let rho = (-(dt.num_seconds() as f64) / 3600.0).exp();
        let sigma = self.spec.noise_sigma;
        self.noise_x =
            rho * self.noise_x + (1.0 - rho * rho).sqrt() * sigma * normal(&mut self.load_rng);
        let mean_w = self.spec.annual_kwh * 1000.0 / 8760.0;
        let behaviour_w = match &mut self.household {
            Some(home) => home.load_w(ctx, base_w, mean_w),
            None => base_w,
        };
        let load_w = behaviour_w * weather * (self.noise_x - sigma * sigma / 2.0).exp();
        let pv_w = self.spec.pv_kwp
            * ctx.irradiance_w_m2
            * 0.85
            * (1.0 + 0.05 * normal(&mut self.load_rng));
        let mut net_w = load_w - pv_w.max(0.0);
        let mut voltage = NOMINAL_V + self.spec.voltage_bias + 0.7 * normal(&mut self.load_rng)
            - 1.5 * (load_w / mean_w - 1.0).clamp(-1.0, 3.0)
            + 0.4 * (-net_w / 1000.0).max(0.0);

        // Supply: a feeder or meter outage silences the meter.
        let feeder_out = self
            .feeder_outages(t)
            .iter()
            .find(|p| p.start <= t && t < p.end)
            .cloned();
        if let Some(outage) = &feeder_out
            && outage.start == t
            && let Some(members) = &self.spec.feeder_members
        {
            {
                out.labels.push(Label {
                    kind: FaultType::FeederOutage,
                    meter: None,
                    feeder: self.spec.feeder.clone(),
                    start: outage.start,
                    end: outage.end,
                    params: json!({ "meters": members.as_ref() }),
                });
            }
        }
        for p in active.iter().chain(&load_fault).filter(|p| p.start == t) {
            if let Some(label) = self.begin(p) {
                out.labels.push(label);
            }
        }
        let has = |kind: FaultType| active.iter().find(|p| p.kind == kind);
        if feeder_out.is_some() || has(FaultType::MeterOutage).is_some() {
            out.online = false;
            return out;
        }

        match &load_fault {
            Some(p) if p.kind == FaultType::Bypass => net_w = load_w * p.value - pv_w.max(0.0),
            Some(p) if p.kind == FaultType::ApplianceLeftOn => net_w += p.value,
            _ => {}
        }
        if has(FaultType::Spike).is_some_and(|p| p.start == t) {
            net_w = self.spec.rated_w() * has(FaultType::Spike).map_or(1.5, |p| p.value);
        }
        if let Some(p) = has(FaultType::ReverseFlow) {
            net_w = -p.value;
        }
        if let Some(p) = has(FaultType::VoltageSag).or(has(FaultType::VoltageSwell)) {
            voltage = NOMINAL_V * p.value + 0.5 * normal(&mut self.load_rng);
        }
        let energy_wh = (net_w * dt.num_seconds() as f64 / 3600.0).round();
        if energy_wh >= 0.0 {
            if has(FaultType::FrozenRegister).is_none() {
                self.import_wh += energy_wh;
            }
        } else if has(FaultType::FrozenRegister).is_none() {
            self.export_wh += -energy_wh;
        }
        if self.import_wh >= self.spec.capacity_wh {
            let before = self.import_wh - energy_wh;
            self.import_wh -= self.spec.capacity_wh;
            out.labels.push(self.label(
                FaultType::RegisterRollover,
                t,
                t + dt,
                json!({ "capacity_wh": self.spec.capacity_wh, "before_wh": before, "after_wh": self.import_wh }),
            ));
        }
        self.seq += 1;
        let skew = has(FaultType::ClockSkew).map_or(0, |p| p.value as i64);
        let sample = Sample {
            ts_us: (t + TimeDelta::seconds(skew)).timestamp_micros(),
            import_wh: self.import_wh,
            export_wh: self.export_wh,
            power_w: round_to(net_w, 1) as f32,
            voltage_v: round_to(voltage, 1) as f32,
            current_a: round_to(net_w.abs() / voltage.max(1.0), 2) as f32,
            seq: self.seq,
        };

        // Delivery.
        let gap = has(FaultType::Gap);
        if gap.is_none_or(|g| g.value > 0.5) {
            if self.buffer.len() >= self.shape.buffer.max(1) {
                self.buffer.pop_front();
            }
            self.buffer.push_back(sample);
        }
        if gap.is_none() {
            let t_us = t.timestamp_micros();
            let send_at = match (has(FaultType::OutOfOrder), has(FaultType::Late)) {
                (Some(p), _) => {
                    t_us + (dt * p.value as i32).num_microseconds().unwrap_or(0) + 1_000_000
                }
                (_, Some(p)) => t_us + p.value as i64 * 1_000_000,
                _ => t_us,
            };
            self.push(send_at, sample);
            if has(FaultType::Duplicate).is_some() {
                self.push(send_at, sample);
            }
        }
        if has(FaultType::ConnectionDrop).is_some() {
            out.online = false;
            return out;
        }
        out.due = self.take_due(t.timestamp_micros());
        out
    }

    /// Applies the start of fault `p` and returns its label.
    fn begin(&mut self, p: &Planned) -> Option<Label> {
        let dt = self.shape.dt;
        let params = match p.kind {
            FaultType::Gap => {
                json!({ "recoverable": p.value > 0.5, "intervals": (p.end - p.start).num_seconds() / dt.num_seconds() })
            }
            FaultType::Duplicate => json!({ "copies": 2 }),
            FaultType::OutOfOrder => json!({ "after_readings": p.value as i64 }),
            FaultType::Late => json!({ "delay_s": p.value as i64 }),
            FaultType::ClockSkew => json!({ "skew_s": p.value as i64 }),
            FaultType::Spike => {
                json!({ "power_w": (self.spec.rated_w() * p.value).round(), "rated_w": self.spec.rated_w() })
            }
            FaultType::FrozenRegister => json!({ "import_wh": self.import_wh }),
            FaultType::ReverseFlow => json!({ "export_w": p.value }),
            FaultType::VoltageSag | FaultType::VoltageSwell => {
                json!({ "voltage_factor": round_to(p.value, 3) })
            }
            FaultType::MeterOutage | FaultType::ConnectionDrop => json!({}),
            FaultType::Bypass => json!({ "measured_share": p.value }),
            FaultType::ApplianceLeftOn => json!({ "extra_w": p.value }),
            FaultType::MeterExchange => {
                let old = self.import_wh;
                // A new meter: a few Wh from its factory test.
                self.import_wh = self
                    .fault_rng
                    .random_range(0.0..500.0_f64)
                    .min(old / 4.0)
                    .floor();
                self.export_wh = 0.0;
                self.seq = 0;
                json!({ "old_import_wh": old, "new_import_wh": self.import_wh })
            }
            FaultType::RegisterReset => {
                let old = self.import_wh;
                self.import_wh = 0.0;
                self.export_wh = 0.0;
                json!({ "old_import_wh": old })
            }
            // Labelled when the register actually passes its capacity.
            FaultType::RegisterRollover | FaultType::FeederOutage => return None,
        };
        Some(self.label(p.kind, p.start, p.end, params))
    }

    fn push(&mut self, send_at_us: i64, sample: Sample) {
        self.order += 1;
        self.outbox.insert((send_at_us, self.order), sample);
    }

    /// Takes the samples due by `now_us` (µs; `i64::MIN` takes only those put back by
    /// [`Meter::requeue`] or [`Meter::resend`]).
    pub fn take_due(&mut self, now_us: i64) -> Vec<Sample> {
        let later = self.outbox.split_off(&(now_us.saturating_add(1), 0));
        std::mem::replace(&mut self.outbox, later)
            .into_values()
            .collect()
    }

    /// Puts samples that were not acknowledged back at the front of the queue.
    pub fn requeue(&mut self, samples: impl IntoIterator<Item = Sample>) {
        for s in samples {
            self.order += 1;
            self.outbox.insert((i64::MIN, self.order), s);
        }
    }

    /// Everything still waiting to be sent (at the end of a run), oldest first.
    pub fn drain(&mut self) -> Vec<Sample> {
        std::mem::take(&mut self.outbox).into_values().collect()
    }

    /// Queues the buffered samples stamped within `[from, to)` for sending again (a resend
    /// command); returns how many.
    pub fn resend(&mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
        let (from, to) = (from.timestamp_micros(), to.timestamp_micros());
        let found: Vec<Sample> = self
            .buffer
            .iter()
            .filter(|s| (from..to).contains(&s.ts_us))
            .copied()
            .collect();
        let n = found.len();
        self.requeue(found);
        n
    }
}

#[cfg(test)]
mod tests;
