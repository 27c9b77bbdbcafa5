//! Forecasts: each meter's newest p10/p50/p90 per hour and the totals per feeder and for the
//! fleet, upserted idempotently (writing the same forecast twice changes nothing; a newer one
//! replaces the older hour by hour).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};

use super::{Result, SqlStore, StoreError};

/// What a forecast is of.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "scope", content = "name", rename_all = "snake_case")]
pub enum Subject {
    /// One meter.
    Meter(String),
    /// The meters of a feeder, summed.
    Feeder(String),
    /// Every meter, summed.
    Fleet,
}

/// One hour's forecast.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ForecastHour {
    /// Start of the hour.
    pub ts: DateTime<Utc>,
    /// Energy quantiles, Wh.
    pub p10: f64,
    /// Median, Wh.
    pub p50: f64,
    /// 90th percentile, Wh.
    pub p90: f64,
}

/// A stored forecast of a subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredForecast {
    /// The model version of its newest hour.
    pub model_version: String,
    /// When its newest hour was made.
    pub made_at: DateTime<Utc>,
    /// Meters summed (1 for a meter).
    pub meters: u32,
    /// Its hours, in time order.
    pub hours: Vec<ForecastHour>,
}

/// One subject's new forecast, to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewForecast {
    /// What it is of.
    pub subject: Subject,
    /// Meters summed (1 for a meter).
    pub meters: u32,
    /// Its hours.
    pub hours: Vec<ForecastHour>,
}

/// One row of the `forecasts` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastRow {
    /// The meter.
    pub meter_id: String,
    /// The hour and its quantiles.
    pub hour: ForecastHour,
    /// The model that made it.
    pub model_version: String,
    /// When it was made.
    pub made_at: DateTime<Utc>,
}

impl ForecastRow {
    /// Its position for [`SqlStore::forecast_rows`]'s `after`.
    pub fn cursor(&self) -> String {
        format!("{}\n{}", self.meter_id, self.hour.ts.timestamp_micros())
    }
}

/// Rows per INSERT statement (at most 9 binds each, within every driver's limit).
const CHUNK: usize = 200;

/// `($k+1, …, $k+n)` for row `i` of `n` columns: placeholders in order of first appearance,
/// which is how SQLite numbers them.
pub(super) fn placeholders(i: usize, n: usize) -> String {
    let cols: Vec<String> = (1..=n).map(|c| format!("${}", i * n + c)).collect();
    format!("({})", cols.join(", "))
}

pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn instant(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

impl SqlStore {
    /// Writes `forecasts` made at `made_at` by `model_version`, in one transaction: an hour
    /// already stored for a subject is replaced.
    pub async fn upsert_forecasts(
        &self,
        forecasts: &[NewForecast],
        model_version: &str,
        made_at: DateTime<Utc>,
    ) -> Result<u64> {
        let rows: Vec<(&Subject, u32, &ForecastHour)> = forecasts
            .iter()
            .flat_map(|f| f.hours.iter().map(move |h| (&f.subject, f.meters, h)))
            .collect();
        if let Some((s, _, h)) = rows
            .iter()
            .find(|(_, _, h)| !(h.p10.is_finite() && h.p50.is_finite() && h.p90.is_finite()))
        {
            return Err(StoreError::Invalid(format!(
                "forecast of {s:?} at {} is not a number",
                h.ts
            )));
        }
        let mut tx = self.begin().await?;
        let (meters, totals): (Vec<_>, Vec<_>) = rows
            .iter()
            .partition(|(s, _, _)| matches!(s, Subject::Meter(_)));
        for chunk in meters.chunks(CHUNK) {
            let values: Vec<String> = (0..chunk.len()).map(|i| placeholders(i, 7)).collect();
            let sql = format!(
                "INSERT INTO forecasts (meter_id, ts, p10, p50, p90, model_version, made_at) VALUES {} \
                 ON CONFLICT (meter_id, ts) DO UPDATE SET p10 = excluded.p10, p50 = excluded.p50, \
                 p90 = excluded.p90, model_version = excluded.model_version, made_at = excluded.made_at",
                values.join(", ")
            );
            // Built from placeholders only; every value is bound.
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (s, _, h) in chunk {
                let id = match s {
                    Subject::Meter(id) => id.as_str(),
                    _ => "",
                };
                q = q
                    .bind(id)
                    .bind(micros(h.ts))
                    .bind(h.p10)
                    .bind(h.p50)
                    .bind(h.p90)
                    .bind(model_version)
                    .bind(micros(made_at));
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in totals.chunks(CHUNK) {
            let values: Vec<String> = (0..chunk.len()).map(|i| placeholders(i, 9)).collect();
            let sql = format!(
                "INSERT INTO forecast_totals (scope, name, ts, p10, p50, p90, model_version, made_at, meters) VALUES {} \
                 ON CONFLICT (scope, name, ts) DO UPDATE SET p10 = excluded.p10, p50 = excluded.p50, \
                 p90 = excluded.p90, model_version = excluded.model_version, made_at = excluded.made_at, \
                 meters = excluded.meters",
                values.join(", ")
            );
            // Built from placeholders only; every value is bound.
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (s, n, h) in chunk {
                let (scope, name) = match s {
                    Subject::Feeder(f) => ("feeder", f.as_str()),
                    _ => ("fleet", ""),
                };
                q = q
                    .bind(scope)
                    .bind(name)
                    .bind(micros(h.ts))
                    .bind(h.p10)
                    .bind(h.p50)
                    .bind(h.p90)
                    .bind(model_version)
                    .bind(micros(made_at))
                    .bind(i64::from(*n));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// The stored forecast of `subject` for the hours in `[from, to)`, or `None` if it has
    /// none there.
    pub async fn forecast(
        &self,
        subject: &Subject,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Option<StoredForecast>> {
        let rows =
            match subject {
                Subject::Meter(id) => sqlx::query(
                    "SELECT ts, p10, p50, p90, model_version, made_at, 1 AS meters FROM forecasts \
                     WHERE meter_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts",
                )
                .bind(id.as_str())
                .bind(micros(from))
                .bind(micros(to))
                .fetch_all(self.pool())
                .await?,
                Subject::Feeder(_) | Subject::Fleet => {
                    let (scope, name) = match subject {
                        Subject::Feeder(f) => ("feeder", f.as_str()),
                        _ => ("fleet", ""),
                    };
                    sqlx::query(
                    "SELECT ts, p10, p50, p90, model_version, made_at, meters FROM forecast_totals \
                     WHERE scope = $1 AND name = $2 AND ts >= $3 AND ts < $4 ORDER BY ts",
                )
                .bind(scope)
                .bind(name)
                .bind(micros(from))
                .bind(micros(to))
                .fetch_all(self.pool())
                .await?
                }
            };
        let mut out: Option<StoredForecast> = None;
        for row in rows {
            let made_at = instant(row.try_get("made_at")?);
            let hour = ForecastHour {
                ts: instant(row.try_get("ts")?),
                p10: row.try_get("p10")?,
                p50: row.try_get("p50")?,
                p90: row.try_get("p90")?,
            };
            let version: String = row.try_get("model_version")?;
            let meters: i64 = row.try_get("meters")?;
            let f = out.get_or_insert_with(|| StoredForecast {
                model_version: version.clone(),
                made_at,
                meters: meters as u32,
                hours: Vec::new(),
            });
            if made_at >= f.made_at {
                (f.made_at, f.model_version) = (made_at, version);
            }
            f.hours.push(hour);
        }
        Ok(out)
    }

    /// Up to `limit` rows of `forecasts` in (meter, hour) order, after the row whose
    /// [`ForecastRow::cursor`] is `after`.
    pub async fn forecast_rows(&self, after: Option<&str>, limit: u32) -> Result<Vec<ForecastRow>> {
        let (meter, ts) = match after.and_then(|a| a.split_once('\n')) {
            Some((m, t)) => (
                m.to_owned(),
                t.parse::<i64>()
                    .map_err(|_| StoreError::Invalid(format!("bad forecast cursor {after:?}")))?,
            ),
            None => (String::new(), i64::MIN),
        };
        let rows = sqlx::query(
            "SELECT meter_id, ts, p10, p50, p90, model_version, made_at FROM forecasts \
             WHERE meter_id > $1 OR (meter_id = $1 AND ts > $2) ORDER BY meter_id, ts LIMIT $3",
        )
        .bind(meter)
        .bind(ts)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ForecastRow {
                    meter_id: r.try_get("meter_id")?,
                    hour: ForecastHour {
                        ts: instant(r.try_get("ts")?),
                        p10: r.try_get("p10")?,
                        p50: r.try_get("p50")?,
                        p90: r.try_get("p90")?,
                    },
                    model_version: r.try_get("model_version")?,
                    made_at: instant(r.try_get("made_at")?),
                })
            })
            .collect()
    }
}
