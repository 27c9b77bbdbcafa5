//! `readings.clean` and `readings.rejected`: readings after validation (VEE), with their
//! quality and the rule behind it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The quality of a reading or an interval (the VEE outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    /// As the meter measured it.
    Measured,
    /// Computed by the pipeline (a gap or an outage filled, a reset bridged).
    Estimated,
    /// Kept, but a rule doubts it.
    Suspect,
    /// Not used.
    Rejected,
}

impl Quality {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Quality::Measured => "measured",
            Quality::Estimated => "estimated",
            Quality::Suspect => "suspect",
            Quality::Rejected => "rejected",
        }
    }
}

/// The validation rule that set a quality flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The payload or the reading failed decoding (schema and basic range).
    Schema,
    /// A value lies outside what a meter can measure (voltage, power).
    Range,
    /// The same reading arrived again.
    Duplicate,
    /// Arrived after a newer reading of its meter, within the allowed lateness.
    OutOfOrder,
    /// Arrived later than the allowed lateness: windows are not restated; the ETL fixes history.
    Late,
    /// The meter's clock is off (timestamp off the grid or ahead of its arrival).
    ClockSkew,
    /// The import register went backwards without a rollover, reset or exchange.
    NegativeConsumption,
    /// The register passed its capacity and started again.
    RegisterRollover,
    /// The registry records an exchange of the meter; registers restarted.
    MeterExchange,
    /// The register dropped to near zero without an exchange.
    RegisterReset,
    /// More energy in one interval than the rated current allows.
    Spike,
    /// The registers did not move while power was reported.
    FrozenRegister,
    /// Intervals without readings, filled by interpolation.
    Gap,
    /// Intervals without supply (registers did not move across the silence).
    Outage,
    /// Intervals without supply during an outage of the meter's whole feeder.
    FeederOutage,
    /// Readings the meter held while its connection was down, delivered in order on return.
    Backfill,
    /// A reading the meter sent again because the pipeline asked for it.
    Resent,
}

impl Rule {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Schema => "schema",
            Rule::Range => "range",
            Rule::Duplicate => "duplicate",
            Rule::OutOfOrder => "out_of_order",
            Rule::Late => "late",
            Rule::ClockSkew => "clock_skew",
            Rule::NegativeConsumption => "negative_consumption",
            Rule::RegisterRollover => "register_rollover",
            Rule::MeterExchange => "meter_exchange",
            Rule::RegisterReset => "register_reset",
            Rule::Spike => "spike",
            Rule::FrozenRegister => "frozen_register",
            Rule::Gap => "gap",
            Rule::Outage => "outage",
            Rule::FeederOutage => "feeder_outage",
            Rule::Backfill => "backfill",
            Rule::Resent => "resent",
        }
    }
}

/// A validated reading on `readings.clean`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanReading {
    /// The meter.
    pub meter_id: String,
    /// The reading's time on the interval grid (corrected when the clock was skewed).
    pub ts: DateTime<Utc>,
    /// The timestamp the meter sent, when the pipeline corrected it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reported_ts: Option<DateTime<Utc>>,
    /// Import register, Wh.
    pub import_wh: f64,
    /// Export register, Wh.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub export_wh: Option<f64>,
    /// Active power, W.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub power_w: Option<f64>,
    /// Voltage, V.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub voltage_v: Option<f64>,
    /// Current, A.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub current_a: Option<f64>,
    /// The meter's sequence number.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seq: Option<u64>,
    /// When meterstack received it.
    pub received_at: DateTime<Utc>,
    /// The VEE outcome.
    pub quality: Quality,
    /// The rule behind the flag (or a note such as `out_of_order` on a measured reading).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule: Option<Rule>,
    /// Other rules that fired on the reading.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub also: Vec<Rule>,
}

/// A rejected reading or message on `readings.rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedReading {
    /// The meter, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub meter_id: Option<String>,
    /// The reading's timestamp, when it decoded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ts: Option<DateTime<Utc>>,
    /// When meterstack received it.
    pub received_at: DateTime<Utc>,
    /// The rule.
    pub rule: Rule,
    /// The decoder's reason code, for schema rejections.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// A human-readable explanation.
    pub detail: String,
    /// The reading as decoded, if it decoded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reading: Option<serde_json::Value>,
}
