//! SQL over the lake (the Athena of meterstack), with DataFusion.
//!
//! Each lake table is a DataFusion listing table over its directory in the object store, with
//! its Hive partition columns (`date`, and `hour` in the raw zone), so filters on them prune
//! whole directories and row-group and page statistics prune by meter (files are sorted by
//! meter and time). Files are listed at every query (no listing cache), so a file just written
//! is visible to the next query. `meters` (the registry) and `alerts` (the alert lifecycle)
//! read the SQL store ([`store_tables`]).
//!
//! Queries are read-only and bounded:
//! - DDL, DML (`INSERT`, `COPY`), `SET` and other statements are refused at planning; URL
//!   tables (`SELECT * FROM '/etc/passwd'`) are off, and nothing reaches the local filesystem
//!   (spilling to disk is disabled too);
//! - each query runs in its own memory pool of `memory_limit_bytes`: a plan needing more
//!   fails with "resources exhausted" instead of growing the process;
//! - at most `max_concurrent` queries run at once; the others wait for a slot within their
//!   timeout;
//! - `timeout` covers waiting, planning, running and streaming the result;
//! - a result stops at `max_rows` rows or `max_result_bytes` encoded bytes.

pub mod format;
mod snapshot;
pub mod store_tables;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use datafusion::common::ParamValues;
use datafusion::common::ScalarValue;
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use meterstack_core::store::SqlStore;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use url::Url;

use crate::paths::Table;
use crate::{Error, Result};
pub use format::{Encoder, Format};

/// The URL under which the lake's store is registered with the query engine.
const LAKE_URL: &str = "lake://zones";

/// Section `[http.query]`: the bounds of every SQL query (over HTTP and `meterstack sql`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Longest a query may take, from waiting for a slot to the last byte of its result.
    #[serde(with = "meterstack_core::duration")]
    pub timeout: Duration,
    /// Most rows one result may carry; beyond it the result is cut off with an error.
    pub max_rows: usize,
    /// Most encoded bytes one result may carry.
    pub max_result_bytes: u64,
    /// Memory one query may hold for joins, aggregates and sorts, bytes.
    pub memory_limit_bytes: usize,
    /// Queries running at once; more wait for a slot.
    pub max_concurrent: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_rows: 1_000_000,
            max_result_bytes: 256 * 1024 * 1024,
            memory_limit_bytes: 512 * 1024 * 1024,
            max_concurrent: 4,
        }
    }
}

impl QueryConfig {
    /// Checks values a configuration file could get wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.timeout.is_zero() {
            return Err("http.query.timeout must be positive".into());
        }
        if self.max_concurrent == 0 || self.max_rows == 0 || self.max_result_bytes == 0 {
            return Err(
                "http.query.max_concurrent, max_rows and max_result_bytes must be positive".into(),
            );
        }
        if self.memory_limit_bytes < 16 * 1024 * 1024 {
            return Err("http.query.memory_limit_bytes must be at least 16 MiB".into());
        }
        Ok(())
    }
}

/// Turns JSON query parameters into DataFusion's: an array for `$1, $2, …`, an object for
/// `$name`. Strings, numbers, booleans and null are accepted.
pub fn params_from_json(value: &serde_json::Value) -> Result<Option<ParamValues>> {
    fn scalar(v: &serde_json::Value) -> Result<ScalarValue> {
        use serde_json::Value as V;
        Ok(match v {
            V::Null => ScalarValue::Null,
            V::Bool(b) => ScalarValue::Boolean(Some(*b)),
            V::Number(n) => match n.as_i64() {
                Some(i) => ScalarValue::Int64(Some(i)),
                None => ScalarValue::Float64(n.as_f64()),
            },
            V::String(s) => ScalarValue::Utf8(Some(s.clone())),
            other => {
                return Err(Error::Params(format!(
                    "a parameter must be a string, number, boolean or null, not {other}"
                )));
            }
        })
    }
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Array(items) => Ok(Some(ParamValues::from(
            items.iter().map(scalar).collect::<Result<Vec<_>>>()?,
        ))),
        serde_json::Value::Object(map) => Ok(Some(ParamValues::from(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), scalar(v)?)))
                .collect::<Result<HashMap<String, ScalarValue>>>()?,
        ))),
        _ => Err(Error::Params(
            "`params` must be an array ($1, $2, …) or an object ($name)".into(),
        )),
    }
}

/// The lake's query engine.
#[derive(Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    config: QueryConfig,
    sql_store: Option<SqlStore>,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Lake {
    /// The engine over `store`, with `config`'s bounds.
    pub fn new(store: Arc<dyn ObjectStore>, config: QueryConfig) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        Ok(Self {
            store,
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            sql_store: None,
        })
    }

    /// Adds the tables kept in the SQL store `store`: `meters`, `alerts`, `forecasts` and
    /// `temperatures`.
    pub fn with_store(mut self, store: SqlStore) -> Self {
        self.sql_store = Some(store);
        self
    }

    /// The bounds.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// A fresh session with its own memory pool and every table registered.
    fn session(&self) -> Result<SessionContext> {
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(
                self.config.memory_limit_bytes,
            )))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.add_optimizer_rule(Arc::new(crate::utc::UtcArithmetic));
        let base = Url::parse(LAKE_URL).map_err(|e| Error::Config(e.to_string()))?;
        ctx.register_object_store(&base, Arc::new(snapshot::Snapshot::new(self.store.clone())));
        for table in Table::ALL {
            let url = ListingTableUrl::parse(format!("{LAKE_URL}/{}/", table.prefix()))?;
            let partitions = table
                .partitions()
                .iter()
                .map(|p| ((*p).to_owned(), DataType::Utf8))
                .collect();
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(partitions);
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(table.schema());
            ctx.register_table(table.name(), Arc::new(ListingTable::try_new(config)?))?;
        }
        if let Some(store) = &self.sql_store {
            use store_tables::{Alerts, Bills, Forecasts, Meters, StoreTable, Temperatures};
            let meters: Arc<dyn TableProvider> = Arc::new(StoreTable::<Meters>::new(store.clone()));
            ctx.register_table("meters", meters)?;
            let alerts: Arc<dyn TableProvider> = Arc::new(StoreTable::<Alerts>::new(store.clone()));
            ctx.register_table("alerts", alerts)?;
            let forecasts: Arc<dyn TableProvider> =
                Arc::new(StoreTable::<Forecasts>::new(store.clone()));
            ctx.register_table("forecasts", forecasts)?;
            let temperatures: Arc<dyn TableProvider> =
                Arc::new(StoreTable::<Temperatures>::new(store.clone()));
            ctx.register_table("temperatures", temperatures)?;
            let bills: Arc<dyn TableProvider> = Arc::new(StoreTable::<Bills>::new(store.clone()));
            ctx.register_table("bills", bills)?;
        }
        Ok(ctx)
    }

    /// Plans `sql` as a read-only query with `params`. Errors here are the caller's (syntax,
    /// unknown table or column, a statement that is not a query, a missing parameter).
    pub async fn plan(&self, sql: &str, params: Option<ParamValues>) -> Result<DataFrame> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = self.session()?.sql_with_options(sql, options).await?;
        Ok(match params {
            Some(p) => frame.with_param_values(p)?,
            None => frame,
        })
    }

    /// Runs `sql` within the bounds, its result encoded as `format`.
    pub async fn query(
        &self,
        sql: &str,
        params: Option<ParamValues>,
        format: Format,
    ) -> Result<ResultStream> {
        let deadline = Instant::now() + self.config.timeout;
        let timeout = || Error::Timeout(meterstack_core::duration::format(self.config.timeout));
        let permit =
            match tokio::time::timeout_at(deadline, self.slots.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(Error::State("query slots closed".into())),
                Err(_) => return Err(Error::Busy(self.config.max_concurrent)),
            };
        // A query whose files changed under it before its first batch (see [`snapshot`]) runs
        // once more on a fresh listing; the caller sees nothing of it.
        let mut retried = false;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.plan(sql, params.clone()))
                .await
                .map_err(|_| timeout())??;
            let schema = Arc::new(frame.schema().as_arrow().clone());
            let mut batches = execute_apart(frame)?;
            let first = tokio::time::timeout_at(deadline, batches.recv())
                .await
                .map_err(|_| timeout())?;
            if let Some(Err(e @ Error::Changed(_))) = &first
                && !retried
            {
                tracing::info!(error = %e, "the lake changed under a query; running it again");
                retried = true;
                continue;
            }
            return Ok(ResultStream {
                encoder: Some(Encoder::new(format, schema)?),
                first: Some(first),
                batches,
                _slot: permit,
                deadline,
                rows: 0,
                bytes: 0,
                config: self.config.clone(),
            });
        }
    }
}

/// Runs `frame` on a thread and runtime of its own, so that an operator that computes for
/// long without yielding (a hash aggregate over a cross join) never holds up the server or
/// the query's deadline. Batches come back over a small channel; when the receiver is gone
/// (deadline, client gone) the thread stops at its next batch and frees its memory. The
/// query's slot is the receiver's: a timed-out query frees its slot at once, even while its
/// thread still finishes a long computation (its memory stays within its own pool).
fn execute_apart(frame: DataFrame) -> Result<mpsc::Receiver<Result<RecordBatch>>> {
    let (tx, rx) = mpsc::channel(2);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::Builder::new()
        .name("meterstack-query".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("meterstack-query")
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Error::State(format!("query runtime: {e}"))));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut stream: SendableRecordBatchStream = match frame.execute_stream().await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(engine_error(e))).await;
                        return;
                    }
                };
                while let Some(batch) = stream.next().await {
                    if tx.send(batch.map_err(engine_error)).await.is_err() {
                        return;
                    }
                }
            });
        })
        .map_err(|e| Error::State(format!("cannot start a query thread: {e}")))?;
    Ok(rx)
}

/// An error of a running query, with a file that was listed and then deleted or replaced
/// (compaction, retention, restatement; see [`snapshot`]) told apart as [`Error::Changed`]:
/// a retry succeeds.
pub fn engine_error(e: DataFusionError) -> Error {
    fn changed(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(e);
        while let Some(e) = next {
            if let Some(
                object_store::Error::NotFound { .. } | object_store::Error::Precondition { .. },
            ) = e.downcast_ref()
            {
                return true;
            }
            next = e.source();
        }
        false
    }
    if changed(&e) {
        Error::Changed(e.to_string())
    } else {
        Error::Query(e)
    }
}

/// A running query's result, encoded chunk by chunk.
pub struct ResultStream {
    /// The first batch (or the end, or an error), received before the stream was returned.
    first: Option<Option<Result<RecordBatch>>>,
    batches: mpsc::Receiver<Result<RecordBatch>>,
    encoder: Option<Encoder>,
    deadline: Instant,
    rows: usize,
    bytes: u64,
    config: QueryConfig,
    _slot: OwnedSemaphorePermit,
}

impl std::fmt::Debug for ResultStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStream")
            .field("rows", &self.rows)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl ResultStream {
    /// The next encoded bytes; `None` after the last. After an error the result is over.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        let result = self.advance().await;
        match result {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.encoder = None;
                Some(Err(e))
            }
        }
    }

    async fn advance(&mut self) -> Result<Option<Bytes>> {
        loop {
            let Some(encoder) = self.encoder.as_mut() else {
                return Ok(None);
            };
            let next = match self.first.take() {
                Some(first) => first,
                None => tokio::time::timeout_at(self.deadline, self.batches.recv())
                    .await
                    .map_err(|_| {
                        Error::Timeout(meterstack_core::duration::format(self.config.timeout))
                    })?,
            };
            let bytes = match next {
                None => {
                    let encoder = self
                        .encoder
                        .take()
                        .ok_or_else(|| Error::State("encoder gone".into()))?;
                    encoder.finish()?
                }
                Some(batch) => {
                    let batch = batch?;
                    self.rows += batch.num_rows();
                    if self.rows > self.config.max_rows {
                        return Err(Error::TooLarge(format!(
                            "the result has more than {} rows; add a LIMIT or aggregate",
                            self.config.max_rows
                        )));
                    }
                    encoder.write(&batch)?
                }
            };
            self.bytes += bytes.len() as u64;
            if self.bytes > self.config.max_result_bytes {
                return Err(Error::TooLarge(format!(
                    "the result is larger than {} bytes; add a LIMIT or aggregate",
                    self.config.max_result_bytes
                )));
            }
            if !bytes.is_empty() || self.encoder.is_none() {
                return Ok(Some(bytes));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn empty_lake_answers_with_no_rows() {
        let lake = Lake::new(Arc::new(InMemory::new()), QueryConfig::default()).expect("lake");
        for table in Table::ALL {
            let batches = lake
                .plan(&format!("SELECT * FROM {}", table.name()), None)
                .await
                .expect("plans")
                .collect()
                .await
                .expect("runs");
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
        }
    }

    #[tokio::test]
    async fn writes_and_ddl_are_refused() {
        let lake = Lake::new(Arc::new(InMemory::new()), QueryConfig::default()).expect("lake");
        for sql in [
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO raw_readings SELECT * FROM raw_readings",
            "DROP TABLE raw_readings",
            "SET datafusion.execution.batch_size = 1",
        ] {
            assert!(lake.plan(sql, None).await.is_err(), "{sql} must be refused");
        }
    }
}
