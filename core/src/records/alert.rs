//! `alerts`: alert lifecycle events, as the pipeline raises them and the store, the webhooks and
//! the live feed take them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::UnknownName;

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
    /// Hourly consumption stayed outside the forecast's p10–p90 band (the `ml` role).
    ConsumptionForecastDeviation,
}

impl AlertType {
    /// Every type.
    pub const ALL: [AlertType; 11] = [
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
        AlertType::ConsumptionForecastDeviation,
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
            AlertType::ConsumptionForecastDeviation => "consumption_forecast_deviation",
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
            | AlertType::ZeroConsumption
            | AlertType::ConsumptionForecastDeviation => Severity::Minor,
            AlertType::ConsumptionAnomaly => Severity::Warning,
        }
    }

    /// Whether the alert resolves itself when its condition clears (a reset is an event an
    /// operator must look at; it stays open until acknowledged and resolved).
    pub fn auto_resolves(self) -> bool {
        self != AlertType::RegisterReset
    }

    /// The stable id of an alert of this type about `who` (a meter id, `feeder-<name>` or
    /// `fleet`) whose condition began at `start`.
    pub fn alert_id(self, who: &str, start: DateTime<Utc>) -> String {
        format!("{}:{who}:{}", self.name(), start.format("%Y%m%dT%H%M%SZ"))
    }
}

/// A step of an alert's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// The condition began.
    Opened,
    /// The condition cleared.
    Resolved,
}

impl AlertEvent {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Resolved => "resolved",
        }
    }
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

impl Alert {
    /// Who it is about: the meter, else the feeder (the key of its bus record).
    pub fn subject(&self) -> Option<&str> {
        self.meter_id.as_deref().or(self.feeder.as_deref())
    }
}

/// Alert severity, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Many customers affected.
    Critical,
    /// Grid quality, tamper or billing at risk.
    Major,
    /// One meter needs a look.
    Minor,
    /// Informational.
    Warning,
}

impl Severity {
    /// Every severity, most urgent first.
    pub const ALL: [Severity; 4] = [Self::Critical, Self::Major, Self::Minor, Self::Warning];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Major => "major",
            Self::Minor => "minor",
            Self::Warning => "warning",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> Result<Self, UnknownName> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownName {
                what: "severity",
                expected: "critical, major, minor or warning",
                got: s.to_owned(),
            })
    }
}
