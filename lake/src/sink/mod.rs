//! Sinks: stages that consume the bus and write the lake.

pub mod raw;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::Result;
use crate::paths::{Table, rejected_columns};

/// Rows per Parquet row group: small enough that statistics prune by meter, large enough
/// to compress well.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Writer settings of every lake file: zstd, statistics per column chunk and page (the page
/// index), and the sort order the rows of `table` are in (`meter_id`, `ts`, or for rejects
/// `received_at`), recorded in the footer.
pub fn writer_properties(table: Table) -> Result<WriterProperties> {
    let schema = table.schema();
    let sort = match table {
        Table::RejectedReadings => vec![rejected_columns::RECEIVED_AT],
        _ => vec!["meter_id", "ts"],
    };
    let sorting = sort
        .into_iter()
        .filter_map(|name| schema.index_of(name).ok())
        .map(|i| SortingColumn {
            column_idx: i as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_sorting_columns(Some(sorting))
        .build())
}

/// Encodes `batch` (rows of `table`, already in its sort order) as one Parquet file.
pub fn encode_parquet(batch: &RecordBatch, table: Table) -> Result<Bytes> {
    let mut buf = Vec::new();
    let mut writer =
        ArrowWriter::try_new(&mut buf, batch.schema(), Some(writer_properties(table)?))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buf))
}

/// Writes `bytes` to `path`. The object appears whole or not at all.
pub async fn put(store: &Arc<dyn ObjectStore>, path: &Path, bytes: Bytes) -> Result<()> {
    use object_store::ObjectStoreExt;
    store.put(path, bytes.into()).await?;
    Ok(())
}
