//! The live feed: `GET /api/v1/live` (a WebSocket) and the live operations page at `/`.
//!
//! In: the bus topics `readings.clean` and `aggregates`, followed from their end by this
//! process alone ([`Bus::tail`]), so the feed is the same whether the pipeline runs here or in
//! another process; the SQL store's alert event feed (the durable, numbered lifecycle events
//! the webhooks send), whose sequence numbers let a client resume; counts from the registry.
//! Out: JSON messages to each connected client ([`protocol`]).
//!
//! One hub per process fans records out. Routing is by an index (meter → clients, feeder →
//! clients) rebuilt when a subscription changes, and every message is serialized once for all
//! its clients. Each client has a bounded queue (`http.live.queue`): the hub never waits for a
//! client; a full queue loses the message, counts it, and tells the client (`lagged`) once it
//! reads again; a queue full for `http.live.max_behind` disconnects the client. The bus
//! followers run only while clients are connected (and a few minutes after).

mod feeds;
mod page;
mod protocol;
mod socket;

pub(crate) use page::{asset, index};
pub(crate) use socket::upgrade;

use feeds::{alert_body, follow, follow_alerts, load_feeders};

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use meterstack_core::bus::consumer::{ConsumerOptions, Handler, consume};
use meterstack_core::bus::{Bus, Delivery, TopicNames};
use meterstack_core::metrics::{LIVE_CLIENTS, LIVE_DISCONNECTS, LIVE_DROPPED, LIVE_MESSAGES};
use meterstack_core::store::SqlStore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use protocol::{Channel, Request, Selector};

/// Section `[http.live]` of `meterstack.toml`: the live feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// Messages queued for one client; beyond that the client loses messages (and is told).
    pub queue: usize,
    /// A client whose queue stays full this long is disconnected.
    #[serde(with = "meterstack_core::duration")]
    pub max_behind: Duration,
    /// The server pings every client this often; a client silent for three is disconnected.
    #[serde(with = "meterstack_core::duration")]
    pub heartbeat: Duration,
    /// Connections at most; more are refused with 503.
    pub max_clients: usize,
    /// Meters in one subscription request at most.
    pub max_meters: usize,
    /// How often fleet statistics are sent.
    #[serde(with = "meterstack_core::duration")]
    pub stats_interval: Duration,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            queue: 4096,
            max_behind: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            max_clients: 1000,
            max_meters: 1000,
            stats_interval: Duration::from_secs(1),
        }
    }
}

impl LiveConfig {
    /// Refuses settings the feed cannot work with.
    pub fn validate(&self) -> Result<(), String> {
        if self.queue < 16 {
            return Err("http.live.queue must be at least 16".into());
        }
        if self.max_clients == 0 || self.max_meters == 0 {
            return Err("http.live.max_clients and max_meters must be at least 1".into());
        }
        for (name, d) in [
            ("max_behind", self.max_behind),
            ("heartbeat", self.heartbeat),
            ("stats_interval", self.stats_interval),
        ] {
            if d < Duration::from_millis(100) {
                return Err(format!("http.live.{name} must be at least 100ms"));
            }
        }
        Ok(())
    }
}

/// Followers stop after this long without clients.
const IDLE_STOP: Duration = Duration::from_secs(300);
/// Registry counts (meters online, open alerts) are read this often.
const COUNTS_EVERY: Duration = Duration::from_secs(5);
/// The meter → feeder map is reloaded this often.
const FEEDERS_EVERY: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The current value of a shared snapshot.
fn snapshot<T>(l: &RwLock<Arc<T>>) -> Arc<T> {
    l.read().unwrap_or_else(PoisonError::into_inner).clone()
}

/// Replaces a shared snapshot.
fn publish<T>(l: &RwLock<Arc<T>>, value: T) {
    *l.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
}

/// The live feed of this process. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.inner.config)
            .field("clients", &lock(&self.inner.members).len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: LiveConfig,
    bus: Option<Arc<dyn Bus>>,
    topics: TopicNames,
    store: SqlStore,
    /// The meters' measuring interval (`pipeline.interval`), for completeness.
    interval: Duration,
    shutdown: CancellationToken,
    epoch: Instant,
    next_id: AtomicU64,
    members: Mutex<HashMap<u64, Member>>,
    index: RwLock<Arc<Index>>,
    alerts: tokio::sync::Mutex<AlertFeed>,
    /// The followers' stop token while they run.
    running: Mutex<Option<CancellationToken>>,
    feeders: RwLock<Arc<HashMap<String, String>>>,
    /// Clean readings seen since the last statistics message.
    readings_seen: AtomicU64,
    /// Interval start (µs) → meters with a clean reading for it, for recent intervals.
    heard: Mutex<BTreeMap<i64, HashSet<String>>>,
}

/// A connected client as the hub sees it.
pub(crate) struct Client {
    id: u64,
    tx: mpsc::Sender<Arc<str>>,
    /// Messages lost since the client was last told.
    lost: AtomicU64,
    /// When its queue became full (ms since the hub's epoch, + 1); 0 while it is not.
    full_since: AtomicU64,
    /// Cancelled to disconnect it.
    kick: CancellationToken,
}

impl Client {
    /// Queues `body` without waiting: a full queue loses it.
    fn offer(&self, body: &Arc<str>, inner: &Inner) -> bool {
        match self.tx.try_send(body.clone()) {
            Ok(()) => {
                if self.full_since.load(Ordering::Relaxed) != 0 {
                    self.full_since.store(0, Ordering::Relaxed);
                }
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(LIVE_DROPPED).increment(1);
                let now = inner.epoch.elapsed().as_millis() as u64 + 1;
                let since = match self.full_since.compare_exchange(
                    0,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => now,
                    Err(since) => since,
                };
                if now - since > inner.config.max_behind.as_millis() as u64
                    && !self.kick.is_cancelled()
                {
                    metrics::counter!(LIVE_DISCONNECTS, "reason" => "slow").increment(1);
                    warn!(
                        client = self.id,
                        "live client stayed behind; disconnecting it"
                    );
                    self.kick.cancel();
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

struct Member {
    client: Arc<Client>,
    interest: Interest,
}

/// What one client subscribed to.
#[derive(Debug, Clone, Default)]
struct Interest {
    readings: Selector,
    /// `None`: not subscribed; an empty selector: everything.
    aggregates: Option<Selector>,
    stats: bool,
}

type Targets = HashMap<String, Vec<Arc<Client>>>;

/// Who receives what, rebuilt from every member's interest when one changes.
#[derive(Default)]
struct Index {
    readings_by_meter: Targets,
    readings_by_feeder: Targets,
    aggregates_all: Vec<Arc<Client>>,
    aggregates_by_meter: Targets,
    aggregates_by_feeder: Targets,
    stats: Vec<Arc<Client>>,
}

impl Index {
    fn build(members: &HashMap<u64, Member>) -> Self {
        let mut index = Index::default();
        let add = |t: &mut Targets, keys: &std::collections::BTreeSet<String>, c: &Arc<Client>| {
            for k in keys {
                t.entry(k.clone()).or_default().push(c.clone());
            }
        };
        for m in members.values() {
            let c = &m.client;
            add(&mut index.readings_by_meter, &m.interest.readings.meters, c);
            add(
                &mut index.readings_by_feeder,
                &m.interest.readings.feeders,
                c,
            );
            match &m.interest.aggregates {
                Some(s) if s.is_all() => index.aggregates_all.push(c.clone()),
                Some(s) => {
                    add(&mut index.aggregates_by_meter, &s.meters, c);
                    add(&mut index.aggregates_by_feeder, &s.feeders, c);
                }
                None => {}
            }
            if m.interest.stats {
                index.stats.push(c.clone());
            }
        }
        index
    }
}

/// The alert channel: the store's event feed from `cursor` on, to `subscribers`. Held locked
/// while events are handed out, so a resuming client's replay and the live events it joins
/// neither overlap nor leave a gap.
#[derive(Default)]
struct AlertFeed {
    cursor: Option<i64>,
    subscribers: Vec<Arc<Client>>,
}

impl Hub {
    /// A hub over `bus` (none: the readings and aggregates channels are unavailable) and the
    /// store; `interval` is the meters' measuring interval.
    pub fn new(
        config: LiveConfig,
        bus: Option<Arc<dyn Bus>>,
        topics: TopicNames,
        store: SqlStore,
        interval: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                bus,
                topics,
                store,
                interval: interval.max(Duration::from_secs(1)),
                shutdown: CancellationToken::new(),
                epoch: Instant::now(),
                next_id: AtomicU64::new(1),
                members: Mutex::default(),
                index: RwLock::default(),
                alerts: tokio::sync::Mutex::default(),
                running: Mutex::default(),
                feeders: RwLock::default(),
                readings_seen: AtomicU64::new(0),
                heard: Mutex::default(),
            }),
        }
    }

    /// Closes every connection ("going away") and stops the followers.
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    pub(crate) fn config(&self) -> &LiveConfig {
        &self.inner.config
    }

    pub(crate) fn is_full(&self) -> bool {
        lock(&self.inner.members).len() >= self.inner.config.max_clients
    }

    /// Registers a client; starts the followers if they are not running.
    pub(crate) fn join(&self) -> (Arc<Client>, mpsc::Receiver<Arc<str>>) {
        let (tx, rx) = mpsc::channel(self.inner.config.queue);
        let client = Arc::new(Client {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            lost: AtomicU64::new(0),
            full_since: AtomicU64::new(0),
            kick: self.inner.shutdown.child_token(),
        });
        let mut running = lock(&self.inner.running);
        let n = {
            let mut members = lock(&self.inner.members);
            members.insert(
                client.id,
                Member {
                    client: client.clone(),
                    interest: Interest::default(),
                },
            );
            members.len()
        };
        metrics::gauge!(LIVE_CLIENTS).set(n as f64);
        if running.is_none() {
            let stop = self.inner.shutdown.child_token();
            self.start_followers(stop.clone());
            *running = Some(stop);
        }
        (client, rx)
    }

    /// Forgets a client.
    pub(crate) async fn leave(&self, client: &Client) {
        let n = {
            let mut members = lock(&self.inner.members);
            members.remove(&client.id);
            publish(&self.inner.index, Index::build(&members));
            members.len()
        };
        metrics::gauge!(LIVE_CLIENTS).set(n as f64);
        self.inner
            .alerts
            .lock()
            .await
            .subscribers
            .retain(|c| c.id != client.id);
    }

    /// Applies one request of `client`; returns the answer.
    pub(crate) async fn request(&self, client: &Arc<Client>, request: Request) -> Value {
        let (subscribe, channel, selector, after) = match request {
            Request::Ping { id } => return json!({ "type": "pong", "id": id }),
            Request::Subscribe {
                channel,
                selector,
                after,
            } => (true, channel, selector, after),
            Request::Unsubscribe { channel, selector } => (false, channel, selector, None),
        };
        if matches!(channel, Channel::Readings | Channel::Aggregates) && self.inner.bus.is_none() {
            return protocol::error(
                "unavailable",
                "this process has no bus: readings and aggregates are served by an api process on the shared (Kafka) bus",
            );
        }
        if channel == Channel::Alerts {
            let mut feed = self.inner.alerts.lock().await;
            feed.subscribers.retain(|c| c.id != client.id);
            if subscribe {
                if let Err(e) = self.replay(&mut feed, client, after).await {
                    warn!(error = %e, "live: cannot read the alert feed");
                    return protocol::error("unavailable", "the alert feed cannot be read now");
                }
                feed.subscribers.push(client.clone());
            }
            return protocol::subscribed(subscribe, channel, &selector);
        }
        if !selector.feeders.is_empty() {
            self.refresh_feeders_soon();
        }
        {
            let mut members = lock(&self.inner.members);
            let Some(member) = members.get_mut(&client.id) else {
                return protocol::error("gone", "the connection is closing");
            };
            let interest = &mut member.interest;
            match (channel, subscribe) {
                (Channel::Readings, true) => {
                    interest.readings.meters.extend(selector.meters.clone());
                    interest.readings.feeders.extend(selector.feeders.clone());
                }
                (Channel::Readings, false) if selector.is_all() => {
                    interest.readings = Selector::default();
                }
                (Channel::Readings, false) => {
                    let r = &mut interest.readings;
                    r.meters.retain(|m| !selector.meters.contains(m));
                    r.feeders.retain(|f| !selector.feeders.contains(f));
                }
                (Channel::Aggregates, true) => {
                    let a = interest.aggregates.get_or_insert_with(|| selector.clone());
                    if selector.is_all() {
                        *a = Selector::default();
                    } else if !a.is_all() {
                        a.meters.extend(selector.meters.clone());
                        a.feeders.extend(selector.feeders.clone());
                    }
                }
                (Channel::Aggregates, false) if selector.is_all() => interest.aggregates = None,
                (Channel::Aggregates, false) => {
                    if let Some(a) = &mut interest.aggregates {
                        a.meters.retain(|m| !selector.meters.contains(m));
                        a.feeders.retain(|f| !selector.feeders.contains(f));
                        if a.is_all() {
                            interest.aggregates = None;
                        }
                    }
                }
                (Channel::Stats, s) => interest.stats = s,
                (Channel::Alerts, _) => {}
            }
            publish(&self.inner.index, Index::build(&members));
        }
        protocol::subscribed(subscribe, channel, &selector)
    }

    /// Hands `client` the alert events after `after` up to the feed's cursor, at most half its
    /// queue; older ones are reported as a gap.
    async fn replay(
        &self,
        feed: &mut AlertFeed,
        client: &Arc<Client>,
        after: Option<i64>,
    ) -> Result<(), meterstack_core::store::StoreError> {
        let head = match feed.cursor {
            Some(c) => c,
            None => {
                let c = self.inner.store.last_event_seq().await?;
                feed.cursor = Some(c);
                c
            }
        };
        let Some(after) = after else { return Ok(()) };
        let most = (self.inner.config.queue / 2) as i64;
        let mut from = after;
        if head - after > most {
            from = head - most;
            let body = protocol::error(
                "alerts_gap",
                &format!(
                    "{} alert events since cursor {after} are not replayed; list current alerts with GET /api/v1/alerts",
                    from - after
                ),
            );
            client.offer(&Arc::from(body.to_string()), &self.inner);
        }
        while from < head {
            let page = self.inner.store.events_after(from, 500).await?;
            if page.events.is_empty() {
                break;
            }
            for event in &page.events {
                let seq = event["data"]["seq"].as_i64().unwrap_or_default();
                if seq > head {
                    return Ok(());
                }
                client.offer(&alert_body(seq, event), &self.inner);
            }
            from = page.next;
        }
        Ok(())
    }

    fn refresh_feeders_soon(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move { load_feeders(&inner).await });
    }

    fn start_followers(&self, stop: CancellationToken) {
        info!("live feed: following the bus and the alert feed");
        if let Some(bus) = &self.inner.bus {
            for (topic, kind) in [
                (self.inner.topics.readings_clean.clone(), Channel::Readings),
                (self.inner.topics.aggregates.clone(), Channel::Aggregates),
            ] {
                let (inner, bus, stop) = (self.inner.clone(), bus.clone(), stop.clone());
                tokio::spawn(async move { follow(inner, bus, topic, kind, stop).await });
            }
        }
        let (inner, s) = (self.inner.clone(), stop.clone());
        tokio::spawn(async move { follow_alerts(inner, s).await });
        let hub = self.clone();
        tokio::spawn(async move { hub.stats(stop).await });
    }

    /// Sends statistics; stops every follower after [`IDLE_STOP`] without clients.
    async fn stats(self, stop: CancellationToken) {
        let inner = &self.inner;
        let mut tick = tokio::time::interval(inner.config.stats_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        let mut idle_since: Option<Instant> = None;
        let (mut counted, mut feeders_loaded): (Option<Instant>, Option<Instant>) = (None, None);
        let mut counts = json!({});
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            {
                let mut running = lock(&inner.running);
                if lock(&inner.members).is_empty() {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= IDLE_STOP {
                        info!("live feed: no clients; stopping the followers");
                        stop.cancel();
                        *running = None;
                        return;
                    }
                } else {
                    idle_since = None;
                }
            }
            if feeders_loaded.is_none_or(|t| t.elapsed() >= FEEDERS_EVERY) {
                feeders_loaded = Some(Instant::now());
                load_feeders(inner).await;
            }
            if counted.is_none_or(|t| t.elapsed() >= COUNTS_EVERY) {
                counted = Some(Instant::now());
                let s = &inner.store;
                match (
                    s.meters_online().await,
                    s.meter_count().await,
                    s.open_alert_count().await,
                ) {
                    (Ok(online), Ok(registered), Ok(open)) => {
                        counts = json!({
                            "meters_online": online,
                            "meters_registered": registered,
                            "open_alerts": open,
                        });
                    }
                    (a, b, c) => {
                        let e = [a.err(), b.err(), c.err()].into_iter().flatten().next();
                        warn!(error = ?e, "live: cannot count meters and alerts");
                    }
                }
            }
            let elapsed = last.elapsed().as_secs_f64();
            last = Instant::now();
            let seen = inner.readings_seen.swap(0, Ordering::Relaxed);
            let mut data = json!({
                "at": Utc::now(),
                "readings_per_s": (seen as f64 / elapsed.max(1e-3)).round(),
                "clients": lock(&inner.members).len(),
                "completeness": self.completeness(counts["meters_registered"].as_u64()),
            });
            if let (Some(d), Some(c)) = (data.as_object_mut(), counts.as_object()) {
                d.extend(c.clone());
            }
            let body: Arc<str> = Arc::from(json!({ "type": "stats", "data": data }).to_string());
            let index = snapshot(&inner.index);
            for c in &index.stats {
                c.offer(&body, inner);
            }
            metrics::counter!(LIVE_MESSAGES, "channel" => "stats")
                .increment(index.stats.len() as u64);
        }
    }

    /// The share of registered meters with a clean reading for the last completed interval
    /// (counted since the followers started).
    fn completeness(&self, registered: Option<u64>) -> Value {
        let step = TimeDelta::from_std(self.inner.interval).unwrap_or(TimeDelta::minutes(15));
        let Ok(current) = Utc::now().duration_trunc(step) else {
            return Value::Null;
        };
        let start = current - step;
        let mut heard = lock(&self.inner.heard);
        // Keep the current and the last completed interval only.
        let keep = start.timestamp_micros();
        heard.retain(|t, _| *t >= keep);
        let received = heard.get(&keep).map_or(0, HashSet::len) as u64;
        let expected = registered.unwrap_or(0);
        json!({
            "interval_start": start,
            "received": received,
            "expected": expected,
            "ratio": (expected > 0).then(|| received as f64 / expected as f64),
        })
    }
}

#[cfg(test)]
mod tests;
