//! The ETL from the raw to the trusted zone (the Glue of meterstack).
//!
//! A run:
//! 1. **Retention**: retires partitions older than each table's retention (see 6).
//! 2. **Bookmark**: lists the raw zone and compares it with `state/etl/bookmark.json` (the raw
//!    objects already processed, like Glue job bookmarks). A new object restates the date of
//!    its readings, plus the day before when it holds the first hour (its first interval
//!    closes that day) and the day after when it holds the last hour (that day's first
//!    interval starts from it).
//! 3. **Restatement**: each run of consecutive restated dates is recomputed from all raw
//!    readings of those dates, with the whole day before as context: readings are
//!    deduplicated by (meter, timestamp) — the first received wins — and replayed in time order
//!    through the pipeline's own [`Processor`] (VEE, register→interval energy, windows; one
//!    implementation). Its interval, hourly and daily windows become the trusted partitions
//!    `readings`, `readings_hourly` and `readings_daily` of each date, one object each,
//!    replaced atomically. The result depends only on the set of raw readings, so late data
//!    restates exactly its dates, replays add nothing and a second run changes nothing.
//! 4. The bookmark is saved only after every partition is written; a run that stops midway
//!    is redone whole by the next.
//! 5. **Compaction**: raw hour partitions whose hour ended `compact_after` ago and hold
//!    several files are merged into one sorted file; exact redeliveries (same meter, time,
//!    receive time and register) are dropped. The merged file is bookmarked before the
//!    originals are retired, so a stop in between only causes one redundant restatement.
//! 6. **Deferred deletes**: files compaction merged or retention expired are *retired*:
//!    recorded in the bookmark with a time `delete_grace` later, left out of every later
//!    run, and deleted by the first run after that time. A query that listed them before
//!    (queries take at most `http.query.timeout`, which `delete_grace` is at least) still
//!    reads them. Meanwhile `raw_readings` shows a compacted hour twice — the raw zone is
//!    at-least-once anyway; the trusted zone is never affected.

mod config;

pub use config::{EtlConfig, RetentionConfig};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, Float64Array, StringArray, TimestampMicrosecondArray, UInt32Array, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Days, NaiveDate, Utc};
use futures::{StreamExt, TryStreamExt};
use meterstack_core::metrics as m;
use meterstack_core::reading::{MeterId, Reading};
use meterstack_core::store::SqlStore;
use meterstack_pipeline::output::{Aggregate, CleanReading, MeterWindow, Outputs, Width};
use meterstack_pipeline::{PipelineConfig, Processor, Registry, State};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::paths::Table;
use crate::sink::raw::encode_raw_readings;
use crate::sink::{encode_parquet, put};
use crate::{Error, Result};

/// Where the bookmark lives in the lake's object store.
pub const BOOKMARK: &str = "state/etl/bookmark.json";

const DAY_US: i64 = 86_400_000_000;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EtlReport {
    /// Raw objects not seen by an earlier run.
    pub new_files: usize,
    /// Dates whose trusted partitions were rewritten.
    pub dates_restated: Vec<NaiveDate>,
    /// Raw readings read (restated dates and their context days).
    pub readings_read: u64,
    /// Readings dropped as duplicates of one (meter, timestamp), counted each time a day is
    /// read (a day is read for itself and as its neighbours' context).
    pub duplicates: u64,
    /// Rows written to `readings`, `readings_hourly`, `readings_daily`.
    pub rows_written: [u64; 3],
    /// Raw files merged by compaction.
    pub files_compacted: usize,
    /// Partitions retired by retention.
    pub partitions_expired: usize,
    /// Retired files deleted now that their grace passed.
    pub files_deleted: usize,
    /// Raw files that could not be decoded (skipped, left in place, logged).
    pub unreadable_files: usize,
    /// Wall time of the run, seconds.
    pub seconds: f64,
}

/// Progress of a run, for a progress bar: dates done of dates to do, readings so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Dates restated so far.
    pub done: usize,
    /// Dates to restate in this run.
    pub total: usize,
    /// Raw readings read so far.
    pub readings: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Bookmark {
    version: u32,
    /// Raw objects processed (paths).
    files: BTreeSet<String>,
    /// Files merged or expired, with the time (Unix seconds) from which they may be deleted.
    #[serde(default)]
    retired: BTreeMap<String, i64>,
}

/// The ETL, ready to run.
#[derive(Debug, Clone)]
pub struct Etl {
    config: EtlConfig,
    pipeline: PipelineConfig,
    store: Arc<dyn ObjectStore>,
}

impl EtlConfig {
    /// The ETL over `store`, applying the rules of `pipeline`.
    pub fn build(&self, pipeline: &PipelineConfig, store: Arc<dyn ObjectStore>) -> Etl {
        Etl {
            config: self.clone(),
            pipeline: pipeline.clone(),
            store,
        }
    }
}

/// A readings row of the raw zone: the reading and when it arrived (µs).
type RawRow = (Reading, i64);

/// One date's trusted output, keyed (meter, start µs) so rows come out sorted.
#[derive(Debug, Default)]
struct DayOut {
    windows: [BTreeMap<(String, i64), MeterWindow>; 3],
    clean: HashMap<(String, i64), CleanReading>,
}

impl Etl {
    /// Runs on `config.schedule` until `shutdown`, loading the registry from `sql` each time.
    /// Failures are logged and counted; the next run tries again.
    pub async fn run(self, sql: SqlStore, shutdown: CancellationToken) -> Result<()> {
        let mut ticker = tokio::time::interval(self.config.schedule);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            let once = async {
                let registry = Registry::load(&sql)
                    .await
                    .map_err(|e| Error::Config(format!("registry: {e}")))?;
                self.run_once(Arc::new(registry), Utc::now(), &|_| {}).await
            };
            // A run stopped midway is redone whole by the next: writes are atomic and the
            // bookmark is saved last.
            let result = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                r = once => r,
            };
            match result {
                Ok(report) => {
                    metrics::counter!(m::ETL_RUNS, "outcome" => "ok").increment(1);
                    if report.new_files > 0 || report.partitions_expired > 0 {
                        info!(
                            new_files = report.new_files,
                            dates = report.dates_restated.len(),
                            readings = report.readings_read,
                            duplicates = report.duplicates,
                            compacted = report.files_compacted,
                            expired = report.partitions_expired,
                            seconds = report.seconds,
                            "etl run"
                        );
                    }
                }
                Err(e) => {
                    metrics::counter!(m::ETL_RUNS, "outcome" => "error").increment(1);
                    error!(error = %e, "etl run failed; the next run retries");
                }
            }
        }
    }

    /// One run at wall time `now` (retention and compaction are relative to it).
    pub async fn run_once(
        &self,
        registry: Arc<Registry>,
        now: DateTime<Utc>,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Result<EtlReport> {
        let started = Instant::now();
        let mut report = EtlReport::default();
        let mut bookmark = self.load_bookmark().await?;

        report.files_deleted = self.delete_due(now, &mut bookmark).await?;
        report.partitions_expired = self.expire(now, &mut bookmark).await?;

        let raw = self.list(Table::RawReadings, &bookmark).await?;
        let dates_with_data: BTreeSet<NaiveDate> = raw.keys().map(|(d, _)| *d).collect();
        let mut restate = BTreeSet::new();
        for ((date, _), files) in &raw {
            let new = files
                .iter()
                .filter(|f| !bookmark.files.contains(f.location.as_ref()))
                .count();
            if new == 0 {
                continue;
            }
            report.new_files += new;
            // A date's result depends on the days on either side of it.
            restate.insert(*date);
            for n in [
                date.checked_sub_days(Days::new(1)),
                date.checked_add_days(Days::new(1)),
            ]
            .into_iter()
            .flatten()
            {
                if dates_with_data.contains(&n) {
                    restate.insert(n);
                }
            }
        }

        let total = restate.len();
        for (i, date) in restate.iter().enumerate() {
            self.restate(&registry, &raw, *date, &mut report).await?;
            progress(Progress {
                done: i + 1,
                total,
                readings: report.readings_read,
            });
        }
        report.dates_restated = restate.into_iter().collect();
        // Everything listed is reflected now (unreadable files included: they are logged
        // and would fail the same way again).
        for files in raw.values() {
            for f in files {
                bookmark.files.insert(f.location.to_string());
            }
        }
        self.save_bookmark(&bookmark).await?;

        for table in [Table::RawReadings, Table::RejectedReadings] {
            let partitions = if table == Table::RawReadings {
                raw.clone()
            } else {
                self.list(table, &bookmark).await?
            };
            report.files_compacted += self.compact(table, &partitions, now, &mut bookmark).await?;
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    async fn load_bookmark(&self) -> Result<Bookmark> {
        match self.store.get(&Path::from(BOOKMARK)).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                serde_json::from_slice(&bytes).map_err(|e| {
                    Error::State(format!(
                        "the ETL bookmark {BOOKMARK} is damaged ({e}); delete it to restate the whole trusted zone"
                    ))
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Bookmark {
                version: 1,
                ..Bookmark::default()
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn save_bookmark(&self, bookmark: &Bookmark) -> Result<()> {
        let bytes = serde_json::to_vec(bookmark).map_err(|e| Error::State(e.to_string()))?;
        put(&self.store, &Path::from(BOOKMARK), bytes.into()).await
    }

    /// Parquet objects of `table` that are not retired, by (date, hour) partition; trusted
    /// tables use hour 0.
    async fn list(
        &self,
        table: Table,
        bookmark: &Bookmark,
    ) -> Result<BTreeMap<(NaiveDate, u32), Vec<ObjectMeta>>> {
        let prefix = table.prefix();
        let objects: Vec<ObjectMeta> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut out: BTreeMap<(NaiveDate, u32), Vec<ObjectMeta>> = BTreeMap::new();
        for o in objects {
            if !o.location.as_ref().ends_with(".parquet")
                || bookmark.retired.contains_key(o.location.as_ref())
            {
                continue;
            }
            if let Some((date, hour)) = Table::partition_of(&o.location) {
                out.entry((date, hour.unwrap_or(0))).or_default().push(o);
            }
        }
        for files in out.values_mut() {
            files.sort_by(|a, b| a.location.cmp(&b.location));
        }
        Ok(out)
    }

    /// Retires partitions past retention; returns how many.
    async fn expire(&self, now: DateTime<Utc>, bookmark: &mut Bookmark) -> Result<usize> {
        let today = now.date_naive();
        let r = &self.config.retention;
        let mut expired = 0;
        for table in Table::ALL {
            let days = match table {
                Table::RawReadings => r.raw_days,
                Table::RejectedReadings => r.rejected_days,
                _ => r.trusted_days,
            };
            if days == 0 {
                continue;
            }
            let Some(cutoff) = today.checked_sub_days(Days::new(u64::from(days))) else {
                continue;
            };
            let partitions = self.list(table, bookmark).await?;
            let old: Vec<Path> = partitions
                .iter()
                .filter(|((date, _), _)| *date < cutoff)
                .flat_map(|(_, files)| files.iter().map(|f| f.location.clone()))
                .collect();
            if old.is_empty() {
                continue;
            }
            let dates: BTreeSet<NaiveDate> = partitions
                .keys()
                .filter(|(d, _)| *d < cutoff)
                .map(|(d, _)| *d)
                .collect();
            self.retire(&old, now, bookmark);
            metrics::counter!(m::ETL_PARTITIONS_EXPIRED, "table" => table.name())
                .increment(dates.len() as u64);
            info!(table = table.name(), partitions = dates.len(), before = %cutoff, "retention: partitions retired");
            expired += dates.len();
        }
        Ok(expired)
    }

    /// Marks `paths` for deletion `delete_grace` after `now`.
    fn retire(&self, paths: &[Path], now: DateTime<Utc>, bookmark: &mut Bookmark) {
        let due = now.timestamp() + self.config.delete_grace.as_secs() as i64;
        for p in paths {
            bookmark.retired.entry(p.to_string()).or_insert(due);
        }
    }

    /// Deletes the retired files whose grace has passed; returns how many.
    async fn delete_due(&self, now: DateTime<Utc>, bookmark: &mut Bookmark) -> Result<usize> {
        let due: Vec<Path> = bookmark
            .retired
            .iter()
            .filter(|(_, at)| **at <= now.timestamp())
            .map(|(p, _)| Path::from(p.as_str()))
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let stream = futures::stream::iter(due.clone()).map(Ok).boxed();
        let results: Vec<object_store::Result<Path>> =
            self.store.delete_stream(stream).collect().await;
        for r in results {
            match r {
                // Deleted by a run that stopped before saving its bookmark.
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for p in &due {
            bookmark.retired.remove(p.as_ref());
            bookmark.files.remove(p.as_ref());
        }
        metrics::counter!(m::ETL_FILES_DELETED).increment(due.len() as u64);
        Ok(due.len())
    }

    /// Reads every raw reading of `date`.
    async fn read_day(
        &self,
        raw: &BTreeMap<(NaiveDate, u32), Vec<ObjectMeta>>,
        date: NaiveDate,
        report: &mut EtlReport,
    ) -> Result<Vec<RawRow>> {
        let mut rows = Vec::new();
        for hour in 0..24 {
            for file in raw.get(&(date, hour)).into_iter().flatten() {
                match self.read_readings(&file.location).await {
                    Ok(got) => rows.extend(got),
                    Err(e @ (Error::Parquet(_) | Error::Arrow(_) | Error::State(_))) => {
                        metrics::counter!(m::ETL_UNREADABLE_FILES).increment(1);
                        report.unreadable_files += 1;
                        error!(path = %file.location, error = %e, "raw file unreadable; skipped");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(rows)
    }

    async fn read_batches(&self, path: &Path) -> Result<Vec<RecordBatch>> {
        // Raw files are one flush or one compacted hour: read whole.
        let bytes = self.store.get(path).await?.bytes().await?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
        Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
    }

    async fn read_readings(&self, path: &Path) -> Result<Vec<RawRow>> {
        let mut rows = Vec::new();
        for batch in self.read_batches(path).await? {
            rows.extend(raw_rows(&batch)?);
        }
        Ok(rows)
    }

    /// Recomputes `date` from the raw readings of the day before, the date and the day
    /// after, and writes its trusted partitions. The result is a function of those three days
    /// only, so it does not depend on which other dates a run restates.
    async fn restate(
        &self,
        registry: &Arc<Registry>,
        raw: &BTreeMap<(NaiveDate, u32), Vec<ObjectMeta>>,
        date: NaiveDate,
        report: &mut EtlReport,
    ) -> Result<()> {
        let dt = self.pipeline.interval.as_micros() as i64;
        let mut rows = Vec::new();
        for d in [
            date.checked_sub_days(Days::new(1)),
            Some(date),
            date.checked_add_days(Days::new(1)),
        ]
        .into_iter()
        .flatten()
        {
            rows.extend(self.read_day(raw, d, report).await?);
        }
        report.readings_read += rows.len() as u64;
        metrics::counter!(m::ETL_READINGS_READ).increment(rows.len() as u64);
        let processor = Processor::new(self.pipeline.clone(), registry.clone(), State::default());
        let (out, duplicates) = tokio::task::spawn_blocking(move || replay(processor, rows))
            .await
            .map_err(|e| Error::State(format!("etl worker: {e}")))?;
        report.duplicates += duplicates;
        metrics::counter!(m::ETL_DUPLICATES).increment(duplicates);
        let day = route(out, dt, date);
        self.write_day(date, day, dt, report).await
    }

    async fn write_day(
        &self,
        date: NaiveDate,
        day: DayOut,
        dt: i64,
        report: &mut EtlReport,
    ) -> Result<()> {
        let batches = trusted_batches(&day, dt)?;
        for (i, (table, batch)) in batches.into_iter().enumerate() {
            report.rows_written[i] += batch.num_rows() as u64;
            let bytes = encode_parquet(&batch, table)?;
            put(&self.store, &table.trusted_file(date), bytes).await?;
            metrics::counter!(m::ETL_PARTITIONS_WRITTEN, "table" => table.name()).increment(1);
        }
        Ok(())
    }

    /// Merges the files of closed hour partitions; returns how many files were merged.
    async fn compact(
        &self,
        table: Table,
        partitions: &BTreeMap<(NaiveDate, u32), Vec<ObjectMeta>>,
        now: DateTime<Utc>,
        bookmark: &mut Bookmark,
    ) -> Result<usize> {
        let closed_before = now.timestamp_micros() - self.config.compact_after.as_micros() as i64;
        let mut merged = 0;
        for ((date, hour), files) in partitions {
            let hour_end = day_start(*date) + i64::from(*hour + 1) * 3_600_000_000;
            if files.len() < 2 || hour_end > closed_before {
                continue;
            }
            let mut batches = Vec::new();
            let mut readable = Vec::new();
            for f in files {
                match self.read_batches(&f.location).await {
                    Ok(b) => {
                        batches.extend(b);
                        readable.push(f.location.clone());
                    }
                    Err(e @ (Error::Parquet(_) | Error::Arrow(_))) => {
                        // Left in place: a damaged file is never deleted by compaction.
                        warn!(path = %f.location, error = %e, "compaction skips an unreadable file");
                    }
                    Err(e) => return Err(e),
                }
            }
            if readable.len() < 2 {
                continue;
            }
            let bytes = match table {
                Table::RawReadings => {
                    let mut rows = Vec::new();
                    for b in &batches {
                        rows.extend(raw_rows(b)?);
                    }
                    let (readings, received) = drop_redeliveries(rows).into_iter().unzip();
                    encode_raw_readings(readings, received)?
                }
                _ => {
                    let all = arrow::compute::concat_batches(&table.schema(), &batches)?;
                    let order = arrow::compute::sort_to_indices(all.column(0), None, None)?;
                    let columns = all
                        .columns()
                        .iter()
                        .map(|c| arrow::compute::take(c, &order, None))
                        .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
                    encode_parquet(&RecordBatch::try_new(table.schema(), columns)?, table)?
                }
            };
            let at = DateTime::from_timestamp_micros(hour_end - 1).unwrap_or_default();
            let path = table.new_file(at);
            put(&self.store, &path, bytes).await?;
            // Bookmarked with the originals retired: a stop before the save costs one
            // restatement (and leaves the hour to merge again).
            if table == Table::RawReadings {
                bookmark.files.insert(path.to_string());
            }
            self.retire(&readable, now, bookmark);
            self.save_bookmark(bookmark).await?;
            metrics::counter!(m::ETL_FILES_COMPACTED, "table" => table.name())
                .increment(readable.len() as u64);
            merged += readable.len();
        }
        Ok(merged)
    }
}

fn day_start(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp_micros())
}

/// Replays deduplicated rows through `processor` in time order and closes it.
fn replay(mut processor: Processor, rows: Vec<RawRow>) -> (Outputs, u64) {
    // The replay is not the live pipeline: keep it out of the pipeline's metrics.
    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        let (rows, duplicates) = dedup(rows);
        let mut out = Outputs::default();
        for (reading, received) in rows {
            let received = DateTime::from_timestamp_micros(received).unwrap_or_default();
            processor.replay(reading, received, &mut out);
        }
        processor.close(&mut out);
        (out, duplicates)
    })
}

/// Time order for the replay, and one reading per (meter, timestamp): the first received
/// wins (ties: the smaller register, so the result never depends on file order).
fn dedup(mut rows: Vec<RawRow>) -> (Vec<RawRow>, u64) {
    rows.sort_by(|(a, ra), (b, rb)| {
        (a.ts, a.meter_id.as_str(), ra)
            .cmp(&(b.ts, b.meter_id.as_str(), rb))
            .then(a.import_wh.total_cmp(&b.import_wh))
    });
    let before = rows.len();
    rows.dedup_by(|(later, _), (kept, _)| later.ts == kept.ts && later.meter_id == kept.meter_id);
    let duplicates = (before - rows.len()) as u64;
    (rows, duplicates)
}

/// Drops exact redeliveries (same meter, time, receive time and registers) from raw rows.
fn drop_redeliveries(mut rows: Vec<RawRow>) -> Vec<RawRow> {
    rows.sort_by(|(a, ra), (b, rb)| {
        (a.meter_id.as_str(), a.ts, ra)
            .cmp(&(b.meter_id.as_str(), b.ts, rb))
            .then(a.import_wh.total_cmp(&b.import_wh))
    });
    rows.dedup_by(|(a, ra), (b, rb)| a == b && ra == rb);
    rows
}

/// The outputs of a replay that belong to `date` (windows by their start; readings with
/// the interval they close). Later revisions replace earlier ones.
fn route(out: Outputs, dt: i64, date: NaiveDate) -> DayOut {
    let (from, to) = (day_start(date), day_start(date) + DAY_US);
    let mut day = DayOut::default();
    for a in out.aggregates {
        let Aggregate::MeterWindow(w) = a else {
            continue;
        };
        let start = w.start.timestamp_micros();
        if !(from..to).contains(&start) {
            continue;
        }
        let i = match w.window {
            Width::Interval => 0,
            Width::Hour => 1,
            Width::Day => 2,
        };
        day.windows[i].insert((w.meter_id.clone(), start), w);
    }
    for c in out.clean {
        let end = c.ts.timestamp_micros();
        if (from..to).contains(&(end - dt)) {
            day.clean.insert((c.meter_id.clone(), end), c);
        }
    }
    day
}

/// Raw readings rows of a `raw_readings` batch.
fn raw_rows(batch: &RecordBatch) -> Result<Vec<RawRow>> {
    use meterstack_core::reading::columns as c;
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::State(format!("raw file without column {name}")))
    };
    fn cast<'a, T: 'static>(a: &'a ArrayRef, name: &str) -> Result<&'a T> {
        a.as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| Error::State(format!("raw column {name} has the wrong type")))
    }
    let (ids, ts, import) = (col(c::METER_ID)?, col(c::TS)?, col(c::IMPORT_WH)?);
    let ids = cast::<StringArray>(ids, c::METER_ID)?;
    let ts = cast::<TimestampMicrosecondArray>(ts, c::TS)?;
    let import = cast::<Float64Array>(import, c::IMPORT_WH)?;
    let (export, power, voltage, current, seq, received) = (
        col(c::EXPORT_WH)?,
        col(c::POWER_W)?,
        col(c::VOLTAGE_V)?,
        col(c::CURRENT_A)?,
        col(c::SEQ)?,
        col(crate::paths::RECEIVED_AT)?,
    );
    let export = cast::<Float64Array>(export, c::EXPORT_WH)?;
    let power = cast::<Float64Array>(power, c::POWER_W)?;
    let voltage = cast::<Float64Array>(voltage, c::VOLTAGE_V)?;
    let current = cast::<Float64Array>(current, c::CURRENT_A)?;
    let seq = cast::<UInt64Array>(seq, c::SEQ)?;
    let received = cast::<TimestampMicrosecondArray>(received, crate::paths::RECEIVED_AT)?;
    let opt = |a: &Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    let mut rows = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let Ok(meter_id) = MeterId::new(ids.value(i)) else {
            continue;
        };
        rows.push((
            Reading {
                meter_id,
                ts: DateTime::from_timestamp_micros(ts.value(i)).unwrap_or_default(),
                import_wh: import.value(i),
                export_wh: opt(export, i),
                power_w: opt(power, i),
                voltage_v: opt(voltage, i),
                current_a: opt(current, i),
                seq: seq.is_valid(i).then(|| seq.value(i)),
            },
            received.value(i),
        ));
    }
    Ok(rows)
}

/// The three trusted batches of one date.
fn trusted_batches(day: &DayOut, dt: i64) -> Result<[(Table, RecordBatch); 3]> {
    let ts_array = |v: Vec<i64>| TimestampMicrosecondArray::from(v).with_timezone("UTC");
    // readings: one row per interval, with the reading that closed it.
    let intervals = &day.windows[0];
    let mut cols: (Vec<&str>, Vec<i64>, Vec<f64>, Vec<f64>) = Default::default();
    let mut register = Vec::new();
    let mut power = Vec::new();
    let mut voltage = Vec::new();
    let mut quality = Vec::new();
    let mut rule: Vec<Option<&str>> = Vec::new();
    let mut received = Vec::new();
    for ((meter, start), w) in intervals {
        let measured = w.measured_intervals > 0;
        let clean = measured
            .then(|| day.clean.get(&(meter.clone(), start + dt)))
            .flatten();
        cols.0.push(meter);
        cols.1.push(*start);
        cols.2.push(w.energy_wh);
        cols.3.push(w.export_wh);
        register.push(clean.map(|c| c.import_wh));
        power.push(clean.and_then(|c| c.power_w));
        voltage.push(clean.and_then(|c| c.voltage_v));
        match clean {
            Some(c) => {
                quality.push(c.quality.name());
                rule.push(c.rule.map(|r| r.name()));
                received.push(Some(c.received_at.timestamp_micros()));
            }
            None => {
                quality.push(if measured { "measured" } else { "estimated" });
                rule.push(w.rules.first().map(|r| r.name()));
                received.push(None);
            }
        }
    }
    let readings = RecordBatch::try_new(
        Table::Readings.schema(),
        vec![
            Arc::new(StringArray::from(cols.0)),
            Arc::new(ts_array(cols.1)),
            Arc::new(Float64Array::from(cols.2)),
            Arc::new(Float64Array::from(cols.3)),
            Arc::new(Float64Array::from(register)),
            Arc::new(Float64Array::from(power)),
            Arc::new(Float64Array::from(voltage)),
            Arc::new(StringArray::from(quality)),
            Arc::new(StringArray::from(rule)),
            Arc::new(TimestampMicrosecondArray::from(received).with_timezone("UTC")),
        ],
    )?;
    let window_batch = |table: Table, windows: &BTreeMap<(String, i64), MeterWindow>| {
        let ws: Vec<&MeterWindow> = windows.values().collect();
        let f = |get: fn(&MeterWindow) -> f64| -> ArrayRef {
            Arc::new(ws.iter().map(|w| get(w)).collect::<Float64Array>())
        };
        let o = |get: fn(&MeterWindow) -> Option<f64>| -> ArrayRef {
            Arc::new(ws.iter().map(|w| get(w)).collect::<Float64Array>())
        };
        let u = |get: fn(&MeterWindow) -> u32| -> ArrayRef {
            Arc::new(ws.iter().map(|w| get(w)).collect::<UInt32Array>())
        };
        RecordBatch::try_new(
            table.schema(),
            vec![
                Arc::new(
                    ws.iter()
                        .map(|w| Some(w.meter_id.as_str()))
                        .collect::<StringArray>(),
                ),
                Arc::new(ts_array(
                    ws.iter().map(|w| w.start.timestamp_micros()).collect(),
                )),
                f(|w| w.energy_wh),
                f(|w| w.export_wh),
                o(|w| w.peak_demand_w),
                o(|w| w.max_power_w),
                o(|w| w.min_voltage_v),
                o(|w| w.max_voltage_v),
                u(|w| w.expected_intervals),
                u(|w| w.measured_intervals),
                u(|w| w.estimated_intervals),
            ],
        )
    };
    Ok([
        (Table::Readings, readings),
        (
            Table::ReadingsHourly,
            window_batch(Table::ReadingsHourly, &day.windows[1])?,
        ),
        (
            Table::ReadingsDaily,
            window_batch(Table::ReadingsDaily, &day.windows[2])?,
        ),
    ])
}

#[cfg(test)]
mod tests;
