//! The lake's tables, their schemas, and the one place object paths are built.
//!
//! Layout (Hive-style partitions, so DuckDB, Spark, Trino, Athena and DataFusion read it as is):
//!
//! ```text
//! raw/readings/date=2026-11-23/hour=10/<uuid v7>.parquet   decoded readings, by reading time (UTC)
//! raw/rejected/date=2026-11-23/hour=10/<uuid v7>.parquet   rejects, by receive time (UTC)
//! trusted/readings/date=2026-11-23/data.parquet            interval energy with quality flags
//! trusted/readings_hourly/date=2026-11-23/data.parquet     hourly windows per meter
//! trusted/readings_daily/date=2026-11-23/data.parquet      daily windows per meter
//! state/…                                                  checkpoints and ETL bookmarks (not tables)
//! ```
//!
//! A trusted partition is one object, replaced whole (atomically) when the ETL restates it.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{DateTime, NaiveDate, Timelike, Utc};
use meterstack_core::reading;
use object_store::path::Path;
use uuid::Uuid;

/// Name of the Hive date partition column every table has.
pub const DATE_PARTITION: &str = "date";
/// Name of the Hive hour partition column of the raw zone.
pub const HOUR_PARTITION: &str = "hour";
/// File name of a trusted partition's single object.
pub const TRUSTED_FILE: &str = "data.parquet";

/// A table of the lake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Decoded readings as they arrived.
    RawReadings,
    /// Rejected messages and readings, with the reason.
    RejectedReadings,
    /// Trusted interval energy per meter, deduplicated and validated.
    Readings,
    /// Trusted hourly windows per meter.
    ReadingsHourly,
    /// Trusted daily windows per meter.
    ReadingsDaily,
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

/// Zones of the lake.
pub const RAW_ZONE: &str = "raw";
/// The trusted zone.
pub const TRUSTED_ZONE: &str = "trusted";

impl Table {
    /// Every table.
    pub const ALL: [Table; 5] = [
        Table::RawReadings,
        Table::RejectedReadings,
        Table::Readings,
        Table::ReadingsHourly,
        Table::ReadingsDaily,
    ];

    /// The SQL name.
    pub fn name(self) -> &'static str {
        match self {
            Table::RawReadings => "raw_readings",
            Table::RejectedReadings => "rejected_readings",
            Table::Readings => "readings",
            Table::ReadingsHourly => "readings_hourly",
            Table::ReadingsDaily => "readings_daily",
        }
    }

    /// The directory holding the table's files.
    pub fn prefix(self) -> Path {
        match self {
            Table::RawReadings => Path::from("raw/readings"),
            Table::RejectedReadings => Path::from("raw/rejected"),
            Table::Readings => Path::from("trusted/readings"),
            Table::ReadingsHourly => Path::from("trusted/readings_hourly"),
            Table::ReadingsDaily => Path::from("trusted/readings_daily"),
        }
    }

    /// The zone (also the label used in metrics).
    pub fn zone(self) -> &'static str {
        match self {
            Table::RawReadings | Table::RejectedReadings => RAW_ZONE,
            _ => TRUSTED_ZONE,
        }
    }

    /// The Hive partition columns, outermost first.
    pub fn partitions(self) -> &'static [&'static str] {
        match self.zone() {
            RAW_ZONE => &[DATE_PARTITION, HOUR_PARTITION],
            _ => &[DATE_PARTITION],
        }
    }

    /// The directory of the date partition of `date`.
    pub fn date_dir(self, date: NaiveDate) -> Path {
        self.prefix()
            .join(format!("{DATE_PARTITION}={}", date.format("%Y-%m-%d")))
    }

    /// A new raw file in the hour partition of `at`.
    pub fn new_file(self, at: DateTime<Utc>) -> Path {
        self.date_dir(at.date_naive())
            .join(format!("{HOUR_PARTITION}={:02}", at.hour()))
            .join(format!("{}.parquet", Uuid::now_v7()))
    }

    /// The one object of a trusted table's partition of `date`.
    pub fn trusted_file(self, date: NaiveDate) -> Path {
        self.date_dir(date).join(TRUSTED_FILE)
    }

    /// The (date, hour) partition a raw file's path names; `None` for other paths.
    pub fn partition_of(path: &Path) -> Option<(NaiveDate, Option<u32>)> {
        let mut date = None;
        let mut hour = None;
        for part in path.parts() {
            let part = part.as_ref();
            if let Some(d) = part.strip_prefix("date=") {
                date = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
            } else if let Some(h) = part.strip_prefix("hour=") {
                hour = h.parse().ok().filter(|h| *h < 24);
            }
        }
        Some((date?, hour))
    }

    /// The schema of the files (without partition columns).
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<[SchemaRef; 5]> = OnceLock::new();
        let all = SCHEMAS.get_or_init(|| Table::ALL.map(build_schema));
        all[self as usize].clone()
    }
}

/// Columns of the trusted tables.
pub mod trusted_columns {
    /// The meter.
    pub const METER_ID: &str = "meter_id";
    /// Start of the interval, hour or day (inclusive).
    pub const TS: &str = "ts";
    /// Imported energy in the window, Wh.
    pub const ENERGY_WH: &str = "energy_wh";
    /// Exported energy in the window, Wh.
    pub const EXPORT_WH: &str = "export_wh";
    /// Import register at the end of the interval, Wh (null when estimated).
    pub const IMPORT_REGISTER_WH: &str = "import_register_wh";
    /// Reported power at the end of the interval, W.
    pub const POWER_W: &str = "power_w";
    /// Reported voltage at the end of the interval, V.
    pub const VOLTAGE_V: &str = "voltage_v";
    /// `measured`, `estimated` or `suspect`.
    pub const QUALITY: &str = "quality";
    /// The VEE rule behind the flag, if any.
    pub const RULE: &str = "rule";
    /// When the reading that closed the interval arrived.
    pub const RECEIVED_AT: &str = "received_at";
    /// Highest average demand of a measured interval, W.
    pub const PEAK_DEMAND_W: &str = "peak_demand_w";
    /// Highest reported power, W.
    pub const MAX_POWER_W: &str = "max_power_w";
    /// Lowest reported voltage, V.
    pub const MIN_VOLTAGE_V: &str = "min_voltage_v";
    /// Highest reported voltage, V.
    pub const MAX_VOLTAGE_V: &str = "max_voltage_v";
    /// Intervals in the window.
    pub const EXPECTED_INTERVALS: &str = "expected_intervals";
    /// Intervals measured.
    pub const MEASURED_INTERVALS: &str = "measured_intervals";
    /// Intervals estimated.
    pub const ESTIMATED_INTERVALS: &str = "estimated_intervals";
}

fn build_schema(table: Table) -> SchemaRef {
    use trusted_columns as t;
    let ts = || reading::timestamp_type();
    let f64_ = |name: &str, nullable: bool| Field::new(name, DataType::Float64, nullable);
    let window_fields = || {
        vec![
            Field::new(t::METER_ID, DataType::Utf8, false),
            Field::new(t::TS, ts(), false),
            f64_(t::ENERGY_WH, false),
            f64_(t::EXPORT_WH, false),
            f64_(t::PEAK_DEMAND_W, true),
            f64_(t::MAX_POWER_W, true),
            f64_(t::MIN_VOLTAGE_V, true),
            f64_(t::MAX_VOLTAGE_V, true),
            Field::new(t::EXPECTED_INTERVALS, DataType::UInt32, false),
            Field::new(t::MEASURED_INTERVALS, DataType::UInt32, false),
            Field::new(t::ESTIMATED_INTERVALS, DataType::UInt32, false),
        ]
    };
    let fields = match table {
        Table::RawReadings => {
            let mut fields: Vec<Field> = reading::schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new(RECEIVED_AT, ts(), false));
            fields
        }
        Table::RejectedReadings => {
            use rejected_columns::*;
            vec![
                Field::new(RECEIVED_AT, ts(), false),
                Field::new(SOURCE_TOPIC, DataType::Utf8, false),
                Field::new(METER_ID, DataType::Utf8, true),
                Field::new(REASON, DataType::Utf8, false),
                Field::new(DETAIL, DataType::Utf8, false),
                Field::new(ELEMENT_INDEX, DataType::UInt32, true),
                Field::new(PAYLOAD, DataType::Binary, false),
                Field::new(PAYLOAD_BYTES, DataType::UInt64, false),
            ]
        }
        Table::Readings => vec![
            Field::new(t::METER_ID, DataType::Utf8, false),
            Field::new(t::TS, ts(), false),
            f64_(t::ENERGY_WH, false),
            f64_(t::EXPORT_WH, false),
            f64_(t::IMPORT_REGISTER_WH, true),
            f64_(t::POWER_W, true),
            f64_(t::VOLTAGE_V, true),
            Field::new(t::QUALITY, DataType::Utf8, false),
            Field::new(t::RULE, DataType::Utf8, true),
            Field::new(t::RECEIVED_AT, ts(), true),
        ],
        Table::ReadingsHourly | Table::ReadingsDaily => window_fields(),
    };
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_land_in_hive_partitions() {
        let at = DateTime::parse_from_rfc3339("2026-11-23T07:45:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let path = Table::RawReadings.new_file(at).to_string();
        assert!(
            path.starts_with("raw/readings/date=2026-11-23/hour=07/"),
            "{path}"
        );
        assert!(path.ends_with(".parquet"));
        assert_ne!(
            Table::RawReadings.new_file(at),
            Table::RawReadings.new_file(at)
        );
        assert_eq!(
            Table::partition_of(&Table::RawReadings.new_file(at)),
            Some((at.date_naive(), Some(7)))
        );
        assert_eq!(
            Table::ReadingsDaily
                .trusted_file(at.date_naive())
                .to_string(),
            "trusted/readings_daily/date=2026-11-23/data.parquet"
        );
        assert_eq!(
            Table::partition_of(&Path::from("raw/readings/x.parquet")),
            None
        );
    }
}
