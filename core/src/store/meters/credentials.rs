//! A meter's credentials: its service status and the Argon2 hash of its secret, new secrets,
//! and registration on first connect in development mode.

use sqlx::Row;

use super::MeterStatus;
use crate::reading::MeterId;
use crate::store::{Result, SqlStore, StoreError, now_micros};

/// What the broker needs to authenticate a meter.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterCredentials {
    /// Service status.
    pub status: MeterStatus,
    /// Argon2 hash of its secret, if one is set.
    pub secret_hash: Option<String>,
}

impl SqlStore {
    /// Registers `meter_id` with no details if it is unknown (development mode). True if it
    /// was added.
    pub async fn auto_register(&self, meter_id: &MeterId) -> Result<bool> {
        let now = now_micros();
        let added = sqlx::query(
            "INSERT INTO meters (meter_id, status, auto_registered, created_at, updated_at) \
             VALUES ($1, 'active', 1, $2, $2) ON CONFLICT (meter_id) DO NOTHING",
        )
        .bind(meter_id.as_str())
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(added > 0)
    }

    /// The status and secret hash of a meter, if registered.
    pub async fn meter_credentials(&self, meter_id: &MeterId) -> Result<Option<MeterCredentials>> {
        let row = sqlx::query("SELECT status, secret_hash FROM meters WHERE meter_id = $1")
            .bind(meter_id.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            let status: String = row.try_get("status")?;
            Ok(MeterCredentials {
                status: MeterStatus::parse(&status)?,
                secret_hash: row.try_get("secret_hash")?,
            })
        })
        .transpose()
    }

    /// Gives a meter a new random secret and returns it; only its Argon2 hash is stored (the
    /// old secret stops working). Hashing runs on a blocking thread.
    pub async fn rotate_meter_secret(&self, meter_id: &MeterId) -> Result<String> {
        let secret = crate::store::secret::generate_meter_secret();
        let to_hash = secret.clone();
        let hash =
            tokio::task::spawn_blocking(move || crate::store::secret::hash_meter_secret(&to_hash))
                .await
                .map_err(|e| StoreError::Invalid(format!("cannot hash the secret: {e}")))??;
        self.set_meter_secret(meter_id, &hash).await?;
        Ok(secret)
    }

    /// Stores the hash of a meter's new secret (the old one stops working).
    pub async fn set_meter_secret(&self, meter_id: &MeterId, secret_hash: &str) -> Result<()> {
        let changed =
            sqlx::query("UPDATE meters SET secret_hash = $1, updated_at = $2 WHERE meter_id = $3")
                .bind(secret_hash)
                .bind(now_micros())
                .bind(meter_id.as_str())
                .execute(self.pool())
                .await?
                .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!("meter {meter_id}")));
        }
        Ok(())
    }
}
