//! Faults injected into the fleet at configured rates, and their ground truth (labels).
//!
//! Every fault is planned from its own seeded random stream (separate from the load's), so a
//! fleet with faults consumes the same energy as one without. A meter plans its faults one
//! local day at a time, never two at once and never during its feeder's outage; faults that
//! happen once in a meter's life (rollover, exchange, reset) are planned when the fleet is
//! built. Each fault becomes one [`Label`] line when it happens.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::load::hash_unit;

/// The kinds of fault the simulator injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultType {
    /// Readings the meter never sends. `recoverable`: it still holds them and answers a resend.
    Gap,
    /// A reading sent twice.
    Duplicate,
    /// A reading sent after the next `intervals` readings.
    OutOfOrder,
    /// A reading sent `delay_s` seconds late.
    Late,
    /// Timestamps off by `skew_s` seconds.
    ClockSkew,
    /// The import register passes its capacity and starts again near zero.
    RegisterRollover,
    /// The meter is replaced (the registry's `exchanged_on` says so); registers restart.
    MeterExchange,
    /// The registers drop to zero without an exchange.
    RegisterReset,
    /// One interval's consumption beyond what the meter's rated current allows.
    Spike,
    /// The registers stop while power is reported.
    FrozenRegister,
    /// Energy flows out of an import-only meter (tamper).
    ReverseFlow,
    /// Voltage below 90 % of nominal.
    VoltageSag,
    /// Voltage above 110 % of nominal.
    VoltageSwell,
    /// The meter has no supply: no consumption, no readings, no connection.
    MeterOutage,
    /// Every meter of a feeder has no supply.
    FeederOutage,
    /// The meter's connection is down; it keeps measuring and backfills after reconnecting.
    ConnectionDrop,
    /// Part of the load bypasses the meter (theft): it measures `measured_share` of it, for
    /// days.
    Bypass,
    /// An appliance left running: `extra_w` more load for hours.
    ApplianceLeftOn,
}

impl FaultType {
    /// Every type.
    pub const ALL: [FaultType; 18] = [
        FaultType::Gap,
        FaultType::Duplicate,
        FaultType::OutOfOrder,
        FaultType::Late,
        FaultType::ClockSkew,
        FaultType::RegisterRollover,
        FaultType::MeterExchange,
        FaultType::RegisterReset,
        FaultType::Spike,
        FaultType::FrozenRegister,
        FaultType::ReverseFlow,
        FaultType::VoltageSag,
        FaultType::VoltageSwell,
        FaultType::MeterOutage,
        FaultType::FeederOutage,
        FaultType::ConnectionDrop,
        FaultType::Bypass,
        FaultType::ApplianceLeftOn,
    ];

    /// The snake_case name used in labels and config.
    pub fn name(self) -> &'static str {
        match self {
            FaultType::Gap => "gap",
            FaultType::Duplicate => "duplicate",
            FaultType::OutOfOrder => "out_of_order",
            FaultType::Late => "late",
            FaultType::ClockSkew => "clock_skew",
            FaultType::RegisterRollover => "register_rollover",
            FaultType::MeterExchange => "meter_exchange",
            FaultType::RegisterReset => "register_reset",
            FaultType::Spike => "spike",
            FaultType::FrozenRegister => "frozen_register",
            FaultType::ReverseFlow => "reverse_flow",
            FaultType::VoltageSag => "voltage_sag",
            FaultType::VoltageSwell => "voltage_swell",
            FaultType::MeterOutage => "meter_outage",
            FaultType::FeederOutage => "feeder_outage",
            FaultType::ConnectionDrop => "connection_drop",
            FaultType::Bypass => "bypass",
            FaultType::ApplianceLeftOn => "appliance_left_on",
        }
    }

    /// Parses a [`FaultType::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Faults a meter has at most once (planned when the fleet is built).
    pub fn once_in_a_life(self) -> bool {
        matches!(
            self,
            FaultType::RegisterRollover | FaultType::MeterExchange | FaultType::RegisterReset
        )
    }

    /// Faults of the load itself (what the home consumes or the meter sees of it), lasting
    /// hours to days: planned from their own random stream and overlapping any other fault.
    pub fn of_the_load(self) -> bool {
        matches!(self, FaultType::Bypass | FaultType::ApplianceLeftOn)
    }

    /// Default rate: expected events per meter-day (per feeder-day for feeder outages).
    pub fn default_rate(self) -> f64 {
        match self {
            FaultType::Gap | FaultType::Duplicate | FaultType::OutOfOrder => 0.02,
            FaultType::ConnectionDrop => 0.02,
            FaultType::Late | FaultType::Spike | FaultType::VoltageSag => 0.01,
            FaultType::ClockSkew | FaultType::VoltageSwell | FaultType::MeterOutage => 0.005,
            FaultType::FrozenRegister => 0.003,
            FaultType::ReverseFlow | FaultType::ApplianceLeftOn => 0.002,
            FaultType::Bypass => 0.0005,
            FaultType::FeederOutage => 0.01,
            FaultType::RegisterRollover | FaultType::MeterExchange | FaultType::RegisterReset => {
                0.001
            }
        }
    }
}

/// Fault injection settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Inject faults at all.
    pub enabled: bool,
    /// Multiplies every rate.
    pub scale: f64,
    /// Rates (events per meter-day; per feeder-day for `feeder_outage`) that replace the
    /// defaults, by type name.
    pub rates: BTreeMap<FaultType, f64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            scale: 1.0,
            rates: BTreeMap::new(),
        }
    }
}

impl FaultConfig {
    /// No faults at all.
    pub fn none() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The effective rate of `kind`.
    pub fn rate(&self, kind: FaultType) -> f64 {
        if !self.enabled {
            return 0.0;
        }
        self.rates
            .get(&kind)
            .copied()
            .unwrap_or(kind.default_rate())
            * self.scale
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.scale.is_finite() && self.scale >= 0.0) {
            return Err("faults.scale must be a non-negative number".into());
        }
        for (kind, rate) in &self.rates {
            if !(rate.is_finite() && *rate >= 0.0 && *rate <= 96.0) {
                return Err(format!(
                    "fault rate of {} must be between 0 and 96 per day",
                    kind.name()
                ));
            }
        }
        Ok(())
    }
}

/// Ground truth of one injected fault: a line of the labels file.
///
/// `start` is the timestamp of the first affected reading (true time, before any clock
/// skew); `end` is exclusive: the first timestamp no longer affected. For single-reading
/// faults `end = start + interval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// The fault.
    #[serde(rename = "type")]
    pub kind: FaultType,
    /// The meter (absent for a feeder outage).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub meter: Option<String>,
    /// The meter's feeder.
    pub feeder: String,
    /// First affected reading timestamp.
    pub start: DateTime<Utc>,
    /// First unaffected reading timestamp.
    pub end: DateTime<Utc>,
    /// Type-specific parameters.
    pub params: serde_json::Value,
}

/// A planned fault of one meter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    pub(crate) kind: FaultType,
    pub(crate) start: DateTime<Utc>,
    pub(crate) end: DateTime<Utc>,
    /// A type-specific number: recoverable (gap, 0/1), intervals (out of order), delay
    /// seconds (late), skew seconds, factor (sag/swell, spike), export power (reverse flow).
    pub(crate) value: f64,
}

/// Draws how many events of a rate happen in one period (rate ≤ 1 → 0 or 1).
fn draw_count(rng: &mut StdRng, rate: f64) -> u32 {
    let whole = rate.floor();
    whole as u32 + u32::from(rng.random_bool((rate - whole).clamp(0.0, 1.0)))
}

/// The parameters of a new window fault: its length in intervals and its value.
fn draw_shape(kind: FaultType, rng: &mut StdRng, dt: TimeDelta) -> (i64, f64) {
    let per_hour = (3600 / dt.num_seconds().max(1)).max(1);
    match kind {
        FaultType::Gap => (
            rng.random_range(1..=6),
            f64::from(u8::from(rng.random_bool(0.5))),
        ),
        FaultType::Duplicate | FaultType::Spike => (1, rng.random_range(1.2..2.5)),
        FaultType::OutOfOrder => (1, f64::from(rng.random_range(1..=3_u8))),
        // Late means later than the pipeline's allowed lateness (1 h by default, plus the
        // interval it takes to notice) and earlier than its resend requests (6 h): a reading
        // held up, not lost.
        FaultType::Late => (1, rng.random_range(5400.0..5.0 * 3600.0_f64).round()),
        FaultType::ClockSkew => {
            // Odd seconds: a drifted clock is never off by whole minutes.
            let magnitude = (rng.random_range(300.0..3.0 * 3600.0_f64) as i64 | 1) as f64;
            (
                per_hour * rng.random_range(2..=12),
                if rng.random_bool(0.5) {
                    magnitude
                } else {
                    -magnitude
                },
            )
        }
        FaultType::FrozenRegister => (per_hour * rng.random_range(2..=12), 0.0),
        FaultType::ReverseFlow => (
            per_hour * rng.random_range(2..=8),
            rng.random_range(300.0..2000.0_f64).round(),
        ),
        FaultType::VoltageSag => (rng.random_range(1..=4), rng.random_range(0.70..0.87)),
        FaultType::VoltageSwell => (rng.random_range(1..=4), rng.random_range(1.13..1.20)),
        FaultType::MeterOutage => (per_hour * rng.random_range(1..=8), 0.0),
        FaultType::FeederOutage => (per_hour * rng.random_range(1..=4), 0.0),
        FaultType::ConnectionDrop => (per_hour * rng.random_range(1..=6), 0.0),
        FaultType::RegisterRollover | FaultType::MeterExchange | FaultType::RegisterReset => {
            (1, 0.0)
        }
        // The measured share of the load, for 2–6 days.
        FaultType::Bypass => (
            per_hour * 24 * rng.random_range(2..=6),
            (rng.random_range(0.25..0.6_f64) * 100.0).round() / 100.0,
        ),
        // A heater or pump of 1–2.5 kW, for 8–36 hours.
        FaultType::ApplianceLeftOn => (
            per_hour * rng.random_range(8..=36),
            (rng.random_range(1000.0..2500.0_f64) / 50.0).round() * 50.0,
        ),
    }
}

/// Load faults ([`FaultType::of_the_load`]) of meter `meter` beginning on the day starting at
/// `day_start`: a pure function of the seed, the meter and the day, so they change no other
/// fault's plan. Ones whose end would pass `not_after` are not planned.
pub(crate) fn load_faults(
    config: &FaultConfig,
    seed: u64,
    meter: u64,
    day_start: DateTime<Utc>,
    dt: TimeDelta,
    not_after: Option<DateTime<Utc>>,
) -> Vec<Planned> {
    let day = day_start.timestamp().div_euclid(86_400);
    let mut rng = StdRng::seed_from_u64(
        seed ^ 0x10AD_0000_0000_0000
            ^ meter.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (day as u64).rotate_left(24),
    );
    let steps = (86_400 / dt.num_seconds().max(1)).max(1);
    let mut out = Vec::new();
    for kind in [FaultType::Bypass, FaultType::ApplianceLeftOn] {
        for _ in 0..draw_count(&mut rng, config.rate(kind)) {
            let planned = draw_in_day(kind, &mut rng, day_start, dt, steps);
            if not_after.is_none_or(|limit| planned.end <= limit) {
                out.push(planned);
            }
        }
    }
    out
}

/// A fault of `kind` of a drawn shape, starting at one of the `steps` intervals of the day
/// from `day_start`.
fn draw_in_day(
    kind: FaultType,
    rng: &mut StdRng,
    day_start: DateTime<Utc>,
    dt: TimeDelta,
    steps: i64,
) -> Planned {
    let (len, value) = draw_shape(kind, rng, dt);
    let start = day_start + dt * rng.random_range(0..steps) as i32;
    Planned {
        kind,
        start,
        end: start + dt * len as i32,
        value,
    }
}

/// Outages of feeder `feeder` on the day starting at `day_start` (a pure function, so every
/// meter of the feeder computes the same plan).
pub(crate) fn feeder_outages(
    config: &FaultConfig,
    seed: u64,
    feeder: u64,
    day_start: DateTime<Utc>,
    dt: TimeDelta,
) -> Vec<Planned> {
    let rate = config.rate(FaultType::FeederOutage);
    if rate <= 0.0 {
        return Vec::new();
    }
    let day = day_start.timestamp().div_euclid(86_400);
    let mut rng = StdRng::seed_from_u64(
        seed ^ 0xFEED_0000_0000_0000
            ^ feeder.wrapping_mul(0x0100_0000_01B3)
            ^ (day as u64).rotate_left(20),
    );
    let steps = (86_400 / dt.num_seconds().max(1)).max(1);
    let mut out = Vec::new();
    for _ in 0..draw_count(&mut rng, rate) {
        let planned = draw_in_day(FaultType::FeederOutage, &mut rng, day_start, dt, steps);
        if out.iter().all(|o: &Planned| !overlaps(o, &planned, dt)) {
            out.push(planned);
        }
    }
    out.sort_by_key(|p| p.start);
    out
}

/// Whether two planned faults are closer than two intervals.
pub(crate) fn overlaps(a: &Planned, b: &Planned, dt: TimeDelta) -> bool {
    a.start < b.end + dt * 2 && b.start < a.end + dt * 2
}

/// The window faults one meter plans for the day starting at `day_start`, avoiding `busy`
/// (its feeder's outages and its once-in-a-life faults) and each other.
pub(crate) fn plan_day(
    config: &FaultConfig,
    rng: &mut StdRng,
    day_start: DateTime<Utc>,
    dt: TimeDelta,
    import_only: bool,
    busy: &[Planned],
    not_after: Option<DateTime<Utc>>,
) -> Vec<Planned> {
    let steps = (86_400 / dt.num_seconds().max(1)).max(1);
    let mut out: Vec<Planned> = Vec::new();
    for kind in FaultType::ALL {
        if kind.once_in_a_life() || kind.of_the_load() || kind == FaultType::FeederOutage {
            continue;
        }
        if kind == FaultType::ReverseFlow && !import_only {
            continue;
        }
        // Always draw the same numbers, so one type's rate does not change another's plan.
        let count = draw_count(rng, config.rate(kind));
        for _ in 0..count {
            let (len, value) = draw_shape(kind, rng, dt);
            let start = day_start + dt * rng.random_range(1..=steps) as i32;
            let mut end = start + dt * len as i32;
            if kind == FaultType::Late {
                end = start + dt;
            }
            let planned = Planned {
                kind,
                start,
                end,
                value,
            };
            // Faults whose effect outlasts a finite run are not planned.
            let effect_end = match kind {
                FaultType::Late => start + TimeDelta::seconds(value as i64),
                FaultType::OutOfOrder => end + dt * value as i32,
                _ => end,
            };
            if not_after.is_some_and(|limit| effect_end + dt > limit) {
                continue;
            }
            let reach = Planned {
                end: effect_end,
                ..planned.clone()
            };
            if busy
                .iter()
                .chain(out.iter())
                .all(|b| !overlaps(b, &reach, dt))
            {
                out.push(reach);
            }
        }
    }
    for p in &mut out {
        // `end` held the effect's end for the overlap check; labels use the affected readings.
        if matches!(p.kind, FaultType::Late | FaultType::OutOfOrder) {
            p.end = p.start + dt;
        }
    }
    out.sort_by_key(|p| p.start);
    out
}

/// Once-in-a-life faults of a meter over a run of `horizon`: each happens with probability
/// rate × days, at a uniformly drawn interval.
pub(crate) fn plan_once(
    config: &FaultConfig,
    seed: u64,
    meter: u64,
    feeder: u64,
    start: DateTime<Utc>,
    horizon: TimeDelta,
    dt: TimeDelta,
) -> Vec<Planned> {
    let days = horizon.num_seconds() as f64 / 86_400.0;
    let steps = horizon.num_seconds() / dt.num_seconds().max(1);
    let mut out: Vec<Planned> = Vec::new();
    if steps < 8 {
        return out;
    }
    for (i, kind) in [
        FaultType::RegisterRollover,
        FaultType::MeterExchange,
        FaultType::RegisterReset,
    ]
    .into_iter()
    .enumerate()
    {
        let p = (config.rate(kind) * days).clamp(0.0, 1.0);
        let u = (hash_unit(seed ^ 0x0DCE, (meter as i64) * 8 + i as i64) + 1.0) / 2.0;
        if u >= p {
            continue;
        }
        let at = (hash_unit(seed ^ 0x0DCF, (meter as i64) * 8 + i as i64) + 1.0) / 2.0;
        let step = 4 + (at * (steps - 8) as f64) as i64;
        let s = start + dt * step as i32;
        let planned = Planned {
            kind,
            start: s,
            end: s + dt,
            value: 0.0,
        };
        let day = s.timestamp().div_euclid(86_400) * 86_400;
        let outages: Vec<Planned> = [day - 86_400, day]
            .into_iter()
            .filter_map(|d| DateTime::from_timestamp(d, 0))
            .flat_map(|d| feeder_outages(config, seed, feeder, d, dt))
            .collect();
        // At least a day apart from each other, and never while the feeder is out.
        if out
            .iter()
            .all(|o| (o.start - s).num_seconds().abs() >= 86_400)
            && outages.iter().all(|o| !overlaps(o, &planned, dt))
        {
            out.push(planned);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn names_round_trip() {
        for t in FaultType::ALL {
            assert_eq!(FaultType::from_name(t.name()), Some(t));
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{}\"", t.name())
            );
        }
    }

    #[test]
    fn day_plans_never_overlap_and_follow_the_rates() {
        let config = FaultConfig {
            scale: 20.0,
            ..FaultConfig::default()
        };
        let dt = TimeDelta::minutes(15);
        let mut rng = StdRng::seed_from_u64(3);
        let day0 = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).single().unwrap();
        let mut count = 0;
        for d in 0..200 {
            let plan = plan_day(
                &config,
                &mut rng,
                day0 + TimeDelta::days(d),
                dt,
                true,
                &[],
                None,
            );
            for (i, a) in plan.iter().enumerate() {
                for b in &plan[i + 1..] {
                    assert!(!overlaps(a, b, dt), "{a:?} {b:?}");
                }
            }
            count += plan.len();
        }
        // Rates sum to about 0.13 per meter-day, ×20, less what collisions drop.
        assert!((150..600).contains(&count), "{count}");
        let none = FaultConfig::none();
        assert!(plan_day(&none, &mut rng, day0, dt, true, &[], None).is_empty());
    }
}
