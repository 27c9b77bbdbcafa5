//! History import: readings from a utility's old meter-data system, a CSV file (plain or gzip),
//! into the raw zone exactly as the sink writes it — the ETL then applies the same VEE as to
//! live data.
//!
//! The header names the form:
//! - **registers** (what meters send): `meter_id,ts,import_wh[,export_wh,power_w,voltage_v,current_a]`;
//! - **intervals**: `meter_id,interval_start,energy_wh[,export_wh]`. Each meter's intervals
//!   become registers from 0 at its first interval's start (a reading at each interval's end;
//!   a gap between intervals becomes a reading at the next start with the register unchanged,
//!   which the VEE judges as a hole). A meter's intervals must come in time order.
//!
//! `ts` and `interval_start` are RFC 3339 or integer epoch milliseconds, as on the wire; values
//! are checked as on the wire ([`meterstack_core::wire::check_field`]). Each bad row is named
//! by line number and reason and counted. A file with bad rows is imported except those rows
//! (`skip_bad`) or not at all: without `skip_bad` the whole file is checked before anything is
//! written. Imported readings count as received at the import.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path as FsPath;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use meterstack_core::reading::{MeterId, Reading};
use meterstack_core::wire::{FieldKind, check_field};
use object_store::ObjectStore;
use serde::Serialize;

use crate::paths::Table;
use crate::sink::put;
use crate::sink::raw::RawHours;

/// Why an import did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The header names neither form.
    #[error("header: {0}")]
    Header(String),
    /// The file has bad rows and `skip_bad` was not given: nothing was written.
    #[error("{count} bad rows, nothing imported (use --skip-bad to import the rest); first: {}", first.iter().map(|b| format!("line {}: {}", b.line, b.reason)).collect::<Vec<_>>().join("; "))]
    BadRows {
        /// How many.
        count: u64,
        /// The first few.
        first: Vec<BadRow>,
    },
    /// Writing the raw zone failed.
    #[error(transparent)]
    Lake(#[from] crate::Error),
    /// A worker of the import stopped before it finished.
    #[error("the import stopped: {0}")]
    Stopped(String),
}

/// A row that was not imported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadRow {
    /// Its line in the file (the header is line 1).
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// The two forms a file may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// Register readings, as meters send them.
    Registers,
    /// Interval energies.
    Intervals,
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Import the good rows of a file with bad ones.
    pub skip_bad: bool,
    /// The length of one interval (interval form).
    pub interval: TimeDelta,
    /// Readings further ahead of the import than this are bad rows.
    pub max_future_skew: TimeDelta,
    /// Buffered bytes before raw files are written.
    pub flush_bytes: usize,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            skip_bad: false,
            interval: TimeDelta::minutes(15),
            max_future_skew: TimeDelta::minutes(15),
            flush_bytes: 1 << 30,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImportReport {
    /// The file's form.
    pub form: Form,
    /// Data rows read.
    pub rows: u64,
    /// Readings written to the raw zone.
    pub readings: u64,
    /// Rows skipped as bad.
    pub bad_rows: u64,
    /// The first bad rows (at most 20).
    pub first_bad: Vec<BadRow>,
    /// Raw files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Readings per second.
    pub readings_per_s: f64,
}

/// Column positions of a file's form.
#[derive(Debug, Clone)]
pub struct Columns {
    form: Form,
    meter_id: usize,
    ts: usize,
    energy: usize,
    export_wh: Option<usize>,
    power_w: Option<usize>,
    voltage_v: Option<usize>,
    current_a: Option<usize>,
}

impl Columns {
    /// The form and columns a header names.
    pub fn from_header(header: &[&str]) -> Result<Self, ImportError> {
        let find = |name: &str| header.iter().position(|h| h.trim() == name);
        let known = [
            "meter_id",
            "ts",
            "import_wh",
            "export_wh",
            "power_w",
            "voltage_v",
            "current_a",
            "interval_start",
            "energy_wh",
        ];
        if let Some(unknown) = header.iter().find(|h| !known.contains(&h.trim())) {
            return Err(ImportError::Header(format!("unknown column {unknown:?}")));
        }
        let meter_id =
            find("meter_id").ok_or_else(|| ImportError::Header("no meter_id column".into()))?;
        let (form, ts, energy) = match (
            find("ts"),
            find("import_wh"),
            find("interval_start"),
            find("energy_wh"),
        ) {
            (Some(ts), Some(e), None, None) => (Form::Registers, ts, e),
            (None, None, Some(ts), Some(e)) => {
                if ["power_w", "voltage_v", "current_a"]
                    .iter()
                    .any(|c| find(c).is_some())
                {
                    return Err(ImportError::Header(
                        "an interval file has meter_id, interval_start, energy_wh and optionally export_wh".into(),
                    ));
                }
                (Form::Intervals, ts, e)
            }
            _ => {
                return Err(ImportError::Header(
                    "expected meter_id,ts,import_wh[,export_wh,power_w,voltage_v,current_a] (registers) or meter_id,interval_start,energy_wh[,export_wh] (intervals)".into(),
                ));
            }
        };
        Ok(Self {
            form,
            meter_id,
            ts,
            energy,
            export_wh: find("export_wh"),
            power_w: find("power_w"),
            voltage_v: find("voltage_v"),
            current_a: find("current_a"),
        })
    }

    /// The form.
    pub fn form(&self) -> Form {
        self.form
    }
}

/// A time as on the wire: RFC 3339, or integer epoch milliseconds; the error names `field`.
pub fn timestamp(field: &str, text: &str) -> Result<DateTime<Utc>, String> {
    let t = match text.parse::<i64>() {
        Ok(ms) => DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| format!("`{field}` {ms} is not epoch milliseconds in range"))?,
        Err(_) => DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| {
                format!("`{field}` {text:?} is neither RFC 3339 nor epoch milliseconds: {e}")
            })?,
    };
    // Microseconds: the precision of every timestamp in the lake.
    Ok(DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t))
}

/// Turns rows into readings; keeps each meter's register in the interval form.
#[derive(Debug)]
pub struct Rows {
    columns: Columns,
    interval: TimeDelta,
    latest: DateTime<Utc>,
    /// Per meter: the end of its last interval and its register there.
    registers: HashMap<String, (DateTime<Utc>, f64, f64)>,
}

impl Rows {
    /// Rows of `columns`' form; readings after `latest` are refused.
    pub fn new(columns: Columns, interval: TimeDelta, latest: DateTime<Utc>) -> Self {
        Self {
            columns,
            interval,
            latest,
            registers: HashMap::new(),
        }
    }

    /// The readings of one row (one for a register row; one or two for an interval row), or
    /// why it is bad.
    pub fn row(&mut self, fields: &[&str], out: &mut Vec<Reading>) -> Result<(), String> {
        let c = &self.columns;
        let get = |i: usize| fields.get(i).map(|s| s.trim()).unwrap_or("");
        let opt = |i: Option<usize>, kind: FieldKind, name: &str| -> Result<Option<f64>, String> {
            match i.map(get) {
                None | Some("") => Ok(None),
                Some(text) => {
                    let x: f64 = text
                        .parse()
                        .map_err(|_| format!("`{name}` {text:?} is not a number"))?;
                    check_field(name, x, kind).map(Some).map_err(|r| r.detail)
                }
            }
        };
        let meter_id = MeterId::new(get(c.meter_id)).map_err(|e| format!("meter_id: {e}"))?;
        let ts_name = match c.form {
            Form::Registers => "ts",
            Form::Intervals => "interval_start",
        };
        let ts = timestamp(ts_name, get(c.ts))?;
        let energy_name = match c.form {
            Form::Registers => "import_wh",
            Form::Intervals => "energy_wh",
        };
        let energy = opt(Some(c.energy), FieldKind::NonNegative, energy_name)?
            .ok_or_else(|| format!("`{energy_name}` is empty"))?;
        let export_wh = opt(c.export_wh, FieldKind::NonNegative, "export_wh")?;
        let reading = |ts: DateTime<Utc>, import_wh: f64, export_wh: Option<f64>| Reading {
            meter_id: meter_id.clone(),
            ts,
            import_wh,
            export_wh,
            power_w: None,
            voltage_v: None,
            current_a: None,
            seq: None,
        };
        match c.form {
            Form::Registers => {
                if ts > self.latest {
                    return Err(format!("`ts` {ts} is in the future"));
                }
                let mut r = reading(ts, energy, export_wh);
                r.power_w = opt(c.power_w, FieldKind::Number, "power_w")?;
                r.voltage_v = opt(c.voltage_v, FieldKind::NonNegative, "voltage_v")?;
                r.current_a = opt(c.current_a, FieldKind::Number, "current_a")?;
                out.push(r);
            }
            Form::Intervals => {
                let end = ts + self.interval;
                if end > self.latest {
                    return Err(format!("interval {ts} ends in the future"));
                }
                let has_export = export_wh.is_some();
                let (last_end, import, export) = match self.registers.get(meter_id.as_str()) {
                    Some(&(last_end, import, export)) => {
                        if ts < last_end {
                            return Err(format!(
                                "interval {ts} starts before the end of {}'s previous interval ({last_end}): a meter's intervals must come in time order",
                                meter_id.as_str()
                            ));
                        }
                        (Some(last_end), import, export)
                    }
                    None => (None, 0.0, 0.0),
                };
                let exp = |x: f64| has_export.then_some(x);
                if last_end != Some(ts) {
                    out.push(reading(ts, import, exp(export)));
                }
                let (import, export) = (import + energy, export + export_wh.unwrap_or(0.0));
                out.push(reading(end, import, exp(export)));
                self.registers
                    .insert(meter_id.as_str().to_owned(), (end, import, export));
            }
        }
        Ok(())
    }
}

/// Counts the bytes a reader has given (progress through a compressed file).
struct Counting<R> {
    inner: R,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// A CSV reader over `path` (gzip if it ends in `.gz`), headers left to the caller, counting
/// the file's bytes read into `read`.
pub fn open(
    path: &FsPath,
    read: Arc<std::sync::atomic::AtomicU64>,
) -> Result<csv::Reader<Box<dyn Read + Send>>, ImportError> {
    let io = |source| ImportError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let counted = Counting {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        read,
    };
    let reader: Box<dyn Read + Send> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(counted))
    } else {
        Box::new(counted)
    };
    Ok(csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader))
}

/// One pass over the file: each row's readings to `sink` (when given), bad rows counted.
fn pass(
    path: &FsPath,
    options: &ImportOptions,
    now: DateTime<Utc>,
    read: Arc<std::sync::atomic::AtomicU64>,
    mut sink: Option<&mut dyn FnMut(Vec<Reading>) -> Result<(), ImportError>>,
) -> Result<(Form, u64, u64, Vec<BadRow>), ImportError> {
    let mut reader = open(path, read)?;
    let io = |e: csv::Error| ImportError::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    };
    let mut record = csv::StringRecord::new();
    if !reader.read_record(&mut record).map_err(io)? {
        return Err(ImportError::Header("the file is empty".into()));
    }
    let header: Vec<&str> = record.iter().collect();
    let columns = Columns::from_header(&header)?;
    let form = columns.form();
    let mut rows = Rows::new(columns, options.interval, now + options.max_future_skew);
    let (mut n, mut bad, mut first) = (0u64, 0u64, Vec::new());
    let mut buf = Vec::with_capacity(8192);
    let mut line = 1u64;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                line = record.position().map_or(line + 1, |p| p.line());
                n += 1;
                let fields: Vec<&str> = record.iter().collect();
                if let Err(reason) = rows.row(&fields, &mut buf) {
                    bad += 1;
                    if first.len() < 20 {
                        first.push(BadRow { line, reason });
                    }
                }
            }
            Err(e) => {
                // A malformed line (bad UTF-8, a broken quote): a bad row, not the end.
                line += 1;
                n += 1;
                bad += 1;
                if first.len() < 20 {
                    first.push(BadRow {
                        line: e.position().map_or(line, |p| p.line()),
                        reason: e.to_string(),
                    });
                }
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(io(e));
                }
            }
        }
        if buf.len() >= 8192 {
            if let Some(sink) = sink.as_mut() {
                sink(std::mem::take(&mut buf))?;
            } else {
                buf.clear();
            }
        }
    }
    if let Some(sink) = sink.as_mut()
        && !buf.is_empty()
    {
        sink(buf)?;
    }
    Ok((form, n, bad, first))
}

/// Imports `path` into the raw zone of `store`; `progress` is told the file bytes read so far
/// and the file's size.
pub async fn import(
    path: &FsPath,
    store: Arc<dyn ObjectStore>,
    options: &ImportOptions,
    progress: impl Fn(u64, u64) + Send + Sync + 'static,
) -> Result<ImportReport, ImportError> {
    let started = std::time::Instant::now();
    let size = std::fs::metadata(path)
        .map_err(|source| ImportError::Io {
            path: path.display().to_string(),
            source,
        })?
        .len();
    let now = Utc::now();
    let progress = Arc::new(progress);
    // Without skip_bad: check every row before writing anything.
    if !options.skip_bad {
        let (path, options, read) = (
            path.to_owned(),
            options.clone(),
            Arc::new(std::sync::atomic::AtomicU64::new(0)),
        );
        let ticker = spawn_progress(read.clone(), size, progress.clone());
        let checked =
            tokio::task::spawn_blocking(move || pass(&path, &options, now, read, None)).await;
        ticker.abort();
        let (_, _, bad, first) = checked.map_err(|e| ImportError::Stopped(e.to_string()))??;
        if bad > 0 {
            return Err(ImportError::BadRows { count: bad, first });
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<crate::sink::raw::HourFile>>(2);
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let ticker = spawn_progress(read.clone(), size, progress.clone());
    let (path_owned, opts) = (path.to_owned(), options.clone());
    let parser = tokio::task::spawn_blocking(move || {
        let mut hours = RawHours::default();
        let mut readings = 0u64;
        let send =
            |batch: Vec<Reading>, hours: &mut RawHours, last: bool| -> Result<(), ImportError> {
                for r in batch {
                    hours.push(r, now);
                }
                if hours.bytes() >= opts.flush_bytes || (last && !hours.is_empty()) {
                    let files = std::mem::take(hours).encode()?;
                    tx.blocking_send(files)
                        .map_err(|_| ImportError::Stopped("the writer stopped".into()))?;
                }
                Ok(())
            };
        let mut sink = |batch: Vec<Reading>| {
            readings += batch.len() as u64;
            send(batch, &mut hours, false)
        };
        let (form, rows, bad, first) = pass(&path_owned, &opts, now, read, Some(&mut sink))?;
        send(Vec::new(), &mut hours, true)?;
        Ok::<_, ImportError>((form, rows, bad, first, readings))
    });
    let (mut files, mut bytes) = (0u64, 0u64);
    while let Some(batch) = rx.recv().await {
        for file in batch {
            bytes += file.bytes.len() as u64;
            put(&store, &Table::RawReadings.new_file(file.hour), file.bytes).await?;
            files += 1;
        }
    }
    ticker.abort();
    let (form, rows, bad, first, readings) = parser
        .await
        .map_err(|e| ImportError::Stopped(e.to_string()))??;
    (*progress)(size, size);
    let seconds = started.elapsed().as_secs_f64();
    Ok(ImportReport {
        form,
        rows,
        readings,
        bad_rows: bad,
        first_bad: first,
        files,
        bytes,
        seconds,
        readings_per_s: readings as f64 / seconds.max(1e-9),
    })
}

fn spawn_progress(
    read: Arc<std::sync::atomic::AtomicU64>,
    size: u64,
    progress: Arc<impl Fn(u64, u64) + Send + Sync + 'static>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            progress(read.load(std::sync::atomic::Ordering::Relaxed), size);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(header: &str) -> Rows {
        let h: Vec<&str> = header.split(',').collect();
        let latest = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        Rows::new(
            Columns::from_header(&h).unwrap_or_else(|e| panic!("{e}")),
            TimeDelta::minutes(15),
            latest,
        )
    }

    fn run(r: &mut Rows, line: &str) -> Result<Vec<Reading>, String> {
        let mut out = Vec::new();
        let fields: Vec<&str> = line.split(',').collect();
        r.row(&fields, &mut out).map(|()| out)
    }

    #[test]
    fn headers_name_the_form() {
        let form =
            |h: &str| Columns::from_header(&h.split(',').collect::<Vec<_>>()).map(|c| c.form());
        assert_eq!(form("meter_id,ts,import_wh").ok(), Some(Form::Registers));
        assert_eq!(
            form("ts,meter_id,import_wh,voltage_v").ok(),
            Some(Form::Registers)
        );
        assert_eq!(
            form("meter_id,interval_start,energy_wh,export_wh").ok(),
            Some(Form::Intervals)
        );
        assert!(form("meter_id,ts,energy_wh").is_err());
        assert!(form("meter_id,ts,import_wh,colour").is_err());
        assert!(form("meter_id,interval_start,energy_wh,voltage_v").is_err());
    }

    #[test]
    fn register_rows_are_checked_as_on_the_wire() {
        let mut r = rows("meter_id,ts,import_wh,export_wh,power_w,voltage_v,current_a");
        let got = run(&mut r, "m-1,2025-01-01T00:15:00Z,1000.5,,230,231.2,").unwrap_or_default();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (
                got[0].import_wh,
                got[0].power_w,
                got[0].voltage_v,
                got[0].export_wh
            ),
            (1000.5, Some(230.0), Some(231.2), None)
        );
        let ms = run(&mut r, "m-1,1735690500000,1001,,,,").unwrap_or_default();
        assert_eq!(ms[0].ts.to_rfc3339(), "2025-01-01T00:15:00+00:00");
        for (line, why) in [
            ("m-1,2025-01-01T00:15:00Z,-1,,,,", ">= 0"),
            ("m-1,2025-01-01T00:15:00Z,abc,,,,", "not a number"),
            ("m-1,2025-01-01T00:15:00Z,NaN,,,,", "finite"),
            ("m-1,yesterday,1,,,,", "neither RFC 3339"),
            ("m 1,2025-01-01T00:15:00Z,1,,,,", "meter_id"),
            ("m-1,2030-01-01T00:00:00Z,1,,,,", "future"),
            ("m-1,2025-01-01T00:15:00Z,,,,,", "empty"),
            ("m-1,2025-01-01T00:15:00Z,1,,,-3,", "voltage_v"),
        ] {
            let err = run(&mut r, line).err().unwrap_or_default();
            assert!(err.contains(why), "{line}: {err}");
        }
    }

    #[test]
    fn intervals_become_registers_that_sum_their_energy() {
        let mut r = rows("meter_id,interval_start,energy_wh,export_wh");
        let mut all = Vec::new();
        for line in [
            "a,2025-01-01T00:00:00Z,100,0",
            "b,2025-01-01T00:00:00Z,7,1",
            "a,2025-01-01T00:15:00Z,50,2",
            // A gap of one interval for a.
            "a,2025-01-01T00:45:00Z,25,0",
        ] {
            all.extend(run(&mut r, line).unwrap_or_default());
        }
        let a: Vec<(String, f64, Option<f64>)> = all
            .iter()
            .filter(|x| x.meter_id.as_str() == "a")
            .map(|x| (x.ts.format("%H:%M").to_string(), x.import_wh, x.export_wh))
            .collect();
        assert_eq!(
            a,
            [
                ("00:00".into(), 0.0, Some(0.0)),
                ("00:15".into(), 100.0, Some(0.0)),
                ("00:30".into(), 150.0, Some(2.0)),
                ("00:45".into(), 150.0, Some(2.0)),
                ("01:00".into(), 175.0, Some(2.0)),
            ]
        );
        let err = run(&mut r, "a,2025-01-01T00:30:00Z,1,0")
            .err()
            .unwrap_or_default();
        assert!(err.contains("time order"), "{err}");
    }
}
