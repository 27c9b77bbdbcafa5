//! Alert delivery: the event feed, webhook subscriptions and the outbox.
//!
//! Every lifecycle event of an alert (opened, acknowledged, resolved, reminder) is appended to
//! `alert_events` in the transaction that changes the alert, numbered under a row lock so
//! sequence order is commit order: the pull API (`GET /api/v1/alerts/events?after=`) reads
//! `seq > cursor` and never skips an event. The same transaction writes one outbox row
//! (`deliveries`) for every enabled subscription whose filters match, so an event is either
//! stored with all its deliveries or not at all, and a restart loses none of them. The
//! dispatcher (`meterstack_pipeline::webhooks`) sends due rows and records each attempt.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::alerts::{Severity, StoredAlert, Transition};
use super::secret::random_hex;
use super::{Result, SqlStore, StoreError, from_micros, now_micros};

/// What a subscription receives: empty lists mean all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionFilter {
    /// Alert types (`voltage_swell`, …).
    pub types: Vec<String>,
    /// The least urgent severity delivered (`major` delivers critical and major).
    pub min_severity: Option<Severity>,
    /// Meters.
    pub meters: Vec<String>,
    /// Feeders.
    pub feeders: Vec<String>,
}

impl SubscriptionFilter {
    /// Whether `alert` passes.
    pub fn matches(&self, alert: &StoredAlert) -> bool {
        let within = |list: &[String], value: Option<&str>| {
            list.is_empty() || value.is_some_and(|v| list.iter().any(|l| l == v))
        };
        within(&self.types, Some(&alert.alert_type))
            && within(&self.meters, alert.meter_id.as_deref())
            && within(&self.feeders, alert.feeder.as_deref())
            && self
                .min_severity
                .is_none_or(|min| Severity::parse(&alert.severity).is_ok_and(|s| s <= min))
    }
}

/// A webhook subscription, as the API shows it (never its secrets).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subscription {
    /// Id (`sub_…`).
    pub subscription_id: String,
    /// Free text.
    pub description: String,
    /// Where deliveries are POSTed.
    pub url: String,
    /// What it receives.
    #[serde(flatten)]
    pub filter: SubscriptionFilter,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// Why it was disabled (`410 Gone`, an operator).
    pub disabled_reason: Option<String>,
    /// Until when the previous secret still signs, after a rotation.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A change to a subscription; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionPatch {
    /// New target (checked by the caller).
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New types.
    pub types: Option<Vec<String>>,
    /// New minimum severity.
    pub min_severity: Option<Severity>,
    /// New meters.
    pub meters: Option<Vec<String>>,
    /// New feeders.
    pub feeders: Option<Vec<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

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

/// A page of the event feed.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    /// Events (webhook bodies) in order.
    pub events: Vec<serde_json::Value>,
    /// The cursor to pass as `after` next time.
    pub next: i64,
}

/// A new signing secret in the Standard Webhooks format: `whsec_` and 32 random bytes in
/// base64.
pub fn generate_signing_secret() -> String {
    let raw = hex::decode(random_hex(32)).unwrap_or_default();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

const SUB_COLUMNS: &str = "subscription_id, description, url, types, min_severity, meters, feeders, enabled, disabled_reason, previous_until, created_by, created_at, updated_at";

fn json_list(row: &AnyRow, name: &str) -> Result<Vec<String>> {
    let text: String = row.try_get(name)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Invalid(format!("stored {name} is not a JSON list: {e}")))
}

fn subscription_from_row(row: &AnyRow) -> Result<Subscription> {
    Ok(Subscription {
        subscription_id: row.try_get("subscription_id")?,
        description: row.try_get("description")?,
        url: row.try_get("url")?,
        filter: SubscriptionFilter {
            types: json_list(row, "types")?,
            min_severity: row
                .try_get::<Option<String>, _>("min_severity")?
                .map(|s| Severity::parse(&s))
                .transpose()?,
            meters: json_list(row, "meters")?,
            feeders: json_list(row, "feeders")?,
        },
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        disabled_reason: row.try_get("disabled_reason")?,
        previous_secret_until: row
            .try_get::<Option<i64>, _>("previous_until")?
            .filter(|&t| t > now_micros())
            .map(from_micros),
        created_by: row.try_get("created_by")?,
        created_at: from_micros(row.try_get("created_at")?),
        updated_at: from_micros(row.try_get("updated_at")?),
    })
}

fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn transition_name(t: Transition) -> &'static str {
    match t {
        Transition::Opened => "opened",
        Transition::Acknowledged => "acknowledged",
        Transition::Resolved => "resolved",
        Transition::Reminder => "reminder",
    }
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
    let name = transition_name(event);
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
    // ---- subscriptions ----

    /// Creates a subscription to `url` (already checked by the caller). Returns it and its
    /// signing secret, which is shown this once.
    pub async fn create_subscription(
        &self,
        url: &str,
        description: &str,
        filter: &SubscriptionFilter,
        by: &str,
    ) -> Result<(Subscription, String)> {
        let id = format!("sub_{}", random_hex(10));
        let secret = generate_signing_secret();
        let now = now_micros();
        sqlx::query(
            "INSERT INTO subscriptions (subscription_id, description, url, types, min_severity, meters, feeders, secret, enabled, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $10)",
        )
        .bind(&id)
        .bind(description)
        .bind(url)
        .bind(to_json(&filter.types))
        .bind(filter.min_severity.map(Severity::as_str))
        .bind(to_json(&filter.meters))
        .bind(to_json(&filter.feeders))
        .bind(&secret)
        .bind(by)
        .bind(now)
        .execute(self.pool())
        .await?;
        let sub = self.subscription(&id).await?;
        Ok((sub, secret))
    }

    /// One subscription.
    pub async fn subscription(&self, id: &str) -> Result<Subscription> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUB_COLUMNS} FROM subscriptions WHERE subscription_id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("subscription {id}")))?;
        subscription_from_row(&row)
    }

    /// Every subscription, oldest first.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SUB_COLUMNS} FROM subscriptions ORDER BY created_at, subscription_id"
        )))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    /// Applies `patch` (its URL already checked). Enabling clears the disabled reason.
    pub async fn update_subscription(
        &self,
        id: &str,
        patch: &SubscriptionPatch,
    ) -> Result<Subscription> {
        let mut sub = self.subscription(id).await?;
        let p = patch.clone();
        if let Some(url) = p.url {
            sub.url = url;
        }
        if let Some(d) = p.description {
            sub.description = d;
        }
        if let Some(t) = p.types {
            sub.filter.types = t;
        }
        if p.min_severity.is_some() {
            sub.filter.min_severity = p.min_severity;
        }
        if let Some(m) = p.meters {
            sub.filter.meters = m;
        }
        if let Some(f) = p.feeders {
            sub.filter.feeders = f;
        }
        if let Some(enabled) = p.enabled {
            sub.enabled = enabled;
            sub.disabled_reason = (!enabled).then(|| "disabled by an operator".to_owned());
        }
        sqlx::query(
            "UPDATE subscriptions SET url = $1, description = $2, types = $3, min_severity = $4, meters = $5, feeders = $6, enabled = $7, disabled_reason = $8, updated_at = $9 WHERE subscription_id = $10",
        )
        .bind(&sub.url)
        .bind(&sub.description)
        .bind(to_json(&sub.filter.types))
        .bind(sub.filter.min_severity.map(Severity::as_str))
        .bind(to_json(&sub.filter.meters))
        .bind(to_json(&sub.filter.feeders))
        .bind(i64::from(sub.enabled))
        .bind(sub.disabled_reason.as_deref())
        .bind(now_micros())
        .bind(id)
        .execute(self.pool())
        .await?;
        self.subscription(id).await
    }

    /// Deletes a subscription with its outbox rows and delivery log.
    pub async fn delete_subscription(&self, id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        for table in ["deliveries", "delivery_attempts"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE subscription_id = $1"
            )))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        let gone = sqlx::query("DELETE FROM subscriptions WHERE subscription_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Err(StoreError::NotFound(format!("subscription {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// A new signing secret. The previous one keeps signing (both signatures are sent) for
    /// `overlap`, so receivers can switch without losing a delivery. Returns the new secret.
    pub async fn rotate_secret(
        &self,
        id: &str,
        overlap: Duration,
    ) -> Result<(Subscription, String)> {
        let secret = generate_signing_secret();
        let now = now_micros();
        let until = now.saturating_add(i64::try_from(overlap.as_micros()).unwrap_or(i64::MAX));
        let changed = sqlx::query(
            "UPDATE subscriptions SET previous_secret = secret, previous_until = $1, secret = $2, updated_at = $3 WHERE subscription_id = $4",
        )
        .bind(until)
        .bind(&secret)
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound(format!("subscription {id}")));
        }
        Ok((self.subscription(id).await?, secret))
    }

    /// Queues the dead letters of subscription `id` queued at or after `from` again, with a
    /// fresh schedule. Returns how many.
    pub async fn replay(&self, id: &str, from: DateTime<Utc>) -> Result<u64> {
        let sub = self.subscription(id).await?;
        if !sub.enabled {
            return Err(StoreError::Conflict(format!(
                "subscription {id} is disabled; enable it before replaying"
            )));
        }
        let now = now_micros();
        let n = sqlx::query(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = $1, updated_at = $1 WHERE subscription_id = $2 AND state = 'dead' AND created_at >= $3",
        )
        .bind(now)
        .bind(id)
        .bind(from.timestamp_micros())
        .execute(self.pool())
        .await?
        .rows_affected();
        self.notify();
        Ok(n)
    }

    // ---- the outbox ----

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

    // ---- the event feed ----

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

    // ---- escalation ----

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
