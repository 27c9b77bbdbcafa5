//! `aggregates`: meters' windows and feeders' completeness.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::Rule;

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
