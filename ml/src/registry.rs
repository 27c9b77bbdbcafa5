//! The model registry, in the lake's object store: each trained model is a version with its
//! artifact and what it was trained on; one version is current.
//!
//! ```text
//! models/<version>/model.json   the artifact
//! models/<version>/meta.json    ModelMeta, with the artifact's SHA-256
//! models/current.json           the current version and the ones before it (for rollback)
//! ```
//!
//! A version is `<training end>-<first 8 hex of the artifact's SHA-256>`, so versions sort by
//! the data they saw. An artifact whose hash does not match its meta, or that does not parse,
//! is refused with [`RegistryError::Damaged`].

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backtest::Score;
use crate::model::ModelKind;
use crate::model::gbm::{Gbm, GbmConfig};

/// What the registry knows about a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// The version.
    pub version: String,
    /// The model.
    pub kind: ModelKind,
    /// When it was trained.
    pub trained_at: DateTime<Utc>,
    /// First hour of its training data.
    pub data_from: DateTime<Utc>,
    /// End (exclusive) of its training data: it saw nothing at or after this.
    pub data_until: DateTime<Utc>,
    /// Meters and rows it was trained on.
    pub meters: usize,
    /// Training rows.
    pub rows: usize,
    /// Its features, in order.
    pub features: Vec<String>,
    /// The learner's settings.
    pub params: GbmConfig,
    /// meterstack's version that trained it.
    pub code_version: String,
    /// SHA-256 of the artifact, hex.
    pub sha256: String,
    /// Backtest scores (this model and the baselines), when backtested.
    #[serde(default)]
    pub backtest: Vec<Score>,
}

/// The pointer to the current version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Current {
    version: Option<String>,
    /// Earlier current versions, newest last.
    history: Vec<String>,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The object store failed.
    #[error("model registry storage: {0}")]
    Store(#[from] object_store::Error),
    /// No such version.
    #[error("no model version {0:?}")]
    NotFound(String),
    /// The stored model is not what was registered.
    #[error("model {version} is damaged: {reason}")]
    Damaged {
        /// The version.
        version: String,
        /// What is wrong.
        reason: String,
    },
    /// Nothing to roll back to.
    #[error("no earlier current version to roll back to")]
    NoHistory,
}

/// The registry over an object store.
#[derive(Debug, Clone)]
pub struct ModelRegistry {
    store: Arc<dyn ObjectStore>,
}

const ROOT: &str = "models";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl ModelRegistry {
    /// The registry in `store`.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    fn path(version: &str, file: &str) -> Path {
        Path::from(format!("{ROOT}/{version}/{file}"))
    }

    /// Registers `model` trained with `meta` (its version, hash and features are filled in
    /// here); returns the version. Does not make it current.
    pub async fn register(
        &self,
        model: &Gbm,
        mut meta: ModelMeta,
    ) -> Result<ModelMeta, RegistryError> {
        let artifact = model.to_json().map_err(|e| RegistryError::Damaged {
            version: "(new)".into(),
            reason: e.to_string(),
        })?;
        meta.sha256 = sha256_hex(&artifact);
        meta.features = model.features.clone();
        meta.version = format!(
            "{}-{}",
            meta.data_until.format("%Y%m%dT%H%MZ"),
            &meta.sha256[..8]
        );
        // The artifact first: a meta is only ever written beside a whole artifact.
        self.store
            .put(
                &Self::path(&meta.version, "model.json"),
                PutPayload::from(artifact),
            )
            .await?;
        self.write_meta(&meta).await?;
        Ok(meta)
    }

    async fn write_meta(&self, meta: &ModelMeta) -> Result<(), RegistryError> {
        let json = serde_json::to_vec_pretty(meta).map_err(|e| RegistryError::Damaged {
            version: meta.version.clone(),
            reason: e.to_string(),
        })?;
        self.store
            .put(
                &Self::path(&meta.version, "meta.json"),
                PutPayload::from(json),
            )
            .await?;
        Ok(())
    }

    /// Replaces a version's meta (e.g. to add backtest scores); the artifact is untouched.
    pub async fn update_meta(&self, meta: &ModelMeta) -> Result<(), RegistryError> {
        self.meta(&meta.version).await?;
        self.write_meta(meta).await
    }

    async fn read(&self, path: &Path) -> Result<Option<Bytes>, RegistryError> {
        match self.store.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The meta of `version`.
    pub async fn meta(&self, version: &str) -> Result<ModelMeta, RegistryError> {
        let bytes = self
            .read(&Self::path(version, "meta.json"))
            .await?
            .ok_or_else(|| RegistryError::NotFound(version.to_owned()))?;
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::Damaged {
            version: version.to_owned(),
            reason: format!("meta.json: {e}"),
        })
    }

    /// The model of `version`, checked against its meta.
    pub async fn load(&self, version: &str) -> Result<(ModelMeta, Gbm), RegistryError> {
        let meta = self.meta(version).await?;
        let damaged = |reason: String| RegistryError::Damaged {
            version: version.to_owned(),
            reason,
        };
        let bytes = self
            .read(&Self::path(version, "model.json"))
            .await?
            .ok_or_else(|| damaged("model.json is missing".into()))?;
        if sha256_hex(&bytes) != meta.sha256 {
            return Err(damaged(
                "model.json does not match the SHA-256 in its meta".into(),
            ));
        }
        let model = Gbm::from_json(&bytes).map_err(|e| damaged(e.to_string()))?;
        Ok((meta, model))
    }

    /// Every version's meta, oldest training data first (unreadable metas are skipped and
    /// named in the second list).
    pub async fn list(&self) -> Result<(Vec<ModelMeta>, Vec<String>), RegistryError> {
        let objects: Vec<_> = self
            .store
            .list(Some(&Path::from(ROOT)))
            .try_collect()
            .await?;
        let (mut metas, mut bad) = (Vec::new(), Vec::new());
        for o in objects {
            let parts: Vec<_> = o.location.parts().collect();
            if parts.len() == 3 && parts[2].as_ref() == "meta.json" {
                let version = parts[1].as_ref().to_owned();
                match self.meta(&version).await {
                    Ok(m) => metas.push(m),
                    Err(_) => bad.push(version),
                }
            }
        }
        metas.sort_by(|a, b| a.version.cmp(&b.version));
        Ok((metas, bad))
    }

    async fn current_record(&self) -> Result<Current, RegistryError> {
        match self
            .read(&Path::from(format!("{ROOT}/current.json")))
            .await?
        {
            None => Ok(Current::default()),
            Some(b) => serde_json::from_slice(&b).map_err(|e| RegistryError::Damaged {
                version: "current.json".into(),
                reason: e.to_string(),
            }),
        }
    }

    async fn write_current(&self, current: &Current) -> Result<(), RegistryError> {
        let json = serde_json::to_vec_pretty(current).map_err(|e| RegistryError::Damaged {
            version: "current.json".into(),
            reason: e.to_string(),
        })?;
        self.store
            .put(
                &Path::from(format!("{ROOT}/current.json")),
                PutPayload::from(json),
            )
            .await?;
        Ok(())
    }

    /// The current version, if any.
    pub async fn current(&self) -> Result<Option<String>, RegistryError> {
        Ok(self.current_record().await?.version)
    }

    /// Makes `version` current (it must load cleanly).
    pub async fn promote(&self, version: &str) -> Result<(), RegistryError> {
        self.load(version).await?;
        let mut current = self.current_record().await?;
        if current.version.as_deref() == Some(version) {
            return Ok(());
        }
        if let Some(old) = current.version.take() {
            current.history.push(old);
        }
        current.version = Some(version.to_owned());
        self.write_current(&current).await
    }

    /// Makes the version that was current before the current one current again; returns it.
    pub async fn rollback(&self) -> Result<String, RegistryError> {
        let mut current = self.current_record().await?;
        let previous = current.history.pop().ok_or(RegistryError::NoHistory)?;
        self.load(&previous).await?;
        current.version = Some(previous.clone());
        self.write_current(&current).await?;
        Ok(previous)
    }

    /// The newest version whose training data ended at or before `t` (for forecasts "as of"
    /// `t`: a model that saw nothing at or after it).
    pub async fn newest_before(
        &self,
        t: DateTime<Utc>,
    ) -> Result<Option<ModelMeta>, RegistryError> {
        let (metas, _) = self.list().await?;
        Ok(metas
            .into_iter()
            .filter(|m| m.data_until <= t)
            .max_by_key(|m| m.data_until))
    }
}
