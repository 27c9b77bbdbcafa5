//! What the pipeline emits, one type per output topic, serialized as JSON records.
//!
//! Every record carries a key that identifies it across at-least-once redelivery: a clean
//! reading by (meter, ts), an aggregate by (meter, window, start, revision), an alert event by
//! (alert id, event). Consumers that need exactly-once results deduplicate by that key.

use chrono::{DateTime, NaiveDate, Utc};
use meterstack_core::wire::command::CommandMessage;
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

/// A window width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Width {
    /// One measuring interval (15 minutes by default).
    #[serde(rename = "interval")]
    Interval,
    /// An hour.
    #[serde(rename = "1h")]
    Hour,
    /// A UTC day.
    #[serde(rename = "1d")]
    Day,
}

impl Width {
    /// The name used on the wire and in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Width::Interval => "interval",
            Width::Hour => "1h",
            Width::Day => "1d",
        }
    }
}

/// A record on `aggregates`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Aggregate {
    /// One meter's energy, demand and voltage over one window.
    MeterWindow(MeterWindow),
    /// The share of a feeder's expected intervals received on one day.
    FeederCompleteness(FeederCompleteness),
}

/// One meter's window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeterWindow {
    /// The meter.
    pub meter_id: String,
    /// The width.
    pub window: Width,
    /// Start, inclusive.
    pub start: DateTime<Utc>,
    /// End, exclusive.
    pub end: DateTime<Utc>,
    /// Imported energy, Wh (the sum of its intervals).
    pub energy_wh: f64,
    /// Exported energy, Wh.
    pub export_wh: f64,
    /// Highest average demand of a measured interval, W.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peak_demand_w: Option<f64>,
    /// Highest reported power, W.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_power_w: Option<f64>,
    /// Lowest reported voltage, V.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub min_voltage_v: Option<f64>,
    /// Highest reported voltage, V.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub max_voltage_v: Option<f64>,
    /// Intervals in the window.
    pub expected_intervals: u32,
    /// Intervals measured.
    pub measured_intervals: u32,
    /// Intervals estimated.
    pub estimated_intervals: u32,
    /// Rules behind estimated or suspect intervals.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub rules: Vec<Rule>,
    /// 0 for the first version; each restatement adds 1.
    pub revision: u32,
}

/// A feeder's completeness on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeederCompleteness {
    /// The feeder.
    pub feeder: String,
    /// The day.
    pub day: NaiveDate,
    /// Meters of the feeder in the registry × intervals per day.
    pub expected_intervals: u64,
    /// Intervals received (measured), counted once each.
    pub received_intervals: u64,
    /// received / expected.
    pub completeness: f64,
}

/// The kinds of alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    /// Voltage below nominal − 10 % (EN 50160).
    VoltageSag,
    /// Voltage above nominal + 10 %.
    VoltageSwell,
    /// No consumption for a sustained time.
    ZeroConsumption,
    /// Energy flowing out of an import-only meter.
    ReverseFlow,
    /// An interval beyond the rated current.
    ConsumptionSpike,
    /// The register stopped while power is reported.
    FrozenRegister,
    /// No readings for `silent_intervals`.
    MeterSilent,
    /// Most meters of a feeder silent together.
    FeederOutage,
    /// The register dropped to zero without an exchange.
    RegisterReset,
    /// Consumption far outside the meter's own normal for the hour of week.
    ConsumptionAnomaly,
}

impl AlertType {
    /// Every type.
    pub const ALL: [AlertType; 10] = [
        AlertType::VoltageSag,
        AlertType::VoltageSwell,
        AlertType::ZeroConsumption,
        AlertType::ReverseFlow,
        AlertType::ConsumptionSpike,
        AlertType::FrozenRegister,
        AlertType::MeterSilent,
        AlertType::FeederOutage,
        AlertType::RegisterReset,
        AlertType::ConsumptionAnomaly,
    ];

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            AlertType::VoltageSag => "voltage_sag",
            AlertType::VoltageSwell => "voltage_swell",
            AlertType::ZeroConsumption => "zero_consumption",
            AlertType::ReverseFlow => "reverse_flow",
            AlertType::ConsumptionSpike => "consumption_spike",
            AlertType::FrozenRegister => "frozen_register",
            AlertType::MeterSilent => "meter_silent",
            AlertType::FeederOutage => "feeder_outage",
            AlertType::RegisterReset => "register_reset",
            AlertType::ConsumptionAnomaly => "consumption_anomaly",
        }
    }

    /// How urgent it is.
    pub fn severity(self) -> Severity {
        match self {
            AlertType::FeederOutage => Severity::Critical,
            AlertType::VoltageSag
            | AlertType::VoltageSwell
            | AlertType::ReverseFlow
            | AlertType::RegisterReset => Severity::Major,
            AlertType::ConsumptionSpike
            | AlertType::FrozenRegister
            | AlertType::MeterSilent
            | AlertType::ZeroConsumption => Severity::Minor,
            AlertType::ConsumptionAnomaly => Severity::Warning,
        }
    }

    /// Whether the alert resolves itself when its condition clears (a reset is an event an
    /// operator must look at; it stays open until acknowledged and resolved).
    pub fn auto_resolves(self) -> bool {
        self != AlertType::RegisterReset
    }
}

pub use meterstack_core::store::alerts::Severity;

/// A step of an alert's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// The condition began.
    Opened,
    /// The condition cleared.
    Resolved,
}

/// A record on `alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: the same alert keeps it from opening to resolution.
    pub alert_id: String,
    /// What happened to it.
    pub event: AlertEvent,
    /// The kind.
    #[serde(rename = "type")]
    pub kind: AlertType,
    /// How urgent.
    pub severity: Severity,
    /// The meter (absent for feeder alerts).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub meter_id: Option<String>,
    /// The feeder, when known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub feeder: Option<String>,
    /// When the condition began (reading time).
    pub start: DateTime<Utc>,
    /// When it cleared (on `resolved`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub end: Option<DateTime<Utc>>,
    /// The pipeline clock when the event was emitted.
    pub at: DateTime<Utc>,
    /// The values that triggered it.
    pub evidence: serde_json::Value,
}

/// Everything one step of the pipeline emits, in order.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outputs {
    /// To `readings.clean`.
    pub clean: Vec<CleanReading>,
    /// To `readings.rejected`.
    pub rejected: Vec<RejectedReading>,
    /// To `aggregates`.
    pub aggregates: Vec<Aggregate>,
    /// To `alerts`.
    pub alerts: Vec<Alert>,
    /// To `meter.commands`, with the meter id.
    pub commands: Vec<(String, CommandMessage)>,
}

impl Outputs {
    /// Whether nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.clean.is_empty()
            && self.rejected.is_empty()
            && self.aggregates.is_empty()
            && self.alerts.is_empty()
            && self.commands.is_empty()
    }
}
