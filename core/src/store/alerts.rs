//! Alerts and their lifecycle: open → acknowledged → resolved.
//!
//! The pipeline emits `opened` and `resolved` events on the `alerts` topic (at least once);
//! [`SqlStore::record_alert`] applies them idempotently. Operators acknowledge and resolve
//! through the API. At most one alert per type and subject (its meter, or its feeder for
//! feeder alerts) is active at a time: a second `opened` for an active subject is the same
//! alert (a unique index enforces it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::webhooks::append_event;
use super::{Result, SqlStore, StoreError, from_micros, now_micros};
pub use crate::records::alert::Severity;
use crate::records::alert::{Alert, AlertEvent};

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition is on and nobody has acknowledged it.
    Open,
    /// Somebody took it.
    Acknowledged,
    /// The condition cleared, or an operator closed it.
    Resolved,
}

impl AlertState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "open" => Self::Open,
            "acknowledged" => Self::Acknowledged,
            "resolved" => Self::Resolved,
            other => {
                return Err(StoreError::Invalid(format!(
                    "alert state must be open, acknowledged or resolved, not {other:?}"
                )));
            }
        })
    }
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredAlert {
    /// Id.
    pub alert_id: String,
    /// Type.
    #[serde(rename = "type")]
    pub alert_type: String,
    /// Severity.
    pub severity: String,
    /// Meter.
    pub meter_id: Option<String>,
    /// Feeder.
    pub feeder: Option<String>,
    /// Lifecycle state.
    pub state: AlertState,
    /// When the condition began (reading time).
    pub start: DateTime<Utc>,
    /// When it cleared (reading time), if it did.
    pub end: Option<DateTime<Utc>>,
    /// When the store recorded it.
    pub opened_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Who acknowledged it (an API key's name).
    pub acknowledged_by: Option<String>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Who resolved it; absent when the condition cleared by itself.
    pub resolved_by: Option<String>,
    /// When.
    pub resolved_at: Option<DateTime<Utc>>,
    /// What triggered it.
    pub evidence: serde_json::Value,
}

/// What changed when an event or an action was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// A new alert.
    Opened,
    /// Open → acknowledged.
    Acknowledged,
    /// → resolved.
    Resolved,
    /// No change: a reminder that the alert is still unacknowledged (escalation).
    Reminder,
}

impl Transition {
    /// The snake_case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Acknowledged => "acknowledged",
            Self::Resolved => "resolved",
            Self::Reminder => "reminder",
        }
    }
}

/// Filters of [`SqlStore::list_alerts`] (`GET /api/v1/alerts`); newest first.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertFilter {
    /// Only this state.
    pub state: Option<AlertState>,
    /// Only this type.
    #[serde(rename = "type")]
    pub alert_type: Option<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Only this meter.
    pub meter: Option<String>,
    /// Only this feeder.
    pub feeder: Option<String>,
    /// Began at or after.
    pub from: Option<DateTime<Utc>>,
    /// Began before.
    pub to: Option<DateTime<Utc>>,
    /// Page size (1–1000, default 100).
    pub limit: Option<u32>,
    /// Continue after this alert id (from `next`).
    pub after: Option<String>,
}

const COLUMNS: &str = "alert_id, alert_type, severity, meter_id, feeder, state, started_at, ended_at, opened_at, updated_at, acknowledged_by, acknowledged_at, resolved_by, resolved_at, evidence";

fn alert_from_row(row: &AnyRow) -> Result<StoredAlert> {
    let opt_time = |name: &str| -> Result<Option<DateTime<Utc>>> {
        Ok(row.try_get::<Option<i64>, _>(name)?.map(from_micros))
    };
    let evidence: String = row.try_get("evidence")?;
    Ok(StoredAlert {
        alert_id: row.try_get("alert_id")?,
        alert_type: row.try_get("alert_type")?,
        severity: row.try_get("severity")?,
        meter_id: row.try_get("meter_id")?,
        feeder: row.try_get("feeder")?,
        state: AlertState::parse(&row.try_get::<String, _>("state")?)?,
        start: from_micros(row.try_get("started_at")?),
        end: opt_time("ended_at")?,
        opened_at: from_micros(row.try_get("opened_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
        acknowledged_by: row.try_get("acknowledged_by")?,
        acknowledged_at: opt_time("acknowledged_at")?,
        resolved_by: row.try_get("resolved_by")?,
        resolved_at: opt_time("resolved_at")?,
        evidence: serde_json::from_str(&evidence).unwrap_or(serde_json::Value::Null),
    })
}

async fn fetch<'e>(
    exec: impl sqlx::Executor<'e, Database = sqlx::Any>,
    alert_id: &str,
) -> Result<Option<StoredAlert>> {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM alerts WHERE alert_id = $1"
    )))
    .bind(alert_id)
    .fetch_optional(exec)
    .await?;
    row.as_ref().map(alert_from_row).transpose()
}

impl SqlStore {
    /// Applies an event of the `alerts` topic. Returns the alert and what changed, or `None`
    /// when nothing did (a redelivery, a second `opened` for an active subject, a
    /// `resolved` for an alert already resolved).
    pub async fn record_alert(&self, input: &Alert) -> Result<Option<(StoredAlert, Transition)>> {
        let opened = input.event == AlertEvent::Opened;
        let subject = input
            .subject()
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Invalid("an alert needs a meter or a feeder".into()))?;
        let now = now_micros();
        let evidence = input.evidence.to_string();
        let mut tx = self.begin().await?;
        let existing = fetch(&mut *tx, &input.alert_id).await?;
        let transition = match (&existing, opened) {
            (Some(_), true) => None,
            (Some(a), false) if a.state == AlertState::Resolved => None,
            (Some(_), false) => {
                sqlx::query(
                    "UPDATE alerts SET state = 'resolved', ended_at = $1, resolved_at = $2, updated_at = $2, evidence = $3 WHERE alert_id = $4",
                )
                .bind(input.end.unwrap_or(input.at).timestamp_micros())
                .bind(now)
                .bind(&evidence)
                .bind(&input.alert_id)
                .execute(&mut *tx)
                .await?;
                Some(Transition::Resolved)
            }
            (None, opened) => {
                // A `resolved` whose `opened` never arrived is stored resolved.
                let state = if opened { "open" } else { "resolved" };
                let inserted = sqlx::query(
                    "INSERT INTO alerts (alert_id, alert_type, severity, meter_id, feeder, subject, state, started_at, ended_at, opened_at, updated_at, resolved_at, evidence) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12) ON CONFLICT DO NOTHING",
                )
                .bind(&input.alert_id)
                .bind(input.kind.name())
                .bind(input.severity.as_str())
                .bind(input.meter_id.as_deref())
                .bind(input.feeder.as_deref())
                .bind(&subject)
                .bind(state)
                .bind(input.start.timestamp_micros())
                .bind(input.end.map(|t| t.timestamp_micros()))
                .bind(now)
                .bind((!opened).then_some(now))
                .bind(&evidence)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // No row: the subject already has an active alert of this type.
                (inserted == 1).then_some(if opened {
                    Transition::Opened
                } else {
                    Transition::Resolved
                })
            }
        };
        let result = match transition {
            Some(t) => fetch(&mut *tx, &input.alert_id).await?.map(|a| (a, t)),
            None => None,
        };
        if let Some((alert, t)) = &result {
            append_event(&mut tx, alert, *t).await?;
        }
        tx.commit().await?;
        if result.is_some() {
            self.notify();
        }
        Ok(result)
    }

    /// An operator acknowledges an open alert. Acknowledging an acknowledged alert changes
    /// nothing; a resolved one is a `Conflict`.
    pub async fn acknowledge_alert(
        &self,
        alert_id: &str,
        by: &str,
    ) -> Result<(StoredAlert, Option<Transition>)> {
        self.act(alert_id, by, AlertState::Acknowledged).await
    }

    /// An operator resolves an alert (open or acknowledged). Resolving a resolved alert
    /// changes nothing.
    pub async fn resolve_alert(
        &self,
        alert_id: &str,
        by: &str,
    ) -> Result<(StoredAlert, Option<Transition>)> {
        self.act(alert_id, by, AlertState::Resolved).await
    }

    async fn act(
        &self,
        alert_id: &str,
        by: &str,
        to: AlertState,
    ) -> Result<(StoredAlert, Option<Transition>)> {
        let mut tx = self.begin().await?;
        let alert = fetch(&mut *tx, alert_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("alert {alert_id}")))?;
        let now = now_micros();
        let transition = match (alert.state, to) {
            (AlertState::Open, AlertState::Acknowledged) => {
                sqlx::query("UPDATE alerts SET state = 'acknowledged', acknowledged_by = $1, acknowledged_at = $2, updated_at = $2 WHERE alert_id = $3")
                    .bind(by)
                    .bind(now)
                    .bind(alert_id)
                    .execute(&mut *tx)
                    .await?;
                Some(Transition::Acknowledged)
            }
            (AlertState::Acknowledged, AlertState::Acknowledged)
            | (AlertState::Resolved, AlertState::Resolved) => None,
            (AlertState::Resolved, _) => {
                return Err(StoreError::Conflict(format!(
                    "alert {alert_id} is resolved; it cannot be acknowledged"
                )));
            }
            (_, _) => {
                sqlx::query("UPDATE alerts SET state = 'resolved', resolved_by = $1, resolved_at = $2, updated_at = $2 WHERE alert_id = $3")
                    .bind(by)
                    .bind(now)
                    .bind(alert_id)
                    .execute(&mut *tx)
                    .await?;
                Some(Transition::Resolved)
            }
        };
        let alert = fetch(&mut *tx, alert_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("alert {alert_id}")))?;
        if let Some(t) = transition {
            append_event(&mut tx, &alert, t).await?;
        }
        tx.commit().await?;
        if transition.is_some() {
            self.notify();
        }
        Ok((alert, transition))
    }

    /// How many alerts are open (not yet acknowledged or resolved).
    pub async fn open_alert_count(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM alerts WHERE state = 'open'")
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or_default())
    }

    /// One alert.
    pub async fn alert(&self, alert_id: &str) -> Result<Option<StoredAlert>> {
        fetch(self.pool(), alert_id).await
    }

    /// Alerts matching `filter`, newest first (by start, then id), a page at a time.
    pub async fn list_alerts(&self, filter: &AlertFilter) -> Result<Vec<StoredAlert>> {
        enum Bind {
            Text(String),
            Micros(i64),
        }
        let mut sql = format!("SELECT {COLUMNS} FROM alerts WHERE 1 = 1");
        let mut binds: Vec<Bind> = Vec::new();
        // Each `?` of `clause` takes the next of `values`, as `$n`.
        let mut and = |clause: &str, values: Vec<Bind>| {
            let mut parts = clause.split('?');
            sql.push_str(" AND ");
            sql.push_str(parts.next().unwrap_or_default());
            for (part, value) in parts.zip(values) {
                binds.push(value);
                sql.push_str(&format!("${}{part}", binds.len()));
            }
        };
        for (clause, value) in [
            ("state = ?", filter.state.map(|s| s.as_str().to_owned())),
            ("alert_type = ?", filter.alert_type.clone()),
            ("severity = ?", filter.severity.clone()),
            ("meter_id = ?", filter.meter.clone()),
            ("feeder = ?", filter.feeder.clone()),
        ] {
            if let Some(v) = value {
                and(clause, vec![Bind::Text(v)]);
            }
        }
        if let Some(from) = filter.from {
            and(
                "started_at >= ?",
                vec![Bind::Micros(from.timestamp_micros())],
            );
        }
        if let Some(to) = filter.to {
            and("started_at < ?", vec![Bind::Micros(to.timestamp_micros())]);
        }
        if let Some(id) = &filter.after {
            let a = self
                .alert(id)
                .await?
                .ok_or_else(|| StoreError::Invalid(format!("`after`: no alert {id}")))?;
            // Newest first: the next page holds older starts, or the same start and smaller ids.
            let start = a.start.timestamp_micros();
            and(
                "(started_at < ? OR (started_at = ? AND alert_id < ?))",
                vec![
                    Bind::Micros(start),
                    Bind::Micros(start),
                    Bind::Text(a.alert_id),
                ],
            );
        }
        let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
        sql.push_str(&format!(
            " ORDER BY started_at DESC, alert_id DESC LIMIT {limit}"
        ));
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in binds {
            query = match b {
                Bind::Text(t) => query.bind(t),
                Bind::Micros(t) => query.bind(t),
            };
        }
        let rows = query.fetch_all(self.pool()).await?;
        rows.iter().map(alert_from_row).collect()
    }
}
