//! The alert event feed: every lifecycle event numbered in commit order (`alert_events`), the
//! pull API's reads of it, and reminders for alerts left unacknowledged.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, Row};

use super::*;
use crate::store::alerts::{Severity, StoredAlert, Transition};
use crate::store::{Result, SqlStore, StoreError, from_micros, now_micros};

/// A page of the event feed.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    /// Events (webhook bodies) in order.
    pub events: Vec<serde_json::Value>,
    /// The cursor to pass as `after` next time.
    pub next: i64,
}

/// Appends `event` of `alert` to the feed and queues its deliveries, in `tx`. Returns its
/// sequence number.
pub(crate) async fn append_event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    alert: &StoredAlert,
    event: Transition,
) -> Result<i64> {
    let seq: i64 = sqlx::query(
        "UPDATE sequences SET last = last + 1 WHERE name = 'alert_events' RETURNING last",
    )
    .fetch_one(&mut **tx)
    .await?
    .try_get(0)?;
    let now = now_micros();
    let event_id = format!("evt_{seq}_{}", random_hex(8));
    let name = event.as_str();
    let body = serde_json::json!({
        "type": format!("alert.{name}"),
        "timestamp": from_micros(now).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": { "seq": seq, "event_id": event_id, "event": name, "alert": alert },
    })
    .to_string();
    sqlx::query(
        "INSERT INTO alert_events (seq, event_id, alert_id, event, at, body) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(seq)
    .bind(&event_id)
    .bind(&alert.alert_id)
    .bind(name)
    .bind(now)
    .bind(&body)
    .execute(&mut **tx)
    .await?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {SUB_COLUMNS} FROM subscriptions WHERE enabled = 1"
    )))
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        let sub = subscription_from_row(row)?;
        if sub.filter.matches(alert) {
            sqlx::query(
                "INSERT INTO deliveries (subscription_id, seq, state, attempts, next_attempt_at, created_at, updated_at) VALUES ($1, $2, 'pending', 0, $3, $3, $3)",
            )
            .bind(&sub.subscription_id)
            .bind(seq)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(seq)
}

impl SqlStore {
    /// Events after sequence number `after`, oldest first, at most `limit`.
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<EventPage> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, body FROM alert_events WHERE seq > $1 ORDER BY seq LIMIT {}",
            limit.clamp(1, 1000)
        )))
        .bind(after)
        .fetch_all(self.pool())
        .await?;
        let mut next = after;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            next = row.try_get("seq")?;
            let body: String = row.try_get("body")?;
            events.push(serde_json::from_str(&body).map_err(|e| {
                StoreError::Invalid(format!("stored event {next} is not JSON: {e}"))
            })?);
        }
        Ok(EventPage { events, next })
    }

    /// The newest event's sequence number (0 when there is none): a cursor that reads only
    /// what comes next.
    pub async fn last_event_seq(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM alert_events")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("seq")?)
    }

    /// Like [`events_after`](Self::events_after), but waits up to `wait` for an event when
    /// there is none yet (a long poll). Events committed by this process wake it at once;
    /// events of other processes are seen within `recheck`.
    pub async fn wait_events(
        &self,
        after: i64,
        limit: u32,
        wait: Duration,
        recheck: Duration,
    ) -> Result<EventPage> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.changes();
        loop {
            let page = self.events_after(after, limit).await?;
            if !page.events.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(page);
            }
            let next = (tokio::time::Instant::now() + recheck).min(deadline);
            tokio::select! {
                _ = changes.changed() => {}
                _ = tokio::time::sleep_until(next) => {}
            }
        }
    }

    /// Open (unacknowledged) alerts whose last reminder, or opening, is older than
    /// `after(severity)`; severities without a time get none.
    pub async fn due_reminders(
        &self,
        now: DateTime<Utc>,
        after: impl Fn(Severity) -> Option<Duration>,
    ) -> Result<Vec<(StoredAlert, i64)>> {
        let rows = sqlx::query(
            "SELECT alert_id, severity, COALESCE(reminded_at, opened_at) AS since FROM alerts WHERE state = 'open'",
        )
        .fetch_all(self.pool())
        .await?;
        let mut due = Vec::new();
        for row in &rows {
            let since: i64 = row.try_get("since")?;
            let Ok(severity) = Severity::parse(&row.try_get::<String, _>("severity")?) else {
                continue;
            };
            let Some(limit) = after(severity) else {
                continue;
            };
            let limit = i64::try_from(limit.as_micros()).unwrap_or(i64::MAX);
            if now.timestamp_micros().saturating_sub(since) >= limit {
                let id: String = row.try_get("alert_id")?;
                if let Some(alert) = self.alert(&id).await? {
                    due.push((alert, since));
                }
            }
        }
        Ok(due)
    }

    /// Sends a reminder for `alert` unless another process did since `since` (what
    /// [`due_reminders`](Self::due_reminders) saw) or the alert changed. Returns whether it
    /// did.
    pub async fn remind(&self, alert: &StoredAlert, since: i64) -> Result<bool> {
        let now = now_micros();
        let mut tx = self.begin().await?;
        let claimed = sqlx::query(
            "UPDATE alerts SET reminded_at = $1 WHERE alert_id = $2 AND state = 'open' AND COALESCE(reminded_at, opened_at) = $3",
        )
        .bind(now)
        .bind(&alert.alert_id)
        .bind(since)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 1 {
            append_event(&mut tx, alert, Transition::Reminder).await?;
        }
        tx.commit().await?;
        if claimed == 1 {
            self.notify();
        }
        Ok(claimed == 1)
    }
}
