//! The canonical meter reading and its Arrow schema — defined once, used by every stage.

use std::fmt;
use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest meter id accepted, in bytes.
pub const METER_ID_MAX_LEN: usize = 64;

/// A meter's identity: 1–64 characters of `A-Z a-z 0-9 . _ -`.
///
/// The character set keeps ids safe in MQTT topics, object paths, SQL literals and logs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct MeterId(String);

/// Why a string is not a valid [`MeterId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterIdError {
    /// The id is empty.
    #[error("meter id is empty")]
    Empty,
    /// The id is longer than [`METER_ID_MAX_LEN`].
    #[error("meter id is longer than {METER_ID_MAX_LEN} bytes")]
    TooLong,
    /// The id contains a character outside `A-Z a-z 0-9 . _ -`.
    #[error("meter id contains {0:?}; allowed are A-Z a-z 0-9 . _ -")]
    BadChar(char),
}

impl MeterId {
    /// Validates `id` as a meter id.
    pub fn new(id: &str) -> Result<Self, MeterIdError> {
        if id.is_empty() {
            return Err(MeterIdError::Empty);
        }
        if id.len() > METER_ID_MAX_LEN {
            return Err(MeterIdError::TooLong);
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(MeterIdError::BadChar(bad));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MeterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MeterId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        MeterId::new(&s).map_err(serde::de::Error::custom)
    }
}

/// One reading of one meter at one instant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The meter that took the reading.
    pub meter_id: MeterId,
    /// When the meter took it, in UTC, truncated to microseconds.
    pub ts: DateTime<Utc>,
    /// Cumulative import (consumption) register, Wh.
    pub import_wh: f64,
    /// Cumulative export (generation) register, Wh, for meters that have one.
    pub export_wh: Option<f64>,
    /// Instantaneous active power, W.
    pub power_w: Option<f64>,
    /// RMS voltage, V.
    pub voltage_v: Option<f64>,
    /// RMS current, A.
    pub current_a: Option<f64>,
    /// The meter's own sequence number for this reading.
    pub seq: Option<u64>,
}

/// Column names of the reading schema, in order.
pub mod columns {
    /// Meter id.
    pub const METER_ID: &str = "meter_id";
    /// Reading timestamp.
    pub const TS: &str = "ts";
    /// Import register.
    pub const IMPORT_WH: &str = "import_wh";
    /// Export register.
    pub const EXPORT_WH: &str = "export_wh";
    /// Active power.
    pub const POWER_W: &str = "power_w";
    /// Voltage.
    pub const VOLTAGE_V: &str = "voltage_v";
    /// Current.
    pub const CURRENT_A: &str = "current_a";
    /// Sequence number.
    pub const SEQ: &str = "seq";
}

/// The Arrow type of every timestamp meterstack stores: microseconds in UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow schema of [`Reading`].
pub fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new(columns::METER_ID, DataType::Utf8, false),
                Field::new(columns::TS, timestamp_type(), false),
                Field::new(columns::IMPORT_WH, DataType::Float64, false),
                Field::new(columns::EXPORT_WH, DataType::Float64, true),
                Field::new(columns::POWER_W, DataType::Float64, true),
                Field::new(columns::VOLTAGE_V, DataType::Float64, true),
                Field::new(columns::CURRENT_A, DataType::Float64, true),
                Field::new(columns::SEQ, DataType::UInt64, true),
            ]))
        })
        .clone()
}

/// The columns of `readings`, in [`schema`] order.
pub fn to_columns(readings: &[Reading]) -> Vec<ArrayRef> {
    let f64_col = |get: fn(&Reading) -> Option<f64>| -> ArrayRef {
        Arc::new(readings.iter().map(get).collect::<Float64Array>())
    };
    vec![
        Arc::new(
            readings
                .iter()
                .map(|r| Some(r.meter_id.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            readings
                .iter()
                .map(|r| Some(r.ts.timestamp_micros()))
                .collect::<TimestampMicrosecondArray>()
                .with_timezone("UTC"),
        ),
        f64_col(|r| Some(r.import_wh)),
        f64_col(|r| r.export_wh),
        f64_col(|r| r.power_w),
        f64_col(|r| r.voltage_v),
        f64_col(|r| r.current_a),
        Arc::new(readings.iter().map(|r| r.seq).collect::<UInt64Array>()),
    ]
}

/// `readings` as one Arrow record batch with [`schema`].
pub fn to_record_batch(readings: &[Reading]) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(schema(), to_columns(readings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_ids_are_validated() {
        assert!(MeterId::new("m-001").is_ok());
        assert!(MeterId::new("DE.0001_a-b").is_ok());
        assert_eq!(MeterId::new(""), Err(MeterIdError::Empty));
        assert_eq!(MeterId::new("a/b"), Err(MeterIdError::BadChar('/')));
        assert_eq!(MeterId::new("m 1"), Err(MeterIdError::BadChar(' ')));
        assert_eq!(MeterId::new("'; drop"), Err(MeterIdError::BadChar('\'')));
        assert_eq!(MeterId::new(&"x".repeat(65)), Err(MeterIdError::TooLong));
    }

    #[test]
    fn record_batch_matches_schema() {
        let ts = DateTime::parse_from_rfc3339("2026-11-23T10:15:00.123456Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid timestamp");
        let reading = Reading {
            meter_id: MeterId::new("m-1").expect("valid id"),
            ts,
            import_wh: 10.5,
            export_wh: None,
            power_w: Some(1.0),
            voltage_v: Some(230.0),
            current_a: None,
            seq: Some(7),
        };
        let batch = to_record_batch(&[reading.clone(), reading]).expect("batch");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), schema());
        let ts_col = batch
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .expect("timestamp column");
        assert_eq!(ts_col.value(0), ts.timestamp_micros());
    }
}
