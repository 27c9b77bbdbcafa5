//! Section `[pipeline]` of `meterstack.toml`: every threshold of every stage, typed.

use std::collections::BTreeMap;
use std::time::Duration;

use meterstack_core::duration;
use meterstack_core::store::meters::MeterClass;
use meterstack_core::wire::DecodeConfig;
use serde::{Deserialize, Serialize};

/// Section `[pipeline]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Consumer group on `readings.raw`.
    pub group: String,
    /// Most records taken from the bus at once.
    pub poll_max: usize,
    /// How often state is checkpointed (and bus offsets committed after it).
    #[serde(with = "duration")]
    pub checkpoint_interval: Duration,
    /// The meters' measuring interval: readings are expected on this grid (UTC).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// A reading up to this much older than its meter's newest restates the affected windows;
    /// an older one is flagged `late` and left to the lake's ETL.
    #[serde(with = "duration")]
    pub allowed_lateness: Duration,
    /// Missing intervals still missing this long after their time are requested from the
    /// meter (a `resend` command).
    #[serde(with = "duration")]
    pub resend_after: Duration,
    /// In a live process, when nothing arrives for this long the pipeline clock follows the
    /// wall clock (so silent meters are noticed); `0ms` keeps it on record time alone.
    #[serde(with = "duration")]
    pub idle_clock: Duration,
    /// Decoding limits of `readings.raw` payloads. Timestamps far ahead are let through here so
    /// that the clock-skew rule can correct or reject them with a reason.
    pub decode: DecodeConfig,
    /// Validation and anomaly thresholds for meters of no listed class.
    pub rules: Rules,
    /// Thresholds per meter class (`household`, `commercial`, `prosumer`), replacing `rules`.
    pub classes: BTreeMap<String, Rules>,
    /// Outage inference per feeder.
    pub feeder_outage: FeederOutage,
    /// Per-meter consumption baselines.
    pub baseline: Baseline,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let mut classes = BTreeMap::new();
        classes.insert(
            "commercial".to_string(),
            Rules {
                register_capacity_wh: 1.0e10,
                default_rated_current_a: 100.0,
                phases: 3,
                ..Rules::default()
            },
        );
        Self {
            group: "pipeline".into(),
            poll_max: 5000,
            checkpoint_interval: Duration::from_secs(5),
            interval: Duration::from_secs(15 * 60),
            allowed_lateness: Duration::from_secs(3600),
            resend_after: Duration::from_secs(6 * 3600),
            idle_clock: Duration::from_secs(5),
            decode: DecodeConfig {
                max_future_skew: Duration::from_secs(86_400),
                ..DecodeConfig::default()
            },
            rules: Rules::default(),
            classes,
            feeder_outage: FeederOutage::default(),
            baseline: Baseline::default(),
        }
    }
}

/// Validation (VEE) and anomaly thresholds of one meter class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// A timestamp further than this from the interval grid is a clock-skew suspect.
    #[serde(with = "duration")]
    pub align_tolerance: Duration,
    /// A skewed reading received within this much after a grid point is moved to that point
    /// (meters send right after the interval ends); otherwise it is rejected.
    #[serde(with = "duration")]
    pub receive_tolerance: Duration,
    /// The import register's modulus: it reads 0 again after `capacity − 1` (99,999.9 kWh
    /// registers: 1e8 Wh). A drop is a rollover when the unwrapped difference is energy the
    /// meter's rated current could have delivered in the elapsed time.
    pub register_capacity_wh: f64,
    /// A register that drops to at most this has been reset (or exchanged); a smaller drop
    /// from a higher value is negative consumption and rejected.
    pub reset_max_wh: f64,
    /// Nominal voltage, V.
    pub nominal_voltage_v: f64,
    /// Sag below / swell above nominal × (1 ∓ this) (EN 50160: 10 %).
    pub voltage_tolerance: f64,
    /// Voltages outside nominal × (1 ∓ this) are implausible (range check).
    pub voltage_range: f64,
    /// Rated current assumed when the registry has none, A.
    pub default_rated_current_a: f64,
    /// Phases: rated power is rated current × nominal voltage × phases.
    pub phases: u32,
    /// An interval's energy above rated current × nominal voltage × this is a spike.
    pub spike_factor: f64,
    /// Registers that do not move while at least this power (either way) is reported are
    /// frozen, W.
    pub frozen_min_power_w: f64,
    /// An import-only meter whose export register grows by more than this in an interval
    /// shows reverse flow (tamper), Wh.
    pub reverse_min_wh: f64,
    /// Consecutive intervals of zero consumption before an alert.
    pub zero_consumption_intervals: u32,
    /// Intervals without a reading before a meter counts as silent.
    pub silent_intervals: u32,
    /// A hole of at least this many missing intervals whose registers moved by at most
    /// `outage_max_share` of what the surrounding power predicts was a supply outage.
    pub outage_min_missing: u32,
    /// See `outage_min_missing`.
    pub outage_max_share: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            align_tolerance: Duration::from_secs(5),
            receive_tolerance: Duration::from_secs(60),
            register_capacity_wh: 1.0e8,
            reset_max_wh: 10_000.0,
            nominal_voltage_v: 230.0,
            voltage_tolerance: 0.10,
            voltage_range: 0.5,
            default_rated_current_a: 63.0,
            phases: 1,
            spike_factor: 1.0,
            frozen_min_power_w: 40.0,
            reverse_min_wh: 10.0,
            zero_consumption_intervals: 96,
            silent_intervals: 3,
            outage_min_missing: 3,
            outage_max_share: 0.5,
        }
    }
}

impl Rules {
    /// Rated power of a meter of `rated_current_a` (the default when unknown): rated current ×
    /// nominal voltage × phases, W.
    pub fn rated_w(&self, rated_current_a: Option<f64>) -> f64 {
        rated_current_a.unwrap_or(self.default_rated_current_a)
            * self.nominal_voltage_v
            * f64::from(self.phases)
    }

    /// Checks the thresholds make sense.
    pub fn validate(&self, name: &str) -> Result<(), String> {
        let positive = [
            ("register_capacity_wh", self.register_capacity_wh),
            ("nominal_voltage_v", self.nominal_voltage_v),
            ("default_rated_current_a", self.default_rated_current_a),
            ("spike_factor", self.spike_factor),
        ];
        for (field, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name}.{field} must be a positive number"));
            }
        }
        for (field, v) in [
            ("voltage_tolerance", self.voltage_tolerance),
            ("voltage_range", self.voltage_range),
            ("outage_max_share", self.outage_max_share),
        ] {
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return Err(format!("{name}.{field} must lie in [0, 1)"));
            }
        }
        if !(1..=3).contains(&self.phases) {
            return Err(format!("{name}.phases must be 1, 2 or 3"));
        }
        if self.silent_intervals == 0 {
            return Err(format!("{name}.silent_intervals must be at least 1"));
        }
        Ok(())
    }
}

/// Section `[pipeline.feeder_outage]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeederOutage {
    /// At least this many meters of one feeder silent together…
    pub min_meters: usize,
    /// …and at least this share of the feeder's meters: one feeder alert, not meter alerts.
    pub min_share: f64,
}

impl Default for FeederOutage {
    fn default() -> Self {
        Self {
            min_meters: 3,
            min_share: 0.5,
        }
    }
}

/// Section `[pipeline.baseline]`: per-meter consumption by hour of week, learned online.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Baseline {
    /// Weight of a new observation in the moving mean and deviation (EWMA).
    pub alpha: f64,
    /// Observations an hour-of-week bucket needs before it judges anything.
    pub min_samples: u32,
    /// How many deviations from the mean count as far outside normal.
    pub threshold: f64,
    /// Consecutive intervals far outside normal before an alert.
    pub sustain_intervals: u32,
}

impl Default for Baseline {
    fn default() -> Self {
        Self {
            alpha: 0.2,
            min_samples: 8,
            threshold: 6.0,
            sustain_intervals: 4,
        }
    }
}

impl PipelineConfig {
    /// The rules of meters of `class`.
    pub fn rules_for(&self, class: Option<MeterClass>) -> &Rules {
        class
            .and_then(|c| self.classes.get(c.as_str()))
            .unwrap_or(&self.rules)
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        let secs = self.interval.as_secs();
        if secs < 60 || !86_400u64.is_multiple_of(secs) || self.interval.subsec_nanos() != 0 {
            return Err("pipeline.interval must be whole minutes that divide a day".into());
        }
        if self.allowed_lateness < self.interval {
            return Err("pipeline.allowed_lateness must be at least one interval".into());
        }
        if self.resend_after <= self.allowed_lateness {
            return Err("pipeline.resend_after must exceed allowed_lateness".into());
        }
        if self.poll_max == 0 {
            return Err("pipeline.poll_max must be at least 1".into());
        }
        self.rules.validate("pipeline.rules")?;
        for (class, rules) in &self.classes {
            MeterClass::parse(class).map_err(|e| format!("pipeline.classes: {e}"))?;
            rules.validate(&format!("pipeline.classes.{class}"))?;
        }
        let f = &self.feeder_outage;
        if !(f.min_share.is_finite() && (0.0..=1.0).contains(&f.min_share)) || f.min_meters < 2 {
            return Err(
                "pipeline.feeder_outage needs min_meters ≥ 2 and min_share in [0, 1]".into(),
            );
        }
        let b = &self.baseline;
        if !(b.alpha > 0.0 && b.alpha <= 1.0 && b.threshold > 0.0) {
            return Err("pipeline.baseline needs alpha in (0, 1] and a positive threshold".into());
        }
        Ok(())
    }
}
