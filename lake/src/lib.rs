//! The lake: zones of Parquet files on object storage, and SQL over them.
//!
//! In: `readings.raw` records from the bus.
//! Out: Parquet files in the raw zone — decoded readings under `raw/readings/`, rejected
//! messages and readings with their reason under `raw/rejected/` ([`sink::raw`]); the trusted
//! zone the [`etl`] derives from it with the pipeline's rules (`trusted/readings`,
//! `readings_hourly`, `readings_daily`); and read-only, bounded SQL over all of them
//! ([`query::Lake`]). History from other systems enters the raw zone through [`import`].
//!
//! Storage is injected as an `Arc<dyn ObjectStore>` ([`store::LakeConfig::build`]: local disk
//! or S3-compatible); object paths come only from [`paths::Table`].

pub mod etl;
pub mod import;
pub mod paths;
pub mod query;
pub mod sink;
pub mod store;
mod utc;

/// Errors of the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object store failed.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Arrow could not build a batch.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet encoding failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The query engine rejected or failed a query.
    #[error(transparent)]
    Query(#[from] datafusion::error::DataFusionError),
    /// The bus failed.
    #[error("bus: {0}")]
    Bus(#[from] meterstack_core::bus::Error),
    /// The store configuration is unusable.
    #[error("lake store: {0}")]
    Config(String),
    /// A query ran past its timeout.
    #[error("the query ran longer than {0}")]
    Timeout(String),
    /// A query's result passed a size bound.
    #[error("{0}")]
    TooLarge(String),
    /// Every query slot stayed taken for the whole timeout.
    #[error("all {0} query slots stayed busy for the whole timeout; try again later")]
    Busy(usize),
    /// Query parameters are malformed.
    #[error("{0}")]
    Params(String),
    /// A file the query listed was deleted or replaced before it was read (compaction,
    /// retention or a restatement ran meanwhile); running the query again sees the new files.
    #[error("the lake changed while the query ran ({0}); run it again")]
    Changed(String),
    /// Stored state (a bookmark, a file's columns) is not what it must be.
    #[error("{0}")]
    State(String),
}

/// `Result` with the lake [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
