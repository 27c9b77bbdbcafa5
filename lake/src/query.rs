//! SQL over the lake (the Athena of meterstack), with DataFusion.
//!
//! Each lake table is a DataFusion listing table over its directory in the object store, with
//! the Hive `date` partition column. Files are listed at every query (the listing cache is
//! off), so a file the sink has just written is visible to the next query. Queries are
//! read-only: DDL, DML and `SET`-style statements are refused at planning.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use object_store::ObjectStore;
use url::Url;

use crate::paths::{DATE_PARTITION, Table};
use crate::{Error, Result};

/// The URL under which the lake's store is registered with the query engine.
const LAKE_URL: &str = "lake://zones";

/// The lake's query engine.
#[derive(Clone)]
pub struct Lake {
    ctx: SessionContext,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("session", &self.ctx.session_id())
            .finish()
    }
}

impl Lake {
    /// Registers every table of the lake over `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
            .build_arc()?;
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.add_optimizer_rule(Arc::new(crate::utc::UtcArithmetic));
        let base = Url::parse(LAKE_URL).map_err(|e| Error::Config(e.to_string()))?;
        ctx.register_object_store(&base, store);
        for table in Table::ALL {
            let url = ListingTableUrl::parse(format!("{LAKE_URL}/{}/", table.prefix()))?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![(DATE_PARTITION.to_owned(), DataType::Utf8)]);
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(table.schema());
            ctx.register_table(table.name(), Arc::new(ListingTable::try_new(config)?))?;
        }
        Ok(Self { ctx })
    }

    /// Plans `sql` as a read-only query. Errors here are the caller's (syntax, unknown
    /// table or column, a statement that is not a query).
    pub async fn plan(&self, sql: &str) -> Result<DataFrame> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        Ok(self.ctx.sql_with_options(sql, options).await?)
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    #[tokio::test]
    async fn empty_lake_answers_with_no_rows() {
        let lake = Lake::new(Arc::new(InMemory::new())).expect("lake");
        for table in Table::ALL {
            let batches = lake
                .plan(&format!("SELECT * FROM {}", table.name()))
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
        let lake = Lake::new(Arc::new(InMemory::new())).expect("lake");
        for sql in [
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO raw_readings SELECT * FROM raw_readings",
            "DROP TABLE raw_readings",
            "SET datafusion.execution.batch_size = 1",
        ] {
            assert!(lake.plan(sql).await.is_err(), "{sql} must be refused");
        }
    }
}
