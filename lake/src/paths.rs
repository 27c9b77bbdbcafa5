//! The lake's tables, their schemas, and the one place object paths are built.
//!
//! Layout (Hive-style date partitions, so DuckDB, Spark and DataFusion read it as is):
//!
//! ```text
//! raw/readings/date=2026-11-23/<uuid v7>.parquet   decoded readings, partitioned by reading date (UTC)
//! raw/rejected/date=2026-11-23/<uuid v7>.parquet   rejects, partitioned by receive date (UTC)
//! ```

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::NaiveDate;
use meterstack_core::reading;
use object_store::path::Path;
use uuid::Uuid;

/// Name of the Hive partition column every table has.
pub const DATE_PARTITION: &str = "date";

/// A table of the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Decoded readings as they arrived.
    RawReadings,
    /// Rejected messages and readings, with the reason.
    RejectedReadings,
}

/// Columns of `rejected_readings`.
pub mod rejected_columns {
    /// When the message arrived.
    pub const RECEIVED_AT: &str = "received_at";
    /// The MQTT topic it arrived on.
    pub const SOURCE_TOPIC: &str = "source_topic";
    /// The meter id from the topic, if the topic was valid.
    pub const METER_ID: &str = "meter_id";
    /// The stable reason code.
    pub const REASON: &str = "reason";
    /// The human-readable explanation.
    pub const DETAIL: &str = "detail";
    /// Position of the rejected reading in its array; null when the whole message was rejected.
    pub const ELEMENT_INDEX: &str = "element_index";
    /// The payload, cut to `lake.raw_sink.rejected_payload_max_bytes`.
    pub const PAYLOAD: &str = "payload";
    /// The payload's full size in bytes.
    pub const PAYLOAD_BYTES: &str = "payload_bytes";
}

/// Extra column of `raw_readings`: when the message arrived.
pub const RECEIVED_AT: &str = "received_at";

impl Table {
    /// Every table.
    pub const ALL: [Table; 2] = [Table::RawReadings, Table::RejectedReadings];

    /// The SQL name.
    pub fn name(self) -> &'static str {
        match self {
            Table::RawReadings => "raw_readings",
            Table::RejectedReadings => "rejected_readings",
        }
    }

    /// The directory holding the table's files.
    pub fn prefix(self) -> Path {
        match self {
            Table::RawReadings => Path::from("raw/readings"),
            Table::RejectedReadings => Path::from("raw/rejected"),
        }
    }

    /// The zone label used in metrics.
    pub fn zone(self) -> &'static str {
        "raw"
    }

    /// A new file of the table in the partition of `date`.
    pub fn new_file(self, date: NaiveDate) -> Path {
        self.prefix()
            .join(format!("{DATE_PARTITION}={}", date.format("%Y-%m-%d")))
            .join(format!("{}.parquet", Uuid::now_v7()))
    }

    /// The schema of the files (without the `date` partition column).
    pub fn schema(self) -> SchemaRef {
        static RAW: OnceLock<SchemaRef> = OnceLock::new();
        static REJECTED: OnceLock<SchemaRef> = OnceLock::new();
        match self {
            Table::RawReadings => RAW
                .get_or_init(|| {
                    let mut fields: Vec<Field> = reading::schema()
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone())
                        .collect();
                    fields.push(Field::new(RECEIVED_AT, reading::timestamp_type(), false));
                    Arc::new(Schema::new(fields))
                })
                .clone(),
            Table::RejectedReadings => REJECTED
                .get_or_init(|| {
                    use rejected_columns::*;
                    Arc::new(Schema::new(vec![
                        Field::new(RECEIVED_AT, reading::timestamp_type(), false),
                        Field::new(SOURCE_TOPIC, DataType::Utf8, false),
                        Field::new(METER_ID, DataType::Utf8, true),
                        Field::new(REASON, DataType::Utf8, false),
                        Field::new(DETAIL, DataType::Utf8, false),
                        Field::new(ELEMENT_INDEX, DataType::UInt32, true),
                        Field::new(PAYLOAD, DataType::Binary, false),
                        Field::new(PAYLOAD_BYTES, DataType::UInt64, false),
                    ]))
                })
                .clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_in_hive_date_partitions() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 23).expect("valid date");
        let path = Table::RawReadings.new_file(date).to_string();
        assert!(path.starts_with("raw/readings/date=2026-11-23/"), "{path}");
        assert!(path.ends_with(".parquet"));
        assert_ne!(
            Table::RawReadings.new_file(date),
            Table::RawReadings.new_file(date)
        );
        assert!(
            Table::RejectedReadings
                .new_file(date)
                .to_string()
                .starts_with("raw/rejected/date=2026-11-23/")
        );
    }
}
