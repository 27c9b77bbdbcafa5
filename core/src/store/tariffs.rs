//! Tariff versions: documents with effective dates, never overlapping. What a document means
//! is the billing crate's; the store keeps the dates straight.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::Row;

use super::forecasts::instant;
use super::{Result, SqlStore, StoreError, now_micros};

/// One stored version of a tariff.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TariffVersion {
    /// The tariff's id.
    pub tariff_id: String,
    /// 1, 2, … in order of import.
    pub version: i64,
    /// First local date it applies to.
    pub effective_from: NaiveDate,
    /// Last local date, if closed.
    pub effective_to: Option<NaiveDate>,
    /// Its name.
    pub name: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The document (JSON).
    pub document: String,
    /// When it was imported.
    pub imported_at: DateTime<Utc>,
}

/// A version to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTariffVersion {
    /// The tariff's id.
    pub tariff_id: String,
    /// First local date.
    pub effective_from: NaiveDate,
    /// Last local date, if any.
    pub effective_to: Option<NaiveDate>,
    /// Its name.
    pub name: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The document (JSON).
    pub document: String,
}

const COLUMNS: &str =
    "tariff_id, version, effective_from, effective_to, name, currency, document, imported_at";

/// A stored ISO date.
pub(super) fn date(text: &str) -> Result<NaiveDate> {
    text.parse()
        .map_err(|_| StoreError::Invalid(format!("stored date {text:?} is not a date")))
}

fn row(r: &sqlx::any::AnyRow) -> Result<TariffVersion> {
    let to: Option<String> = r.try_get("effective_to")?;
    Ok(TariffVersion {
        tariff_id: r.try_get("tariff_id")?,
        version: r.try_get("version")?,
        effective_from: date(&r.try_get::<String, _>("effective_from")?)?,
        effective_to: to.as_deref().map(date).transpose()?,
        name: r.try_get("name")?,
        currency: r.try_get("currency")?,
        document: r.try_get("document")?,
        imported_at: instant(r.try_get("imported_at")?),
    })
}

impl SqlStore {
    /// Stores a new version. The latest version, if open-ended and starting earlier, is closed
    /// the day before; any other overlap with a stored version is refused. Importing the same
    /// document with the same dates again changes nothing and answers the stored version.
    pub async fn add_tariff_version(&self, new: &NewTariffVersion) -> Result<TariffVersion> {
        if new.effective_to.is_some_and(|to| to < new.effective_from) {
            return Err(StoreError::Invalid(
                "effective_to is before effective_from".into(),
            ));
        }
        let mut tx = self.begin().await?;
        let sql = format!("SELECT {COLUMNS} FROM tariffs WHERE tariff_id = $1 ORDER BY version");
        let versions: Vec<TariffVersion> = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&new.tariff_id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(row)
            .collect::<Result<_>>()?;
        if let Some(same) = versions.iter().find(|v| {
            v.effective_from == new.effective_from
                && v.effective_to == new.effective_to
                && v.document == new.document
        }) {
            return Ok(same.clone());
        }
        let end = |to: Option<NaiveDate>| to.unwrap_or(NaiveDate::MAX);
        let mut close = None;
        for v in &versions {
            let overlaps = v.effective_from <= end(new.effective_to)
                && new.effective_from <= end(v.effective_to);
            if !overlaps {
                continue;
            }
            // Closing the latest open version is a handover only if the new one is open too
            // (else the days after the new version's end would fall under none).
            let latest_open = v.effective_to.is_none()
                && new.effective_to.is_none()
                && v.effective_from < new.effective_from
                && versions
                    .iter()
                    .all(|w| w.effective_from <= v.effective_from);
            if latest_open {
                close = Some(v.version);
            } else {
                return Err(StoreError::Invalid(format!(
                    "effective_from: {} … {} overlaps version {} of tariff {} ({} … {})",
                    new.effective_from,
                    new.effective_to
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "open".into()),
                    v.version,
                    v.tariff_id,
                    v.effective_from,
                    v.effective_to
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "open".into()),
                )));
            }
        }
        if let Some(version) = close {
            let day_before = new.effective_from.pred_opt().unwrap_or(new.effective_from);
            sqlx::query(
                "UPDATE tariffs SET effective_to = $1 WHERE tariff_id = $2 AND version = $3",
            )
            .bind(day_before.to_string())
            .bind(&new.tariff_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        let version = versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        let imported_at = now_micros();
        sqlx::query(
            "INSERT INTO tariffs (tariff_id, version, effective_from, effective_to, name, \
             currency, document, imported_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&new.tariff_id)
        .bind(version)
        .bind(new.effective_from.to_string())
        .bind(new.effective_to.map(|d| d.to_string()))
        .bind(&new.name)
        .bind(&new.currency)
        .bind(&new.document)
        .bind(imported_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TariffVersion {
            tariff_id: new.tariff_id.clone(),
            version,
            effective_from: new.effective_from,
            effective_to: new.effective_to,
            name: new.name.clone(),
            currency: new.currency.clone(),
            document: new.document.clone(),
            imported_at: instant(imported_at),
        })
    }

    /// Every version of every tariff (or of one), by tariff and version.
    pub async fn tariff_versions(&self, tariff_id: Option<&str>) -> Result<Vec<TariffVersion>> {
        let filter = if tariff_id.is_some() {
            "WHERE tariff_id = $1"
        } else {
            ""
        };
        let sql = format!("SELECT {COLUMNS} FROM tariffs {filter} ORDER BY tariff_id, version");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(id) = tariff_id {
            query = query.bind(id);
        }
        query
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(row)
            .collect()
    }

    /// The version of a tariff in force on a local date.
    pub async fn tariff_on(&self, tariff_id: &str, day: NaiveDate) -> Result<TariffVersion> {
        self.tariff_versions(Some(tariff_id))
            .await?
            .into_iter()
            .find(|v| v.effective_from <= day && v.effective_to.is_none_or(|to| day <= to))
            .ok_or_else(|| {
                StoreError::NotFound(format!("a version of tariff {tariff_id} in force on {day}"))
            })
    }
}
