//! The lake's store as one query sees it.
//!
//! A query lists its files when it is planned and reads them afterwards. Meanwhile the ETL
//! may replace a trusted partition in place (a restatement). Every read of an object this
//! query listed is therefore made conditional on the version listed (its e-tag, `If-Match`),
//! so a replaced object fails the read with `Precondition` — reported as
//! [`crate::Error::Changed`], and the query can simply run again — instead of mixing the
//! listed size with the bytes of another version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

type Listed = Arc<Mutex<HashMap<Path, String>>>;

/// `inner`, with reads pinned to the versions this query listed.
#[derive(Debug)]
pub(crate) struct Snapshot {
    inner: Arc<dyn ObjectStore>,
    listed: Listed,
}

impl Snapshot {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            listed: Listed::default(),
        }
    }
}

impl std::fmt::Display for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Snapshot({})", self.inner)
    }
}

fn remember(listed: &Listed, meta: &ObjectMeta) {
    if let Some(tag) = &meta.e_tag
        && let Ok(mut map) = listed.lock()
    {
        map.insert(meta.location.clone(), tag.clone());
    }
}

#[async_trait]
impl ObjectStore for Snapshot {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        mut options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.if_match.is_none() {
            options.if_match = self
                .listed
                .lock()
                .ok()
                .and_then(|map| map.get(location).cloned());
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listed = self.listed.clone();
        self.inner
            .list(prefix)
            .map(move |item| {
                if let Ok(meta) = &item {
                    remember(&listed, meta);
                }
                item
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let result = self.inner.list_with_delimiter(prefix).await?;
        for meta in &result.objects {
            remember(&self.listed, meta);
        }
        Ok(result)
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;
    use chrono::{DateTime, TimeDelta};
    use meterstack_core::reading::{MeterId, Reading};
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;
    use crate::paths::Table;
    use crate::query::{Format, Lake, QueryConfig};
    use crate::sink::raw::encode_raw_readings;

    /// Replaces an object with `replacement` just before its first read, as a restatement
    /// between a query's listing and its reads would.
    #[derive(Debug)]
    struct ReplacedOnFirstRead {
        inner: Arc<dyn ObjectStore>,
        replacement: Bytes,
        fired: AtomicBool,
    }

    impl std::fmt::Display for ReplacedOnFirstRead {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "ReplacedOnFirstRead")
        }
    }

    #[async_trait]
    impl ObjectStore for ReplacedOnFirstRead {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            if !self.fired.swap(true, Ordering::SeqCst) {
                self.inner
                    .put(location, self.replacement.clone().into())
                    .await?;
            }
            self.inner.get_opts(location, options).await
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    fn file(readings: usize) -> Bytes {
        let start = DateTime::from_timestamp(1_795_000_000, 0).expect("time");
        let rows: Vec<Reading> = (0..readings)
            .map(|i| Reading {
                meter_id: MeterId::new("m-1").expect("id"),
                ts: start + TimeDelta::minutes(15 * i as i64),
                import_wh: 100.0 * i as f64,
                export_wh: None,
                power_w: None,
                voltage_v: None,
                current_a: None,
                seq: None,
            })
            .collect();
        encode_raw_readings(rows, vec![0; readings]).expect("parquet")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_replaced_after_listing_is_read_again_not_mixed() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path =
            Table::RawReadings.new_file(DateTime::from_timestamp(1_795_000_000, 0).expect("t"));
        inner.put(&path, file(3).into()).await.expect("put");
        let store: Arc<dyn ObjectStore> = Arc::new(ReplacedOnFirstRead {
            inner,
            replacement: file(40),
            fired: AtomicBool::new(false),
        });
        let lake = Lake::new(store, QueryConfig::default()).expect("lake");
        let mut result = lake
            .query(
                "SELECT count(*) AS n, sum(import_wh) AS s FROM raw_readings",
                None,
                Format::Jsonl,
            )
            .await
            .expect("query");
        let mut body = Vec::new();
        while let Some(chunk) = result.next_chunk().await {
            body.extend_from_slice(&chunk.expect("the retry reads the new version"));
        }
        let row: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(row, serde_json::json!({"n": 40, "s": 78000.0}));
    }
}
