//! The outbox: one delivery row per (subscription, event), due times and leases, every
//! attempt logged with its outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{AssertSqlSafe, Row};

use crate::store::{Result, SqlStore, StoreError, from_micros, now_micros};

/// The state of a delivery in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// A 2xx answer.
    Delivered,
    /// Out of attempts, or its subscription was disabled: a dead letter (replay re-sends).
    Dead,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            "dead" => Self::Dead,
            other => {
                return Err(StoreError::Invalid(format!(
                    "delivery state must be pending, delivered or dead, not {other:?}"
                )));
            }
        })
    }
}

/// A row of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// The subscription.
    pub subscription_id: String,
    /// The event's sequence number.
    pub seq: i64,
    /// The `webhook-id` it is sent with.
    pub event_id: String,
    /// `opened`, `acknowledged`, `resolved`, `reminder`.
    pub event: String,
    /// The alert.
    pub alert_id: String,
    /// Where it is.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// The last answer's status.
    pub last_status: Option<i64>,
    /// The last error.
    pub last_error: Option<String>,
}

/// One attempt of the delivery log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// The event's sequence number.
    pub seq: i64,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The HTTP status, if an answer came.
    pub status: Option<i64>,
    /// Request to answer (or failure), milliseconds.
    pub latency_ms: f64,
    /// What went wrong.
    pub error: Option<String>,
}

/// A due delivery with everything needed to send it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The subscription.
    pub subscription_id: String,
    /// The event.
    pub seq: i64,
    /// Attempts made before this one.
    pub attempts: i64,
    /// When it was due (µs), as read: the claim checks it.
    pub due_at: i64,
    /// When the event was queued.
    pub queued_at: DateTime<Utc>,
    /// The target.
    pub url: String,
    /// Signing secrets (`whsec_…`): the current one, and the previous one during a rotation.
    pub secrets: Vec<String>,
    /// The `webhook-id`.
    pub event_id: String,
    /// The exact JSON body.
    pub body: String,
}

/// What an attempt leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// Delivered.
    Delivered,
    /// Try again at this time.
    Retry(DateTime<Utc>),
    /// No more attempts: a dead letter.
    Dead,
    /// The receiver said 410 Gone: the subscription is disabled with this reason.
    Gone(String),
}

/// One attempt's result, for [`SqlStore::record_attempt`].
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// When it started.
    pub at: DateTime<Utc>,
    /// The status, if an answer came.
    pub status: Option<u16>,
    /// How long it took.
    pub latency: Duration,
    /// What went wrong.
    pub error: Option<String>,
    /// What happens next.
    pub outcome: AttemptOutcome,
}

impl SqlStore {
    /// Enabled subscriptions with deliveries due at `now`.
    pub async fn due_subscriptions(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT d.subscription_id FROM deliveries d JOIN subscriptions s ON s.subscription_id = d.subscription_id \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND s.enabled = 1",
        )
        .bind(now.timestamp_micros())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Pending deliveries due at `now` (of one subscription, or all), earliest first, with
    /// what is needed to send them.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        subscription: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Job>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.subscription_id, d.seq, d.attempts, d.next_attempt_at, d.created_at, s.url, s.secret, s.previous_secret, s.previous_until, e.event_id, e.body \
             FROM deliveries d JOIN subscriptions s ON s.subscription_id = d.subscription_id JOIN alert_events e ON e.seq = d.seq \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND s.enabled = 1 AND ($2 = '' OR d.subscription_id = $2) \
             ORDER BY d.next_attempt_at, d.seq LIMIT {}",
            limit.max(1)
        )))
        .bind(now.timestamp_micros())
        .bind(subscription.unwrap_or(""))
        .fetch_all(self.pool())
        .await?;
        let now_us = now.timestamp_micros();
        rows.iter()
            .map(|row| {
                let mut secrets = vec![row.try_get::<String, _>("secret")?];
                let until: Option<i64> = row.try_get("previous_until")?;
                if let (Some(prev), Some(until)) =
                    (row.try_get::<Option<String>, _>("previous_secret")?, until)
                    && until > now_us
                {
                    secrets.push(prev);
                }
                Ok(Job {
                    subscription_id: row.try_get("subscription_id")?,
                    seq: row.try_get("seq")?,
                    attempts: row.try_get("attempts")?,
                    due_at: row.try_get("next_attempt_at")?,
                    queued_at: from_micros(row.try_get("created_at")?),
                    url: row.try_get("url")?,
                    secrets,
                    event_id: row.try_get("event_id")?,
                    body: row.try_get("body")?,
                })
            })
            .collect()
    }

    /// Takes `job` for one attempt: moves its due time to `lease_until`, so no other
    /// dispatcher sends it meanwhile and, if this one dies, it is due again then. `false` when
    /// another dispatcher took it first.
    pub async fn claim(&self, job: &Job, lease_until: DateTime<Utc>) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE deliveries SET next_attempt_at = $1 WHERE subscription_id = $2 AND seq = $3 AND state = 'pending' AND next_attempt_at = $4",
        )
        .bind(lease_until.timestamp_micros())
        .bind(&job.subscription_id)
        .bind(job.seq)
        .bind(job.due_at)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// When the earliest pending delivery of an enabled subscription is due.
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        let next: Option<i64> = sqlx::query(
            "SELECT MIN(d.next_attempt_at) FROM deliveries d JOIN subscriptions s ON s.subscription_id = d.subscription_id WHERE d.state = 'pending' AND s.enabled = 1",
        )
        .fetch_one(self.pool())
        .await?
        .try_get(0)?;
        Ok(next.map(from_micros))
    }

    /// Logs an attempt of `job` and moves its delivery on. A 410 disables the subscription
    /// and makes its pending deliveries dead letters.
    pub async fn record_attempt(&self, job: &Job, record: &AttemptRecord) -> Result<()> {
        let attempt = job.attempts + 1;
        let now = now_micros();
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO delivery_attempts (subscription_id, seq, attempt, at, status, latency_us, error) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&job.subscription_id)
        .bind(job.seq)
        .bind(attempt)
        .bind(record.at.timestamp_micros())
        .bind(record.status.map(i64::from))
        .bind(i64::try_from(record.latency.as_micros()).unwrap_or(i64::MAX))
        .bind(record.error.as_deref())
        .execute(&mut *tx)
        .await?;
        let (state, next) = match &record.outcome {
            AttemptOutcome::Delivered => (DeliveryState::Delivered, now),
            AttemptOutcome::Retry(at) => (DeliveryState::Pending, at.timestamp_micros()),
            AttemptOutcome::Dead | AttemptOutcome::Gone(_) => (DeliveryState::Dead, now),
        };
        sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = $2, next_attempt_at = $3, updated_at = $4, last_status = $5, last_error = $6 WHERE subscription_id = $7 AND seq = $8 AND state = 'pending'",
        )
        .bind(state.as_str())
        .bind(attempt)
        .bind(next)
        .bind(now)
        .bind(record.status.map(i64::from))
        .bind(record.error.as_deref())
        .bind(&job.subscription_id)
        .bind(job.seq)
        .execute(&mut *tx)
        .await?;
        if let AttemptOutcome::Gone(reason) = &record.outcome {
            sqlx::query("UPDATE subscriptions SET enabled = 0, disabled_reason = $1, updated_at = $2 WHERE subscription_id = $3")
                .bind(reason)
                .bind(now)
                .bind(&job.subscription_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE deliveries SET state = 'dead', last_error = $1, updated_at = $2 WHERE subscription_id = $3 AND state = 'pending'")
                .bind(reason)
                .bind(now)
                .bind(&job.subscription_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deliveries of subscription `id`, newest first, optionally in one state, before
    /// sequence number `before`.
    pub async fn list_deliveries(
        &self,
        id: &str,
        state: Option<DeliveryState>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        self.subscription(id).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.subscription_id, d.seq, e.event_id, e.event, e.alert_id, d.state, d.attempts, d.next_attempt_at, d.created_at, d.last_status, d.last_error \
             FROM deliveries d JOIN alert_events e ON e.seq = d.seq \
             WHERE d.subscription_id = $1 AND ($2 = '' OR d.state = $2) AND d.seq < $3 \
             ORDER BY d.seq DESC LIMIT {}",
            limit.clamp(1, 1000)
        )))
        .bind(id)
        .bind(state.map_or("", DeliveryState::as_str))
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let state = DeliveryState::parse(&row.try_get::<String, _>("state")?)?;
                Ok(Delivery {
                    subscription_id: row.try_get("subscription_id")?,
                    seq: row.try_get("seq")?,
                    event_id: row.try_get("event_id")?,
                    event: row.try_get("event")?,
                    alert_id: row.try_get("alert_id")?,
                    state,
                    attempts: row.try_get("attempts")?,
                    next_attempt_at: (state == DeliveryState::Pending)
                        .then(|| row.try_get("next_attempt_at").map(from_micros))
                        .transpose()?,
                    created_at: from_micros(row.try_get("created_at")?),
                    last_status: row.try_get("last_status")?,
                    last_error: row.try_get("last_error")?,
                })
            })
            .collect()
    }

    /// The delivery log of subscription `id`: attempts, newest first, optionally of one
    /// event, before `before` (an attempt's time).
    pub async fn list_attempts(
        &self,
        id: &str,
        seq: Option<i64>,
        before: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<Attempt>> {
        self.subscription(id).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT seq, attempt, at, status, latency_us, error FROM delivery_attempts \
             WHERE subscription_id = $1 AND ($2 < 0 OR seq = $2) AND at < $3 \
             ORDER BY at DESC, seq DESC, attempt DESC LIMIT {}",
            limit.clamp(1, 1000)
        )))
        .bind(id)
        .bind(seq.unwrap_or(-1))
        .bind(before.map_or(i64::MAX, |t| t.timestamp_micros()))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Attempt {
                    seq: row.try_get("seq")?,
                    attempt: row.try_get("attempt")?,
                    at: from_micros(row.try_get("at")?),
                    status: row.try_get("status")?,
                    latency_ms: row.try_get::<i64, _>("latency_us")? as f64 / 1000.0,
                    error: row.try_get("error")?,
                })
            })
            .collect()
    }
}
