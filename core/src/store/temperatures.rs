//! Outdoor temperature per area (a feeder, or [`ALL_AREAS`]), hourly, upserted idempotently:
//! the forecasting models' optional weather input.

use chrono::{DateTime, Utc};

use super::forecasts::{instant, micros, placeholders};
use super::{Result, SqlStore, StoreError};

/// The area whose series serves every meter whose feeder has none of its own.
pub const ALL_AREAS: &str = "*";

/// One hour's temperature in one area.
#[derive(Debug, Clone, PartialEq)]
pub struct Temperature {
    /// A feeder, or [`ALL_AREAS`].
    pub area: String,
    /// Start of the hour.
    pub ts: DateTime<Utc>,
    /// Mean over the hour, °C.
    pub celsius: f64,
}

/// Rows per INSERT statement (3 binds each).
const CHUNK: usize = 300;

impl SqlStore {
    /// Writes `rows` in one transaction: an hour already stored for an area is replaced (and
    /// of two rows for the same area and hour, the later one is kept).
    pub async fn upsert_temperatures(&self, rows: &[Temperature]) -> Result<u64> {
        if let Some(bad) = rows
            .iter()
            .find(|r| !(r.celsius.is_finite() && (-90.0..=60.0).contains(&r.celsius)))
        {
            return Err(StoreError::Invalid(format!(
                "temperature of {} at {} is {} °C",
                bad.area, bad.ts, bad.celsius
            )));
        }
        // One statement must not name a row twice (PostgreSQL refuses it).
        let mut latest: std::collections::BTreeMap<(&str, i64), f64> = Default::default();
        for r in rows {
            latest.insert((r.area.as_str(), micros(r.ts)), r.celsius);
        }
        let rows: Vec<_> = latest.into_iter().collect();
        let mut tx = self.begin().await?;
        for chunk in rows.chunks(CHUNK) {
            let values: Vec<String> = (0..chunk.len()).map(|i| placeholders(i, 3)).collect();
            let sql = format!(
                "INSERT INTO temperatures (area, ts, temperature_c) VALUES {} \
                 ON CONFLICT (area, ts) DO UPDATE SET temperature_c = excluded.temperature_c",
                values.join(", ")
            );
            // Built from placeholders only; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ((area, ts), celsius) in chunk {
                q = q.bind(*area).bind(*ts).bind(*celsius);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Every area's hours in `[from, to)`, in (area, hour) order.
    pub async fn temperatures(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Temperature>> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT area, ts, temperature_c FROM temperatures WHERE ts >= $1 AND ts < $2 \
             ORDER BY area, ts",
        )
        .bind(micros(from))
        .bind(micros(to))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Temperature {
                    area: r.try_get("area")?,
                    ts: instant(r.try_get("ts")?),
                    celsius: r.try_get("temperature_c")?,
                })
            })
            .collect()
    }
}
