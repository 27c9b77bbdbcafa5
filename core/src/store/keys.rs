//! API keys with roles.
//!
//! A key reads `msk_<key id>_<secret>`: the id (12 hex digits) finds the row, the whole key's
//! SHA-256 must match. The plaintext is shown once, at creation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::secret::{constant_time_eq, random_hex, sha256_hex};
use super::{Result, SqlStore, StoreError, from_micros, now_micros};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including keys.
    Admin,
    /// Alerts, subscriptions, meters and commands to meters.
    Operator,
    /// SQL and read-only data.
    Analyst,
    /// Dashboards.
    Viewer,
}

impl std::str::FromStr for Role {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Analyst, Role::Viewer];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Analyst => "analyst",
            Self::Viewer => "viewer",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "role {s:?} is not admin, operator, analyst or viewer"
                ))
            })
    }
}

/// An API key's record (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    /// The key's public id.
    pub key_id: String,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

const PREFIX: &str = "msk_";

fn key_from_row(row: &AnyRow) -> Result<ApiKey> {
    let role: String = row.try_get("role")?;
    Ok(ApiKey {
        key_id: row.try_get("key_id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role)?,
        created_at: from_micros(row.try_get("created_at")?),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_micros),
    })
}

impl SqlStore {
    /// Creates a key; returns its record and the plaintext key, which is not kept.
    pub async fn create_api_key(&self, role: Role, name: &str) -> Result<(ApiKey, String)> {
        if name.len() > 200 || name.chars().any(char::is_control) {
            return Err(StoreError::Invalid(
                "name must be at most 200 bytes without control characters".into(),
            ));
        }
        let key_id = random_hex(6);
        let plaintext = format!("{PREFIX}{key_id}_{}", random_hex(32));
        let now = now_micros();
        sqlx::query(
            "INSERT INTO api_keys (key_id, name, role, key_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key_id)
        .bind(name)
        .bind(role.as_str())
        .bind(sha256_hex(plaintext.as_bytes()))
        .bind(now)
        .execute(self.pool())
        .await?;
        let key = ApiKey {
            key_id,
            name: name.to_owned(),
            role,
            created_at: from_micros(now),
            revoked_at: None,
        };
        Ok((key, plaintext))
    }

    /// Every key, newest first.
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query(
            "SELECT key_id, name, role, created_at, revoked_at FROM api_keys \
             ORDER BY created_at DESC, key_id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes a key; `NotFound` if there is no such key.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<ApiKey> {
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL")
            .bind(now_micros())
            .bind(key_id)
            .execute(self.pool())
            .await?;
        let row = sqlx::query(
            "SELECT key_id, name, role, created_at, revoked_at FROM api_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("API key {key_id}")))?;
        key_from_row(&row)
    }

    /// The key `presented` stands for, if it exists and is not revoked.
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<Option<ApiKey>> {
        let Some(key_id) = presented
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .filter(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT key_id, name, role, key_hash, created_at, revoked_at FROM api_keys \
             WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let hash: String = row.try_get("key_hash")?;
        let key = key_from_row(&row)?;
        Ok(
            (constant_time_eq(&hash, &sha256_hex(presented.as_bytes()))
                && key.revoked_at.is_none())
            .then_some(key),
        )
    }

    /// Whether any unrevoked admin key exists.
    pub async fn has_admin_key(&self) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM api_keys WHERE role = 'admin' AND revoked_at IS NULL")
                .fetch_optional(self.pool())
                .await?
                .is_some(),
        )
    }
}
