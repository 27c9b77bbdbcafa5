//! A meter's connections as the broker saw them: online, the latest session, last traffic.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::reading::MeterId;
use crate::store::{Result, SqlStore, from_micros};

/// A meter's latest connection, as the broker saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connectivity {
    /// Connected now.
    pub online: bool,
    /// The broker's id of the latest connection.
    pub session_id: String,
    /// `secret`, `certificate` or `none` (development mode).
    pub auth_method: String,
    /// The client's address.
    pub remote_addr: String,
    /// When the latest connection was accepted.
    pub connected_at: DateTime<Utc>,
    /// When it ended, if it has.
    pub disconnected_at: Option<DateTime<Utc>>,
    /// Why it ended.
    pub disconnect_reason: Option<String>,
    /// Last traffic (connect or publish).
    pub last_seen: DateTime<Utc>,
}

impl SqlStore {
    /// How many meters are connected now.
    pub async fn meters_online(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM meter_connectivity WHERE online = 1")
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or_default())
    }

    /// The meter's latest connection, if it ever connected.
    pub async fn connectivity(&self, meter_id: &MeterId) -> Result<Option<Connectivity>> {
        let row = sqlx::query(
            "SELECT online, session_id, auth_method, remote_addr, connected_at, \
             disconnected_at, disconnect_reason, last_seen \
             FROM meter_connectivity WHERE meter_id = $1",
        )
        .bind(meter_id.as_str())
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok(Connectivity {
                online: row.try_get::<i64, _>("online")? != 0,
                session_id: row.try_get("session_id")?,
                auth_method: row.try_get("auth_method")?,
                remote_addr: row.try_get("remote_addr")?,
                connected_at: from_micros(row.try_get("connected_at")?),
                disconnected_at: row
                    .try_get::<Option<i64>, _>("disconnected_at")?
                    .map(from_micros),
                disconnect_reason: row.try_get("disconnect_reason")?,
                last_seen: from_micros(row.try_get("last_seen")?),
            })
        })
        .transpose()
    }

    /// Records that `session_id` of `meter_id` connected.
    pub async fn record_connect(
        &self,
        meter_id: &MeterId,
        session_id: &str,
        auth_method: &str,
        remote_addr: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO meter_connectivity (meter_id, online, session_id, auth_method, \
             remote_addr, connected_at, disconnected_at, disconnect_reason, last_seen) \
             VALUES ($1, 1, $2, $3, $4, $5, NULL, NULL, $5) \
             ON CONFLICT (meter_id) DO UPDATE SET online = 1, session_id = excluded.session_id, \
             auth_method = excluded.auth_method, remote_addr = excluded.remote_addr, \
             connected_at = excluded.connected_at, disconnected_at = NULL, \
             disconnect_reason = NULL, last_seen = excluded.last_seen",
        )
        .bind(meter_id.as_str())
        .bind(session_id)
        .bind(auth_method)
        .bind(remote_addr)
        .bind(at.timestamp_micros())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records that `session_id` of `meter_id` ended. A newer session of the same meter (a
    /// reconnect, possibly through another broker) is left online.
    pub async fn record_disconnect(
        &self,
        meter_id: &MeterId,
        session_id: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE meter_connectivity SET online = 0, disconnected_at = $1, \
             disconnect_reason = $2 WHERE meter_id = $3 AND session_id = $4",
        )
        .bind(at.timestamp_micros())
        .bind(reason)
        .bind(meter_id.as_str())
        .bind(session_id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records traffic: `last_seen` only moves forward.
    pub async fn record_seen(&self, seen: &[(MeterId, DateTime<Utc>)]) -> Result<()> {
        let mut tx = self.begin().await?;
        for (meter_id, at) in seen {
            sqlx::query(
                "UPDATE meter_connectivity SET last_seen = $1 \
                 WHERE meter_id = $2 AND last_seen < $1",
            )
            .bind(at.timestamp_micros())
            .bind(meter_id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
