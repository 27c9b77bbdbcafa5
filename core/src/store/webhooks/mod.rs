//! Alert delivery: the event feed, webhook subscriptions and the outbox.
//!
//! Every lifecycle event of an alert (opened, acknowledged, resolved, reminder) is appended to
//! `alert_events` in the transaction that changes the alert, numbered under a row lock so
//! sequence order is commit order: the pull API (`GET /api/v1/alerts/events?after=`) reads
//! `seq > cursor` and never skips an event. The same transaction writes one outbox row
//! (`deliveries`) for every enabled subscription whose filters match, so an event is either
//! stored with all its deliveries or not at all, and a restart loses none of them. The
//! dispatcher (`meterstack_pipeline::sinks::webhooks`) sends due rows and records each attempt.

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

mod events;
mod outbox;

pub use events::EventPage;
pub(crate) use events::append_event;
pub use outbox::{Attempt, AttemptOutcome, AttemptRecord, Delivery, DeliveryState, Job};

use super::alerts::{Severity, StoredAlert};
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

    // ---- the event feed ----

    // ---- escalation ----
}
