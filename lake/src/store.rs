//! The object store behind the lake, chosen once in configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use serde::{Deserialize, Serialize};

use crate::sink::raw::RawSinkConfig;
use crate::{Error, Result};

/// Section `[lake]` of `meterstack.toml`: where the lake's objects live, and its sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// Directory of the lake on local disk; unset means `{data_dir}/lake`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The raw-zone sink.
    pub raw_sink: RawSinkConfig,
}

impl LakeConfig {
    /// The lake directory for a process whose data directory is `data_dir`.
    pub fn root(&self, data_dir: &Path) -> PathBuf {
        self.path.clone().unwrap_or_else(|| data_dir.join("lake"))
    }

    /// Opens the store, creating the directory if needed.
    pub fn build(&self, data_dir: &Path) -> Result<Arc<dyn ObjectStore>> {
        let root = self.root(data_dir);
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::Config(format!("cannot create {}: {e}", root.display())))?;
        Ok(Arc::new(LocalFileSystem::new_with_prefix(&root)?))
    }
}
