//! Webhook delivery (the SNS of the AWS design): sends the outbox of the SQL store
//! ([`meterstack_core::store::webhooks`]) to subscribers, signed per the Standard Webhooks
//! specification ([`sign`]), through a connector that refuses non-public addresses
//! ([`connect`]); and escalation reminders for alerts left unacknowledged.
//!
//! Each due delivery is claimed (its due time becomes a lease), sent once, and its attempt
//! logged with what happens next: delivered on 2xx; disabled on 410 Gone; otherwise retried
//! after the next delay of `retry_schedule` (± `jitter`), or later when the receiver asks
//! with `Retry-After`, until the schedule is spent and the delivery becomes a dead letter.
//! Redirects are not followed. Every subscription has its own lanes (`per_subscription`
//! attempts at once), so a slow or dead receiver never holds up the others. The outbox is
//! the only state: a restart resumes every schedule where it was.

pub mod connect;
pub mod sign;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use meterstack_core::backoff::Backoff;
use meterstack_core::component::{BoxError, Component, Context};
use meterstack_core::duration::{self, Human};
use meterstack_core::egress::EgressPolicy;
use meterstack_core::metrics as m;
use meterstack_core::store::SqlStore;
use meterstack_core::store::alerts::Severity;
use meterstack_core::store::webhooks::{AttemptOutcome, AttemptRecord, Job};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use connect::{ConnectError, GuardedConnector};

/// Section `[webhooks]` of `meterstack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Delays before the 2nd, 3rd, … attempt; one attempt more than there are delays. The
    /// default (Standard Webhooks' own) spans 27.5 hours.
    pub retry_schedule: Vec<Human>,
    /// Each delay varies by up to this fraction either way, so retries of many deliveries
    /// after an outage do not arrive at once.
    pub jitter: f64,
    /// How long one attempt may take, connection to the end of the answer.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// How long a connection may take.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// The longest `Retry-After` honoured.
    #[serde(with = "duration")]
    pub max_retry_after: Duration,
    /// Attempts in flight at once, in all.
    pub concurrency: usize,
    /// Attempts in flight at once to one subscription.
    pub per_subscription: usize,
    /// How often the outbox is read when nothing in this process wakes the dispatcher
    /// (events committed by another process, due retries), and how often reminders are due.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// Reminders for alerts left unacknowledged, per severity: `critical = "15m"` sends one
    /// every 15 minutes until the alert is acknowledged or resolved.
    pub reminders: BTreeMap<Severity, Human>,
    /// How long the previous secret keeps signing after a rotation.
    #[serde(with = "duration")]
    pub rotation_overlap: Duration,
    /// Networks accepted as webhook targets although they are not public (on-premises
    /// receivers): `["10.20.0.0/16"]`.
    pub allow: Vec<IpNet>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        let s = Duration::from_secs;
        Self {
            retry_schedule: [
                s(5),
                s(5 * 60),
                s(30 * 60),
                s(2 * 3600),
                s(5 * 3600),
                s(10 * 3600),
                s(10 * 3600),
            ]
            .map(Human)
            .to_vec(),
            jitter: 0.2,
            timeout: s(15),
            connect_timeout: s(5),
            max_retry_after: s(3600),
            concurrency: 64,
            per_subscription: 4,
            poll_interval: s(1),
            reminders: BTreeMap::from([
                (Severity::Critical, Human(s(15 * 60))),
                (Severity::Major, Human(s(3600))),
            ]),
            rotation_overlap: s(24 * 3600),
            allow: Vec::new(),
        }
    }
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A setting is out of range.
    #[error("invalid [webhooks] setting: {0}")]
    Config(String),
    /// The TLS client cannot be built.
    #[error("cannot build the webhook client: {0}")]
    Tls(#[from] std::io::Error),
}

impl WebhooksConfig {
    /// The SSRF guard these settings describe.
    pub fn egress(&self) -> EgressPolicy {
        EgressPolicy {
            allow: self.allow.clone(),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), WebhookError> {
        let bad = |m: &str| Err(WebhookError::Config(m.to_owned()));
        if !(0.0..1.0).contains(&self.jitter) {
            return bad("jitter must be at least 0 and less than 1");
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("timeout and connect_timeout must be positive");
        }
        if self.concurrency == 0 || self.per_subscription == 0 {
            return bad("concurrency and per_subscription must be at least 1");
        }
        if self.poll_interval.is_zero() {
            return bad("poll_interval must be positive");
        }
        if self.reminders.values().any(|d| d.0.is_zero()) {
            return bad("a reminder time must be positive");
        }
        Ok(())
    }

    /// The dispatcher over the context's SQL store (its outbox).
    pub fn build(&self, ctx: &Context) -> Result<Dispatcher, WebhookError> {
        self.validate()?;
        let store = ctx.store.clone();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(meterstack_core::tls::provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(GuardedConnector::new(self.egress(), self.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(self.per_subscription)
            .build(https);
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                store,
                config: self.clone(),
                client,
            }),
        })
    }

    /// The delay before attempt `made + 1` after `made` failed ones, jittered; `None` when
    /// the schedule is spent.
    pub fn retry_delay(&self, made: usize) -> Option<Duration> {
        let base = self.retry_schedule.get(made.checked_sub(1)?)?.0;
        let factor = 1.0 + self.jitter * rand::rng().random_range(-1.0..=1.0);
        Some(base.mul_f64(factor.max(0.0)))
    }
}

/// Sends the outbox until stopped.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: SqlStore,
    config: WebhooksConfig,
    client: Client<HttpsConnector<GuardedConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What one HTTP exchange gave.
struct Answer {
    status: Option<StatusCode>,
    retry_after: Option<Duration>,
    error: Option<String>,
}

/// The largest answer body read (and discarded) so the connection can be reused.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl Component for Dispatcher {
    fn name(&self) -> &'static str {
        "webhook delivery"
    }

    async fn run(self: Box<Self>, stop: CancellationToken) -> Result<(), BoxError> {
        (*self).run(stop).await;
        Ok(())
    }
}

impl Dispatcher {
    /// Runs until `stop`. Store failures are logged, counted and retried.
    pub async fn run(self, stop: CancellationToken) {
        let mut changes = self.inner.store.changes();
        let mut tasks: JoinSet<(String, i64)> = JoinSet::new();
        let mut in_flight: HashSet<(String, i64)> = HashSet::new();
        let mut lanes: HashMap<String, usize> = HashMap::new();
        let mut next_reminders = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_reminders {
                self.send_reminders().await;
                next_reminders = tokio::time::Instant::now() + self.inner.config.poll_interval;
            }
            let wake = match self
                .dispatch(&mut tasks, &mut in_flight, &mut lanes, &stop)
                .await
            {
                Ok(wake) => wake,
                Err(e) => {
                    metrics::counter!(m::WEBHOOK_STORE_ERRORS).increment(1);
                    error!(error = %e, "cannot read the webhook outbox; retrying");
                    self.inner.config.poll_interval
                }
            };
            let wake = wake.min(self.inner.config.poll_interval);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = changes.changed() => {}
                Some(done) = tasks.join_next() => {
                    if let Ok(key) = done {
                        finish(&key, &mut in_flight, &mut lanes);
                    }
                }
                _ = tokio::time::sleep(wake) => {}
            }
            while let Some(Ok(key)) = tasks.try_join_next() {
                finish(&key, &mut in_flight, &mut lanes);
            }
        }
        // Attempts in flight end with the process; their leases make them due again.
        tasks.abort_all();
    }

    /// Starts the attempts that are due and fit the lanes. Returns how long until the next
    /// delivery is due.
    async fn dispatch(
        &self,
        tasks: &mut JoinSet<(String, i64)>,
        in_flight: &mut HashSet<(String, i64)>,
        lanes: &mut HashMap<String, usize>,
        stop: &CancellationToken,
    ) -> meterstack_core::store::Result<Duration> {
        let cfg = &self.inner.config;
        let store = &self.inner.store;
        let now = Utc::now();
        for sub in store.due_subscriptions(now).await? {
            let busy = lanes.get(&sub).copied().unwrap_or(0);
            let free = cfg
                .per_subscription
                .saturating_sub(busy)
                .min(cfg.concurrency.saturating_sub(tasks.len()));
            if free == 0 {
                continue;
            }
            let jobs = store
                .due_deliveries(now, Some(&sub), u32::try_from(free).unwrap_or(u32::MAX))
                .await?;
            for job in jobs {
                let key = (job.subscription_id.clone(), job.seq);
                if in_flight.contains(&key) {
                    continue;
                }
                let lease = now + cfg.timeout + cfg.connect_timeout + Duration::from_secs(5);
                if !store.claim(&job, lease).await? {
                    continue;
                }
                in_flight.insert(key.clone());
                *lanes.entry(sub.clone()).or_default() += 1;
                let this = self.clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    this.attempt(job, &stop).await;
                    key
                });
            }
        }
        let next = store.next_due().await?;
        Ok(next.map_or(cfg.poll_interval, |t| {
            (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
        }))
    }

    /// One attempt of `job`, logged with what happens next. A stop while the log is being
    /// retried leaves the attempt unlogged: its lease makes the delivery due again.
    async fn attempt(&self, job: Job, stop: &CancellationToken) {
        let cfg = &self.inner.config;
        let at = Utc::now();
        let started = tokio::time::Instant::now();
        let answer = self.send(&job).await;
        let latency = started.elapsed();
        let made = usize::try_from(job.attempts)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let outcome = match answer.status {
            Some(s) if s.is_success() => AttemptOutcome::Delivered,
            Some(StatusCode::GONE) => AttemptOutcome::Gone(format!(
                "the receiver answered 410 Gone at {}",
                at.to_rfc3339()
            )),
            _ => match cfg.retry_delay(made) {
                Some(delay) => {
                    let asked = answer
                        .retry_after
                        .map(|d| d.min(cfg.max_retry_after))
                        .unwrap_or_default();
                    AttemptOutcome::Retry(Utc::now() + delay.max(asked))
                }
                None => AttemptOutcome::Dead,
            },
        };
        let label = match &outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry(_) => "retry",
            AttemptOutcome::Dead => "dead",
            AttemptOutcome::Gone(_) => "gone",
        };
        metrics::counter!(m::WEBHOOK_ATTEMPTS, "outcome" => label).increment(1);
        // First attempts of fresh events (not retries, not replays).
        if outcome == AttemptOutcome::Delivered && job.due_at == job.queued_at.timestamp_micros() {
            let since = (Utc::now() - job.queued_at).to_std().unwrap_or_default();
            metrics::histogram!(m::WEBHOOK_DELIVERY_SECONDS).record(since.as_secs_f64());
        }
        match &outcome {
            AttemptOutcome::Delivered => {
                debug!(subscription = %job.subscription_id, seq = job.seq, "webhook delivered")
            }
            AttemptOutcome::Gone(_) => {
                warn!(subscription = %job.subscription_id, url = %job.url, "the receiver answered 410 Gone; subscription disabled")
            }
            AttemptOutcome::Dead => {
                warn!(subscription = %job.subscription_id, seq = job.seq, error = ?answer.error, "webhook out of attempts: a dead letter")
            }
            AttemptOutcome::Retry(when) => {
                info!(subscription = %job.subscription_id, seq = job.seq, attempt = made, error = ?answer.error, next = %when, "webhook attempt failed; will retry")
            }
        }
        let record = AttemptRecord {
            at,
            status: answer.status.map(|s| s.as_u16()),
            latency,
            error: answer.error,
            outcome,
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        while let Err(e) = self.inner.store.record_attempt(&job, &record).await {
            metrics::counter!(m::WEBHOOK_STORE_ERRORS).increment(1);
            error!(error = %e, "cannot log a webhook attempt; retrying");
            if !backoff.wait(stop).await {
                return;
            }
        }
    }

    /// POSTs `job` once.
    async fn send(&self, job: &Job) -> Answer {
        let failed = |error: String| Answer {
            status: None,
            retry_after: None,
            error: Some(error),
        };
        let timestamp = Utc::now().timestamp();
        let signature = match sign::signature_header(
            &job.secrets,
            &job.event_id,
            timestamp,
            job.body.as_bytes(),
        ) {
            Ok(s) => s,
            Err(e) => return failed(e.to_string()),
        };
        let request = Request::post(job.url.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("meterstack/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", &job.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(Full::new(Bytes::from(job.body.clone())));
        let request = match request {
            Ok(r) => r,
            Err(e) => return failed(format!("invalid request to {}: {e}", job.url)),
        };
        let exchange = async {
            let response = self.inner.client.request(request).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            // Read (a bounded part of) the answer so the connection can be reused.
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, location))
        };
        match tokio::time::timeout(self.inner.config.timeout, exchange).await {
            Err(_) => failed(format!(
                "no answer within {}",
                duration::format(self.inner.config.timeout)
            )),
            Ok(Err(e)) => failed(describe(&e)),
            Ok(Ok((status, retry_after, location))) => Answer {
                status: Some(status),
                retry_after,
                error: (!status.is_success()).then(|| match location {
                    Some(to) if status.is_redirection() => {
                        format!("{status}: redirect to {to} not followed")
                    }
                    _ => status.to_string(),
                }),
            },
        }
    }

    /// Sends the reminders that are due.
    async fn send_reminders(&self) {
        let reminders = &self.inner.config.reminders;
        if reminders.is_empty() {
            return;
        }
        let store = &self.inner.store;
        let due = match store
            .due_reminders(Utc::now(), |s| reminders.get(&s).map(|d| d.0))
            .await
        {
            Ok(due) => due,
            Err(e) => {
                metrics::counter!(m::WEBHOOK_STORE_ERRORS).increment(1);
                error!(error = %e, "cannot read alerts for reminders");
                return;
            }
        };
        for (alert, since) in due {
            match store.remind(&alert, since).await {
                Ok(true) => {
                    metrics::counter!(m::ALERT_REMINDERS, "severity" => alert.severity.clone())
                        .increment(1);
                    info!(alert_id = %alert.alert_id, severity = %alert.severity, "reminder: alert still unacknowledged");
                }
                Ok(false) => {}
                Err(e) => {
                    metrics::counter!(m::WEBHOOK_STORE_ERRORS).increment(1);
                    error!(error = %e, alert_id = %alert.alert_id, "cannot record a reminder");
                }
            }
        }
    }
}

fn finish(
    key: &(String, i64),
    in_flight: &mut HashSet<(String, i64)>,
    lanes: &mut HashMap<String, usize>,
) {
    in_flight.remove(key);
    if let Some(n) = lanes.get_mut(&key.0) {
        *n = n.saturating_sub(1);
    }
}

/// The failure of a request, naming a refusal of the SSRF guard as such.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            if matches!(c, ConnectError::Refused(_)) {
                metrics::counter!(m::WEBHOOK_REFUSED).increment(1);
                return format!("refused: {c}");
            }
            return c.to_string();
        }
        source = s.source();
    }
    // hyper's own message is terse; its source says what happened.
    match std::error::Error::source(e) {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    }
}

/// `Retry-After`: delay seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at: DateTime<Utc> = DateTime::parse_from_rfc2822(value).ok()?.into();
    Some((at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_spans_more_than_a_day() {
        let c = WebhooksConfig::default();
        let total: Duration = c.retry_schedule.iter().map(|d| d.0).sum();
        assert!(total >= Duration::from_secs(24 * 3600), "{total:?}");
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn retries_follow_the_schedule_within_the_jitter() {
        let c = WebhooksConfig {
            retry_schedule: vec![
                Human(Duration::from_secs(10)),
                Human(Duration::from_secs(100)),
            ],
            jitter: 0.2,
            ..WebhooksConfig::default()
        };
        for _ in 0..200 {
            let first = c.retry_delay(1).expect("a retry");
            assert!((8.0..=12.0).contains(&first.as_secs_f64()), "{first:?}");
            let second = c.retry_delay(2).expect("a retry");
            assert!((80.0..=120.0).contains(&second.as_secs_f64()), "{second:?}");
        }
        assert_eq!(c.retry_delay(3), None, "the schedule is spent");
        assert_eq!(c.retry_delay(0), None);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let later = (Utc::now() + chrono::TimeDelta::seconds(90)).to_rfc2822();
        let d = parse_retry_after(&later).expect("a date");
        assert!((85..=90).contains(&d.as_secs()), "{d:?}");
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn bad_settings_are_refused() {
        for c in [
            WebhooksConfig {
                jitter: 1.0,
                ..WebhooksConfig::default()
            },
            WebhooksConfig {
                per_subscription: 0,
                ..WebhooksConfig::default()
            },
            WebhooksConfig {
                timeout: Duration::ZERO,
                ..WebhooksConfig::default()
            },
        ] {
            assert!(c.validate().is_err());
        }
    }

    #[tokio::test]
    async fn the_guard_refuses_before_connecting_and_a_listener_sees_nothing() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connector = GuardedConnector::new(EgressPolicy::default(), Duration::from_secs(2));
        for target in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://localhost:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://2130706433:{port}/"),
            format!("http://0x7f000001:{port}/"),
            format!("http://127.1:{port}/"),
        ] {
            let uri: hyper::Uri = target.parse().expect("uri");
            let err = connector.connect(&uri).await.expect_err(&target);
            assert!(
                matches!(err, ConnectError::Refused(_) | ConnectError::Connect { .. }),
                "{target}: {err}"
            );
        }
        let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(accepted.is_err(), "the listener received a connection");
        // With the network allowed, the same connector connects.
        let allowed = GuardedConnector::new(
            EgressPolicy {
                allow: vec!["127.0.0.0/8".parse().expect("net")],
            },
            Duration::from_secs(2),
        );
        let uri: hyper::Uri = format!("http://127.0.0.1:{port}/").parse().expect("uri");
        allowed.connect(&uri).await.expect("allowed");
    }
}
