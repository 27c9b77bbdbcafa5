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
mod restate;

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
use meterstack_core::component::{BoxError, Component, Context};
use meterstack_core::metrics as m;
use meterstack_core::reading::{MeterId, Reading};
use meterstack_core::records::{Aggregate, CleanReading, MeterWindow, Width};
use meterstack_core::store::SqlStore;
use meterstack_pipeline::output::Outputs;
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

use restate::{DayOut, day_start, drop_redeliveries, raw_rows, replay, route, trusted_batches};

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
    /// Where scheduled runs load the registry from.
    registry: Option<SqlStore>,
}

impl EtlConfig {
    /// The ETL over `store`, applying the rules of `pipeline`.
    pub fn build(&self, pipeline: &PipelineConfig, store: Arc<dyn ObjectStore>) -> Etl {
        Etl {
            config: self.clone(),
            pipeline: pipeline.clone(),
            store,
            registry: None,
        }
    }

    /// The ETL as the `etl` role's component: over the context's object store, loading the
    /// registry from its SQL store before each scheduled run.
    pub fn component(&self, pipeline: &PipelineConfig, ctx: &Context) -> Etl {
        Etl {
            registry: Some(ctx.store.clone()),
            ..self.build(pipeline, ctx.objects.clone())
        }
    }
}

#[async_trait::async_trait]
impl Component for Etl {
    fn name(&self) -> &'static str {
        "etl"
    }

    async fn run(self: Box<Self>, stop: CancellationToken) -> Result<(), BoxError> {
        Ok((*self).run(stop).await?)
    }
}

/// A readings row of the raw zone: the reading and when it arrived (µs).
type RawRow = (Reading, i64);

impl Etl {
    /// Runs on `config.schedule` until `shutdown`, loading the registry (if it has a store)
    /// each time. Failures are logged and counted; the next run tries again.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let mut ticker = tokio::time::interval(self.config.schedule);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            let once = async {
                let registry = match &self.registry {
                    Some(sql) => Registry::load(sql)
                        .await
                        .map_err(|e| Error::Config(format!("registry: {e}")))?,
                    None => Registry::default(),
                };
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
            // A raw reading file is retired only once it is restated: history imported or
            // uploaded long after its date still reaches the trusted zone (the next run's
            // restate reads it, then retention retires it).
            let restated =
                |f: &Path| table != Table::RawReadings || bookmark.files.contains(f.as_ref());
            let old: Vec<Path> = partitions
                .iter()
                .filter(|((date, _), _)| *date < cutoff)
                .flat_map(|(_, files)| files.iter().map(|f| f.location.clone()))
                .filter(|p| restated(p))
                .collect();
            if old.is_empty() {
                continue;
            }
            let dates: BTreeSet<NaiveDate> = partitions
                .iter()
                .filter(|((d, _), files)| {
                    *d < cutoff && files.iter().any(|f| restated(&f.location))
                })
                .map(|((d, _), _)| *d)
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

#[cfg(test)]
mod tests;
