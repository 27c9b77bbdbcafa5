//! Sinks: stages that consume the bus and write the lake.

pub mod raw;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::Result;

/// Encodes `batch` as one Parquet file (zstd-compressed).
pub fn encode_parquet(batch: &RecordBatch) -> Result<Bytes> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))?;
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
