//! The object store behind the lake, chosen once in configuration: the local filesystem
//! (default) or an S3-compatible service (AWS S3, MinIO, Ceph RGW, …).
//!
//! Every object appears whole or not at all. On S3 a PUT is atomic by itself. On local disk
//! [`DurableLocal`] writes a hidden staging file, fsyncs it, renames it into place and fsyncs
//! the directory, so an object that was acknowledged survives a power cut.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use serde::{Deserialize, Serialize};

use crate::etl::EtlConfig;
use crate::sink::raw::RawSinkConfig;
use crate::{Error, Result};

/// Section `[lake]` of `meterstack.toml`: where the lake's objects live, its sink and its ETL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// The object store.
    pub store: StoreConfig,
    /// The raw-zone sink.
    pub raw_sink: RawSinkConfig,
    /// The ETL from the raw to the trusted zone, with retention.
    pub etl: EtlConfig,
}

/// `[lake.store]`: `kind = "local"` (default) or `kind = "s3"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// A directory on local disk.
    Local {
        /// The directory; unset means `{data_dir}/lake`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<PathBuf>,
    },
    /// An S3-compatible service.
    S3(S3Config),
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Local { path: None }
    }
}

/// `[lake.store]` with `kind = "s3"`. Unset credentials and region come from the usual
/// `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, …), so secrets need not be written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket (it must exist).
    pub bucket: String,
    /// Key prefix inside the bucket, e.g. `meterstack/`; empty for the bucket's root.
    #[serde(default)]
    pub prefix: String,
    /// The endpoint for S3-compatible services, e.g. `http://minio:9000`; unset for AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region (`us-east-1` when neither this nor `AWS_REGION` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// Path-style URLs (`endpoint/bucket/key`), as MinIO and most on-premises services want.
    #[serde(default = "yes")]
    pub path_style: bool,
    /// Allow plain `http://` endpoints (a service on a private network or loopback).
    #[serde(default)]
    pub allow_http: bool,
}

fn yes() -> bool {
    true
}

impl LakeConfig {
    /// Opens the store (creating the local directory if needed).
    pub fn build(&self, data_dir: &Path) -> Result<Arc<dyn ObjectStore>> {
        self.store.build(data_dir)
    }
}

impl StoreConfig {
    /// Opens the store.
    pub fn build(&self, data_dir: &Path) -> Result<Arc<dyn ObjectStore>> {
        match self {
            StoreConfig::Local { path } => {
                let root = path.clone().unwrap_or_else(|| data_dir.join("lake"));
                Ok(Arc::new(DurableLocal::new(&root)?))
            }
            StoreConfig::S3(s3) => {
                if s3.bucket.trim().is_empty() {
                    return Err(Error::Config("lake.store.bucket is empty".into()));
                }
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_virtual_hosted_style_request(!s3.path_style)
                    .with_allow_http(s3.allow_http);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                let store = builder
                    .build()
                    .map_err(|e| Error::Config(format!("lake.store (s3): {e}")))?;
                let prefix = s3.prefix.trim_matches('/');
                Ok(if prefix.is_empty() {
                    Arc::new(store)
                } else {
                    Arc::new(PrefixStore::new(store, prefix))
                })
            }
        }
    }
}

/// The local filesystem with durable, atomic puts; everything else is `LocalFileSystem`'s.
#[derive(Debug)]
pub struct DurableLocal {
    inner: LocalFileSystem,
}

impl std::fmt::Display for DurableLocal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Durable({})", self.inner)
    }
}

impl DurableLocal {
    /// The store rooted at `root`, created if missing.
    pub fn new(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", root.display())))?;
        Ok(Self {
            inner: LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true),
        })
    }
}

fn io_error(path: &Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "DurableLocal",
        source: format!("{}: {e}", path.display()).into(),
    }
}

/// Writes `payload` to `dest` through a fsynced staging file and a rename, then fsyncs the
/// directories it created or changed.
fn write_durably(dest: &Path, payload: &PutPayload) -> object_store::Result<()> {
    use std::io::Write;
    let parent = dest.parent().unwrap_or(Path::new("."));
    // Directories created here must be made durable in their own parents.
    let mut created = Vec::new();
    let mut dir = parent;
    while !dir.exists() {
        created.push(dir.to_path_buf());
        match dir.parent() {
            Some(p) => dir = p,
            None => break,
        }
    }
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    // `name#<digits>` is how LocalFileSystem names staging files: never listed.
    let staging = {
        let mut s = dest.as_os_str().to_owned();
        s.push(format!("#{}", uuid::Uuid::now_v7().as_u128()));
        PathBuf::from(s)
    };
    let result = (|| {
        let mut file = std::fs::File::create(&staging).map_err(|e| io_error(&staging, e))?;
        for chunk in payload.iter() {
            file.write_all(chunk).map_err(|e| io_error(&staging, e))?;
        }
        file.sync_all().map_err(|e| io_error(&staging, e))?;
        std::fs::rename(&staging, dest).map_err(|e| io_error(dest, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    result?;
    sync_dir(parent)?;
    for dir in created {
        if let Some(p) = dir.parent() {
            sync_dir(p)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> object_store::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

#[async_trait]
impl ObjectStore for DurableLocal {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !matches!(opts.mode, PutMode::Overwrite) {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let dest = self.inner.path_to_filesystem(location)?;
        tokio::task::spawn_blocking(move || write_durably(&dest, &payload))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "DurableLocal",
                source: Box::new(e),
            })??;
        Ok(PutResult {
            e_tag: None,
            version: None,
        })
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;

    use super::*;

    #[tokio::test]
    async fn durable_puts_overwrite_atomically_and_hide_staging_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = DurableLocal::new(dir.path()).expect("store");
        let path = ObjectPath::from("raw/readings/date=2026-11-23/hour=10/a.parquet");
        store
            .put(&path, b"one".as_slice().into())
            .await
            .expect("put");
        store
            .put(&path, b"two".as_slice().into())
            .await
            .expect("put");
        let got = store
            .get(&path)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("bytes");
        assert_eq!(got.as_ref(), b"two");
        let listed: Vec<ObjectMeta> = store.list(None).try_collect().await.expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
        let files = std::fs::read_dir(dir.path().join("raw/readings/date=2026-11-23/hour=10"))
            .expect("dir")
            .count();
        assert_eq!(files, 1, "no staging file is left behind");
    }

    #[test]
    fn s3_config_needs_a_bucket_and_reads_toml() {
        let config: LakeConfig = toml::from_str(
            "[store]\nkind = \"s3\"\nbucket = \"lake\"\nendpoint = \"http://127.0.0.1:9000\"\nallow_http = true\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\nregion = \"us-east-1\"\n",
        )
        .expect("parses");
        let dir = tempfile::tempdir().expect("tempdir");
        config.build(dir.path()).expect("builds");
        let empty = StoreConfig::S3(S3Config {
            bucket: " ".into(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            path_style: true,
            allow_http: false,
        });
        assert!(empty.build(dir.path()).is_err());
        assert!(toml::from_str::<LakeConfig>("[store]\nkind = \"ftp\"\n").is_err());
    }
}
