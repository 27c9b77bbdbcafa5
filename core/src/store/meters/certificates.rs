//! Certificates the built-in CA issued to meters, and their revocation.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::reading::MeterId;
use crate::store::{Result, SqlStore, StoreError, from_micros, now_micros};

/// A certificate issued to a meter by the built-in CA.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertificateRecord {
    /// Serial number, hex.
    pub serial: String,
    /// The meter it identifies.
    pub meter_id: MeterId,
    /// Start of validity.
    pub not_before: DateTime<Utc>,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

fn certificate_from_row(row: &AnyRow) -> Result<CertificateRecord> {
    let id: String = row.try_get("meter_id")?;
    Ok(CertificateRecord {
        serial: row.try_get("serial")?,
        meter_id: MeterId::new(&id)
            .map_err(|e| StoreError::Invalid(format!("stored meter id {id:?}: {e}")))?,
        not_before: from_micros(row.try_get("not_before")?),
        not_after: from_micros(row.try_get("not_after")?),
        issued_at: from_micros(row.try_get("issued_at")?),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")?
            .map(from_micros),
    })
}

impl SqlStore {
    /// Records a certificate issued to a registered meter.
    pub async fn record_certificate(
        &self,
        serial: &str,
        meter_id: &MeterId,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<()> {
        if self.meter(meter_id).await?.is_none() {
            return Err(StoreError::NotFound(format!("meter {meter_id}")));
        }
        sqlx::query(
            "INSERT INTO meter_certificates (serial, meter_id, not_before, not_after, issued_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(serial)
        .bind(meter_id.as_str())
        .bind(not_before.timestamp_micros())
        .bind(not_after.timestamp_micros())
        .bind(now_micros())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A certificate record by serial (hex).
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertificateRecord>> {
        let row = sqlx::query(
            "SELECT serial, meter_id, not_before, not_after, issued_at, revoked_at \
             FROM meter_certificates WHERE serial = $1",
        )
        .bind(serial)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(certificate_from_row).transpose()
    }

    /// The certificates issued to a meter, newest first.
    pub async fn certificates(&self, meter_id: &MeterId) -> Result<Vec<CertificateRecord>> {
        let rows = sqlx::query(
            "SELECT serial, meter_id, not_before, not_after, issued_at, revoked_at \
             FROM meter_certificates WHERE meter_id = $1 ORDER BY issued_at DESC",
        )
        .bind(meter_id.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(certificate_from_row).collect()
    }

    /// Revokes a certificate; `NotFound` if no such serial was issued. Revoking twice keeps
    /// the first time.
    pub async fn revoke_certificate(&self, serial: &str) -> Result<CertificateRecord> {
        sqlx::query(
            "UPDATE meter_certificates SET revoked_at = $1 \
             WHERE serial = $2 AND revoked_at IS NULL",
        )
        .bind(now_micros())
        .bind(serial)
        .execute(self.pool())
        .await?;
        self.certificate(serial)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("certificate {serial}")))
    }
}
