//! Temperature import: `meterstack import temperatures FILE.csv[.gz]`, a CSV with header
//! `area,ts,temperature_c` (columns in any order) — an area is a feeder, or `*` for every
//! meter whose feeder has no series of its own; `ts` is RFC 3339 or epoch milliseconds;
//! readings within an hour are averaged into it. Observations and a weather service's
//! forecasts alike: the newest import of an hour replaces the older one, so a daily forecast
//! import keeps the hours ahead current.
//!
//! As with readings, each bad row is named by line and reason and counted, and a file with bad
//! rows is imported except those rows (`skip_bad`) or not at all.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use meterstack_core::store::temperatures::Temperature;
use meterstack_core::store::{SqlStore, StoreError};
use meterstack_lake::import::{BadRow, ImportError, open, timestamp};
use serde::Serialize;

use crate::series::{hour_of, start_of};

/// The coldest and warmest temperatures accepted, °C (beyond any recorded on Earth).
pub const RANGE_C: std::ops::RangeInclusive<f64> = -90.0..=60.0;

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WeatherError {
    /// The file could not be read, or has bad rows and `skip_bad` was not given.
    #[error(transparent)]
    File(#[from] ImportError),
    /// Writing to the SQL store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeatherReport {
    /// Data rows read.
    pub rows: u64,
    /// Hours written (area × hour).
    pub hours: u64,
    /// Areas written.
    pub areas: Vec<String>,
    /// Rows skipped as bad.
    pub bad_rows: u64,
    /// The first bad rows (at most 20).
    pub first_bad: Vec<BadRow>,
}

/// The file's rows as hourly means per area, and the rows that were bad.
pub fn read(path: &Path) -> Result<(Vec<Temperature>, WeatherReport), ImportError> {
    let mut reader = open(path, Arc::default())?;
    let mut records = reader.records();
    let header = match records.next() {
        Some(Ok(h)) => h,
        Some(Err(e)) => return Err(ImportError::Header(e.to_string())),
        None => return Err(ImportError::Header("the file is empty".into())),
    };
    let column = |name: &str| {
        header.iter().position(|h| h.trim() == name).ok_or_else(|| {
            ImportError::Header(format!(
                "no column `{name}`: a temperature file's header is area,ts,temperature_c"
            ))
        })
    };
    let (area_i, ts_i, temp_i) = (column("area")?, column("ts")?, column("temperature_c")?);
    let mut hours: BTreeMap<(String, i64), (f64, u32)> = BTreeMap::new();
    let mut report = WeatherReport {
        rows: 0,
        hours: 0,
        areas: Vec::new(),
        bad_rows: 0,
        first_bad: Vec::new(),
    };
    for (i, record) in records.enumerate() {
        report.rows += 1;
        let line = i as u64 + 2;
        let row = record.map_err(|e| e.to_string()).and_then(|r| {
            let field = |i: usize, name: &str| {
                r.get(i)
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| format!("`{name}` is missing"))
            };
            let area = field(area_i, "area")?;
            if area.len() > 128 {
                return Err("`area` is longer than 128 bytes".into());
            }
            let ts = timestamp("ts", field(ts_i, "ts")?)?;
            let text = field(temp_i, "temperature_c")?;
            let c: f64 = text
                .parse()
                .map_err(|_| format!("`temperature_c` {text:?} is not a number"))?;
            if !RANGE_C.contains(&c) {
                return Err(format!(
                    "`temperature_c` {c} is outside {} … {} °C",
                    RANGE_C.start(),
                    RANGE_C.end()
                ));
            }
            Ok((area.to_owned(), hour_of(ts), c))
        });
        match row {
            Ok((area, hour, c)) => {
                let e = hours.entry((area, hour)).or_default();
                (e.0, e.1) = (e.0 + c, e.1 + 1);
            }
            Err(reason) => {
                report.bad_rows += 1;
                if report.first_bad.len() < 20 {
                    report.first_bad.push(BadRow { line, reason });
                }
            }
        }
    }
    let rows: Vec<Temperature> = hours
        .into_iter()
        .map(|((area, hour), (sum, n))| Temperature {
            area,
            ts: start_of(hour),
            celsius: sum / f64::from(n),
        })
        .collect();
    report.hours = rows.len() as u64;
    report.areas = rows.iter().map(|t| t.area.clone()).collect();
    report.areas.dedup();
    Ok((rows, report))
}

/// Imports the file at `path` into `store`: all of it, or with `skip_bad` all but its bad rows.
pub async fn import(
    path: &Path,
    store: &SqlStore,
    skip_bad: bool,
) -> Result<WeatherReport, WeatherError> {
    let (rows, report) = read(path)?;
    if report.bad_rows > 0 && !skip_bad {
        return Err(ImportError::BadRows {
            count: report.bad_rows,
            first: report.first_bad,
        }
        .into());
    }
    store.upsert_temperatures(&rows).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_is_averaged_per_area_and_hour_and_its_bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "ts,temperature_c,area\n\
             2026-01-05T00:00:00Z,-2.0,*\n\
             2026-01-05T00:30:00Z,-1.0,*\n\
             1767574800000,4.5,F1\n\
             2026-01-05T02:00:00Z,warm,*\n\
             ,3.0,*\n\
             2026-01-05T03:00:00Z,75,F1\n\
             2026-01-05T04:00:00+01:00,0.5,*\n",
        )
        .unwrap();
        let (rows, report) = read(&path).unwrap();
        assert_eq!((report.rows, report.hours, report.bad_rows), (7, 3, 3));
        assert_eq!(report.areas, vec!["*", "F1"]);
        let lines: Vec<u64> = report.first_bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![5, 6, 7], "{:?}", report.first_bad);
        assert!(report.first_bad[0].reason.contains("not a number"));
        assert!(report.first_bad[1].reason.contains("`ts` is missing"));
        assert!(report.first_bad[2].reason.contains("outside"));
        // 2026-01-05T04:00+01:00 is 03:00 UTC: its own hour, after the averaged midnight.
        let star: Vec<(i64, f64)> = rows
            .iter()
            .filter(|t| t.area == "*")
            .map(|t| (hour_of(t.ts), t.celsius))
            .collect();
        let h0 = hour_of("2026-01-05T00:00:00Z".parse().unwrap());
        assert_eq!(star, vec![(h0, -1.5), (h0 + 3, 0.5)]);
        assert_eq!(
            rows.iter().find(|t| t.area == "F1").map(|t| t.celsius),
            Some(4.5)
        );
        // No such column: the header is named.
        std::fs::write(&path, "area,time,temp\n*,1,2\n").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("no column `ts`"), "{e}");
    }
}
