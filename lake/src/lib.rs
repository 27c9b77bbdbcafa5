//! The lake: zones of Parquet files on object storage, and SQL over them.
//!
//! In: `readings.raw` records from the bus.
//! Out: Parquet files in the raw zone — decoded readings under `raw/readings/`, rejected
//! messages and readings with their reason under `raw/rejected/` — and the SQL tables
//! `raw_readings` and `rejected_readings` over them ([`query::Lake`]).
//!
//! Storage is injected as an `Arc<dyn ObjectStore>` ([`store::LakeConfig::build`]); object
//! paths come only from [`paths::Table`].

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
}

/// `Result` with the lake [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
