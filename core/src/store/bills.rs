//! Bills of billing runs, by meter, period and revision: a period billed again gets a new
//! revision only when its bill changed; older revisions are kept.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::Row;

use super::forecasts::{instant, placeholders};
use super::tariffs::date;
use super::{Result, SqlStore, StoreError, now_micros};

/// A stored bill. What `lines` and `carry` hold is the billing crate's (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBill {
    /// The meter.
    pub meter_id: String,
    /// The cycle's month, `YYYY-MM`.
    pub period: String,
    /// 1, 2, … per meter and period.
    pub revision: i64,
    /// The tariff billed.
    pub tariff_id: String,
    /// Its version.
    pub tariff_version: i64,
    /// First local date billed.
    pub from: NaiveDate,
    /// Last local date billed.
    pub to: NaiveDate,
    /// ISO 4217 code.
    pub currency: String,
    /// The total.
    pub total: f64,
    /// The share of estimated intervals.
    pub estimated_share: f64,
    /// The lines (JSON array).
    pub lines: String,
    /// What the next cycle starts from (JSON).
    pub carry: String,
    /// When this revision was made.
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "meter_id, period, revision, tariff_id, tariff_version, bill_from, bill_to, \
                       currency, total, estimated_share, lines, carry, created_at";

fn row(r: &sqlx::any::AnyRow) -> Result<StoredBill> {
    Ok(StoredBill {
        meter_id: r.try_get("meter_id")?,
        period: r.try_get("period")?,
        revision: r.try_get("revision")?,
        tariff_id: r.try_get("tariff_id")?,
        tariff_version: r.try_get("tariff_version")?,
        from: date(&r.try_get::<String, _>("bill_from")?)?,
        to: date(&r.try_get::<String, _>("bill_to")?)?,
        currency: r.try_get("currency")?,
        total: r.try_get("total")?,
        estimated_share: r.try_get("estimated_share")?,
        lines: r.try_get("lines")?,
        carry: r.try_get("carry")?,
        created_at: instant(r.try_get("created_at")?),
    })
}

/// Rows per INSERT statement (12 binds each).
const CHUNK: usize = 80;

impl SqlStore {
    /// The newest revision of every meter's bill for `period`.
    pub async fn latest_bills(&self, period: &str) -> Result<HashMap<String, StoredBill>> {
        let sql =
            format!("SELECT {COLUMNS} FROM bills WHERE period = $1 ORDER BY meter_id, revision");
        let mut out = HashMap::new();
        for r in sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(period)
            .fetch_all(self.pool())
            .await?
            .iter()
        {
            let bill = row(r)?;
            out.insert(bill.meter_id.clone(), bill);
        }
        Ok(out)
    }

    /// Every revision of one meter's bills (all meters when `None`), by meter, period and
    /// revision.
    pub async fn bills(&self, meter_id: Option<&str>) -> Result<Vec<StoredBill>> {
        let filter = if meter_id.is_some() {
            "WHERE meter_id = $1"
        } else {
            ""
        };
        let sql =
            format!("SELECT {COLUMNS} FROM bills {filter} ORDER BY meter_id, period, revision");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(id) = meter_id {
            query = query.bind(id);
        }
        query
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(row)
            .collect()
    }

    /// Adds revisions in one transaction. Each bill's `revision` must be one past the newest
    /// stored for its meter and period (a concurrent run that got there first makes this
    /// fail as a conflict, and nothing is written).
    pub async fn add_bills(&self, bills: &[StoredBill]) -> Result<u64> {
        let created_at = now_micros();
        let mut tx = self.begin().await?;
        for chunk in bills.chunks(CHUNK) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p = placeholders(i, 12);
                    format!("{}, {created_at})", &p[..p.len() - 1])
                })
                .collect();
            let sql = format!("INSERT INTO bills ({COLUMNS}) VALUES {}", values.join(", "));
            // Built from placeholders and our own integer only; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for b in chunk {
                q = q
                    .bind(&b.meter_id)
                    .bind(&b.period)
                    .bind(b.revision)
                    .bind(&b.tariff_id)
                    .bind(b.tariff_version)
                    .bind(b.from.to_string())
                    .bind(b.to.to_string())
                    .bind(&b.currency)
                    .bind(b.total)
                    .bind(b.estimated_share)
                    .bind(&b.lines)
                    .bind(&b.carry);
            }
            q.execute(&mut *tx).await.map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    StoreError::Conflict("a revision of these bills (another run)".into())
                }
                other => StoreError::Query(other),
            })?;
        }
        tx.commit().await?;
        Ok(bills.len() as u64)
    }
}
