//! Readings grouped by the raw zone's hour partitions: what every writer of raw files (the
//! sink, `meterstack backfill`, history imports) buffers before it encodes one Parquet file
//! per reading hour.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use meterstack_core::reading::Reading;

use super::encode_raw_readings;
use crate::Result;

const HOUR_US: i64 = 3_600_000_000;

/// The start (µs) of the hour partition `t` falls in.
pub fn hour_of(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros().div_euclid(HOUR_US) * HOUR_US
}

/// Readings and their receive times, by reading hour.
#[derive(Debug, Default)]
pub struct RawHours {
    hours: BTreeMap<i64, Rows>,
    readings: usize,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Rows {
    readings: Vec<Reading>,
    received_at: Vec<i64>,
}

/// One encoded raw file: its hour and its bytes.
#[derive(Debug)]
pub struct HourFile {
    /// The start of the reading hour (the partition).
    pub hour: DateTime<Utc>,
    /// Rows in it.
    pub rows: usize,
    /// The Parquet file.
    pub bytes: Bytes,
}

impl RawHours {
    /// Adds `reading`, received at `received_at`.
    pub fn push(&mut self, reading: Reading, received_at: DateTime<Utc>) {
        self.bytes += std::mem::size_of::<Reading>() + 8 + reading.meter_id.as_str().len();
        self.readings += 1;
        let rows = self.hours.entry(hour_of(reading.ts)).or_default();
        rows.readings.push(reading);
        rows.received_at.push(received_at.timestamp_micros());
    }

    /// Readings held.
    pub fn len(&self) -> usize {
        self.readings
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.readings == 0
    }

    /// Estimated bytes in memory.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// One raw-zone file per hour ([`encode_raw_readings`]: rows sorted by meter and time).
    pub fn encode(self) -> Result<Vec<HourFile>> {
        self.hours
            .into_iter()
            .map(|(hour, rows)| {
                Ok(HourFile {
                    hour: DateTime::from_timestamp_micros(hour).unwrap_or_default(),
                    rows: rows.readings.len(),
                    bytes: encode_raw_readings(rows.readings, rows.received_at)?,
                })
            })
            .collect()
    }
}
