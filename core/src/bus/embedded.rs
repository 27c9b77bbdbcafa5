//! The embedded bus backend: a durable, partitioned log in one redb database file.
//!
//! Layout (redb tables):
//! - `log`: (topic, partition, offset) → encoded [`Record`] ([`super::codec`]);
//! - `offsets`: (group, topic, partition) → next offset the group will consume;
//! - `topics`: topic → partition count (fixed when the topic is first used);
//! - `partition_stats`: (topic, partition) → (first retained offset, next offset, bytes).
//!
//! Records are spread over partitions by a stable hash of their key, so one meter's records
//! stay in order. Consumer groups share a topic's partitions among their live consumers in this
//! process; committed offsets survive restarts. Appends and commits are write transactions,
//! made durable per `fsync`: `always` (fsync before returning) or `interval` (fsync at most
//! every `fsync_interval`, so a crash can lose that much). A maintenance thread applies
//! retention ([`Retention`]) by age and by size per partition; a consumer whose position was retained away
//! skips ahead and the skip is counted. Only one process may open the database: to run roles
//! in separate processes, use Kafka.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{error, info, warn};

use super::{Bus, Delivery, Error, Record, Result, Retention, Subscription, codec, partition_for};
use crate::metrics::{
    BUS_CONSUMER_LAG, BUS_CORRUPT_RECORDS, BUS_RECORDS_APPENDED, BUS_RECORDS_CONSUMED,
    BUS_RETENTION_DELETED, BUS_RETENTION_SKIPPED,
};

const LOG: TableDefinition<'_, (&str, u32, u64), &[u8]> = TableDefinition::new("log");
const OFFSETS: TableDefinition<'_, (&str, &str, u32), u64> = TableDefinition::new("offsets");
const TOPICS: TableDefinition<'_, &str, u32> = TableDefinition::new("topics");
const STATS: TableDefinition<'_, (&str, u32), (u64, u64, u64)> =
    TableDefinition::new("partition_stats");

/// When appends and commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before every append or commit returns.
    Always,
    /// At most every `fsync_interval`; a crash may lose that much.
    Interval,
}

/// Section `[bus.embedded]` of `meterstack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedConfig {
    /// The database file; unset means `{data_dir}/bus/log.redb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// When writes reach the disk.
    pub fsync: Fsync,
    /// With `fsync = "interval"`: the longest a write stays only in memory.
    #[serde(with = "crate::duration")]
    pub fsync_interval: Duration,
    /// How often retention (`[bus.retention]`) runs.
    #[serde(with = "crate::duration")]
    pub retention_interval: Duration,
    /// Memory for the database's page cache, in bytes (redb's own default is 1 GiB). Consumers
    /// read what was just appended, which stays cached; older pages come from the OS.
    pub cache_bytes: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            path: None,
            fsync: Fsync::Always,
            fsync_interval: Duration::from_millis(100),
            retention_interval: Duration::from_secs(60),
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl EmbeddedConfig {
    /// The database file for a process whose data directory is `data_dir`.
    pub fn file(&self, data_dir: &Path) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| data_dir.join("bus").join("log.redb"))
    }
}

/// The embedded bus. Cheap to share: all state lives behind one `Arc`.
#[derive(Debug)]
pub struct EmbeddedBus {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    config: EmbeddedConfig,
    retention: Retention,
    partitions: u32,
    /// Serialises write transactions with the in-memory state they update.
    write: Mutex<()>,
    state: Mutex<State>,
    /// Writes committed without fsync since the last fsync.
    dirty: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBus")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Partitions with a position in each.
type Positions = Vec<(u32, u64)>;

#[derive(Default)]
struct State {
    topics: HashMap<String, TopicState>,
    /// (group, topic) → committed offset per partition.
    committed: HashMap<(String, String), Vec<u64>>,
    /// (topic, group) → live members.
    groups: HashMap<(String, String), GroupState>,
    next_member: u64,
}

struct TopicState {
    parts: Vec<PartStats>,
    notify: Arc<Notify>,
}

#[derive(Clone, Copy, Default)]
struct PartStats {
    start: u64,
    end: u64,
    bytes: u64,
}

#[derive(Default)]
struct GroupState {
    members: BTreeSet<u64>,
    generation: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn storage(e: impl Into<redb::Error>) -> Error {
    Error::Storage(e.into().to_string())
}

impl EmbeddedBus {
    /// Opens (or creates) the log at `file`; new topics get `partitions` partitions; records
    /// are kept per `retention`.
    pub fn open(
        file: &Path,
        config: EmbeddedConfig,
        partitions: u32,
        retention: Retention,
    ) -> Result<Self> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Storage(format!("cannot create {}: {e}", dir.display())))?;
        }
        let db = Database::builder()
            .set_cache_size(config.cache_bytes)
            .create(file)
            .map_err(storage)?;
        let mut state = State::default();
        {
            let txn = db.begin_write().map_err(storage)?;
            // Create the tables on first open so readers can always open them.
            txn.open_table(LOG).map_err(storage)?;
            let offsets = txn.open_table(OFFSETS).map_err(storage)?;
            let topics = txn.open_table(TOPICS).map_err(storage)?;
            let stats = txn.open_table(STATS).map_err(storage)?;
            for entry in topics.iter().map_err(storage)? {
                let (name, n) = entry.map_err(storage)?;
                let name = name.value().to_owned();
                let mut parts = vec![PartStats::default(); n.value() as usize];
                for (p, part) in parts.iter_mut().enumerate() {
                    if let Some(s) = stats.get((name.as_str(), p as u32)).map_err(storage)? {
                        let (start, end, bytes) = s.value();
                        *part = PartStats { start, end, bytes };
                    }
                }
                state.topics.insert(
                    name,
                    TopicState {
                        parts,
                        notify: Arc::new(Notify::new()),
                    },
                );
            }
            for entry in offsets.iter().map_err(storage)? {
                let (key, offset) = entry.map_err(storage)?;
                let (group, topic, p) = key.value();
                let n = state.topics.get(topic).map_or(0, |t| t.parts.len());
                let slot = state
                    .committed
                    .entry((group.to_owned(), topic.to_owned()))
                    .or_insert_with(|| vec![0; n]);
                if let Some(c) = slot.get_mut(p as usize) {
                    *c = offset.value();
                }
            }
            drop((offsets, topics, stats));
            txn.commit().map_err(storage)?;
        }
        info!(file = %file.display(), topics = state.topics.len(), "embedded bus opened");
        for topic in state.topics.keys() {
            export_lag(&state, topic);
        }
        let inner = Arc::new(Inner {
            db,
            config,
            retention,
            partitions: partitions.max(1),
            write: Mutex::new(()),
            state: Mutex::new(state),
            dirty: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("bus-maintenance".into())
            .spawn(move || maintenance(weak))
            .map_err(|e| Error::Storage(format!("cannot start the maintenance thread: {e}")))?;
        Ok(Self { inner })
    }

    /// Applies retention now (the maintenance thread also runs it every `retention_interval`).
    pub fn apply_retention(&self) -> Result<()> {
        self.inner.apply_retention()
    }
}

/// Runs fsync-interval and retention until the bus is dropped.
fn maintenance(weak: Weak<Inner>) {
    let mut last_retention = std::time::Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let tick = match inner.config.fsync {
            Fsync::Interval => inner.config.fsync_interval,
            Fsync::Always => Duration::from_millis(500),
        }
        .min(inner.config.retention_interval);
        if let Err(e) = inner.sync() {
            error!(error = %e, "bus fsync failed");
        }
        if last_retention.elapsed() >= inner.config.retention_interval {
            last_retention = std::time::Instant::now();
            if let Err(e) = inner.apply_retention() {
                error!(error = %e, "bus retention failed");
            }
        }
        drop(inner);
        std::thread::sleep(tick);
    }
}

impl Inner {
    fn durability(&self) -> Durability {
        match self.config.fsync {
            Fsync::Always => Durability::Immediate,
            Fsync::Interval => Durability::None,
        }
    }

    /// Makes every committed write durable.
    fn sync(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let _write = lock(&self.write);
        let mut txn = self.db.begin_write().map_err(storage)?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| Error::Storage(e.to_string()))?;
        txn.commit().map_err(storage)
    }

    fn commit(&self, mut txn: redb::WriteTransaction) -> Result<()> {
        let durability = self.durability();
        txn.set_durability(durability)
            .map_err(|e| Error::Storage(e.to_string()))?;
        txn.commit().map_err(storage)?;
        if matches!(durability, Durability::None) {
            self.dirty.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Creates `topic` with the configured partition count if it does not exist.
    fn ensure_topic(&self, topic: &str) -> Result<()> {
        if lock(&self.state).topics.contains_key(topic) {
            return Ok(());
        }
        let _write = lock(&self.write);
        if lock(&self.state).topics.contains_key(topic) {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut topics = txn.open_table(TOPICS).map_err(storage)?;
            topics.insert(topic, self.partitions).map_err(storage)?;
        }
        self.commit(txn)?;
        lock(&self.state).topics.insert(
            topic.to_owned(),
            TopicState {
                parts: vec![PartStats::default(); self.partitions as usize],
                notify: Arc::new(Notify::new()),
            },
        );
        info!(topic, partitions = self.partitions, "bus topic created");
        Ok(())
    }

    fn append(&self, topic: &str, records: &[Record]) -> Result<()> {
        self.ensure_topic(topic)?;
        let _write = lock(&self.write);
        let mut parts: Vec<PartStats> = lock(&self.state)
            .topics
            .get(topic)
            .map(|t| t.parts.clone())
            .unwrap_or_default();
        let n = parts.len() as u32;
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut log = txn.open_table(LOG).map_err(storage)?;
            let mut stats = txn.open_table(STATS).map_err(storage)?;
            let mut touched = vec![false; parts.len()];
            for record in records {
                let p = partition_for(&record.key, n);
                let part = &mut parts[p as usize];
                let bytes = codec::encode(record);
                log.insert((topic, p, part.end), bytes.as_slice())
                    .map_err(storage)?;
                part.end += 1;
                part.bytes += bytes.len() as u64;
                touched[p as usize] = true;
            }
            for (p, part) in parts.iter().enumerate().filter(|(p, _)| touched[*p]) {
                stats
                    .insert((topic, p as u32), (part.start, part.end, part.bytes))
                    .map_err(storage)?;
            }
        }
        self.commit(txn)?;
        let mut state = lock(&self.state);
        if let Some(t) = state.topics.get_mut(topic) {
            t.parts = parts;
            t.notify.notify_waiters();
        }
        export_lag(&state, topic);
        drop(state);
        metrics::counter!(BUS_RECORDS_APPENDED, "topic" => topic.to_owned())
            .increment(records.len() as u64);
        Ok(())
    }

    /// Reads up to `max` records from the partitions in `from`, each from its position;
    /// returns them with the next position of every partition read.
    fn read(
        &self,
        topic: &str,
        from: &[(u32, u64)],
        max: usize,
    ) -> Result<(Vec<Delivery>, Positions)> {
        let txn = self.db.begin_read().map_err(storage)?;
        let log = txn.open_table(LOG).map_err(storage)?;
        let mut out = Vec::new();
        let mut next = Vec::new();
        for &(p, position) in from {
            if out.len() >= max {
                break;
            }
            let mut position = position;
            for entry in log
                .range((topic, p, position)..(topic, p, u64::MAX))
                .map_err(storage)?
            {
                if out.len() >= max {
                    break;
                }
                let (key, value) = entry.map_err(storage)?;
                let (_, _, offset) = key.value();
                position = offset + 1;
                match codec::decode(value.value()) {
                    Some(record) => out.push(Delivery {
                        partition: p,
                        offset,
                        record,
                    }),
                    None => {
                        // Our own storage, damaged: skip the record rather than stop the topic.
                        metrics::counter!(BUS_CORRUPT_RECORDS, "topic" => topic.to_owned())
                            .increment(1);
                        error!(
                            topic,
                            partition = p,
                            offset,
                            "damaged record in the embedded bus; skipped"
                        );
                    }
                }
            }
            next.push((p, position));
        }
        Ok((out, next))
    }

    fn commit_offsets(&self, group: &str, topic: &str, positions: &[(u32, u64)]) -> Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let _write = lock(&self.write);
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut offsets = txn.open_table(OFFSETS).map_err(storage)?;
            for &(p, offset) in positions {
                offsets.insert((group, topic, p), offset).map_err(storage)?;
            }
        }
        self.commit(txn)?;
        let mut state = lock(&self.state);
        let n = state.topics.get(topic).map_or(0, |t| t.parts.len());
        let committed = state
            .committed
            .entry((group.to_owned(), topic.to_owned()))
            .or_insert_with(|| vec![0; n]);
        for &(p, offset) in positions {
            if let Some(c) = committed.get_mut(p as usize) {
                *c = offset;
            }
        }
        export_lag(&state, topic);
        Ok(())
    }

    fn apply_retention(&self) -> Result<()> {
        let cutoff = (Utc::now()
            - chrono::TimeDelta::from_std(self.retention.age).unwrap_or(chrono::TimeDelta::MAX))
        .timestamp_micros();
        let topics: Vec<(String, Vec<PartStats>)> = lock(&self.state)
            .topics
            .iter()
            .map(|(k, t)| (k.clone(), t.parts.clone()))
            .collect();
        for (topic, parts) in topics {
            for (p, part) in parts.iter().enumerate() {
                let p = p as u32;
                let _write = lock(&self.write);
                let txn = self.db.begin_write().map_err(storage)?;
                let mut part = *part;
                // Re-read: an append may have moved `end` since the snapshot above.
                if let Some(fresh) = lock(&self.state)
                    .topics
                    .get(&topic)
                    .and_then(|t| t.parts.get(p as usize))
                {
                    part = *fresh;
                }
                let mut deleted = 0u64;
                {
                    let mut log = txn.open_table(LOG).map_err(storage)?;
                    let mut stats = txn.open_table(STATS).map_err(storage)?;
                    let mut doomed = Vec::new();
                    let mut bytes = part.bytes;
                    for entry in log
                        .range((topic.as_str(), p, part.start)..(topic.as_str(), p, part.end))
                        .map_err(storage)?
                    {
                        let (key, value) = entry.map_err(storage)?;
                        let value = value.value();
                        let old = codec::timestamp_micros(value).is_none_or(|ts| ts < cutoff);
                        if !(old || bytes > self.retention.bytes) {
                            break;
                        }
                        bytes -= value.len() as u64;
                        doomed.push(key.value().2);
                    }
                    for offset in &doomed {
                        log.remove((topic.as_str(), p, *offset)).map_err(storage)?;
                    }
                    if let Some(last) = doomed.last() {
                        deleted = doomed.len() as u64;
                        part.start = last + 1;
                        part.bytes = bytes;
                        stats
                            .insert((topic.as_str(), p), (part.start, part.end, part.bytes))
                            .map_err(storage)?;
                    }
                }
                if deleted == 0 {
                    txn.abort().map_err(storage)?;
                    continue;
                }
                self.commit(txn)?;
                if let Some(t) = lock(&self.state).topics.get_mut(&topic) {
                    t.parts[p as usize] = part;
                }
                metrics::counter!(BUS_RETENTION_DELETED, "topic" => topic.clone())
                    .increment(deleted);
            }
        }
        Ok(())
    }
}

/// Exports `topic`'s lag for every group that has committed on it.
fn export_lag(state: &State, topic: &str) {
    let Some(t) = state.topics.get(topic) else {
        return;
    };
    for ((group, committed_topic), committed) in &state.committed {
        if committed_topic != topic {
            continue;
        }
        let lag: u64 = t
            .parts
            .iter()
            .enumerate()
            .map(|(p, part)| {
                part.end
                    .saturating_sub(committed.get(p).copied().unwrap_or(0).max(part.start))
            })
            .sum();
        metrics::gauge!(BUS_CONSUMER_LAG, "topic" => topic.to_owned(), "group" => group.clone())
            .set(lag as f64);
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("bus task failed: {e}")))?
}

#[async_trait]
impl Bus for EmbeddedBus {
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let topic = topic.to_owned();
        blocking(move || inner.append(&topic, &records)).await
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        let inner = self.inner.clone();
        let t = topic.to_owned();
        blocking(move || inner.ensure_topic(&t)).await?;
        let member = {
            let mut state = lock(&self.inner.state);
            state.next_member += 1;
            let member = state.next_member;
            let g = state
                .groups
                .entry((topic.to_owned(), group.to_owned()))
                .or_default();
            g.members.insert(member);
            g.generation += 1;
            member
        };
        Ok(Box::new(EmbeddedSubscription {
            inner: self.inner.clone(),
            topic: topic.to_owned(),
            group: Some(group.to_owned()),
            member,
            generation: 0,
            positions: Vec::new(),
            next_first: 0,
        }))
    }

    async fn tail(&self, topic: &str) -> Result<Box<dyn Subscription>> {
        let inner = self.inner.clone();
        let t = topic.to_owned();
        blocking(move || inner.ensure_topic(&t)).await?;
        let positions = lock(&self.inner.state)
            .topics
            .get(topic)
            .map(|t| {
                t.parts
                    .iter()
                    .enumerate()
                    .map(|(p, part)| (p as u32, part.end))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Box::new(EmbeddedSubscription {
            inner: self.inner.clone(),
            topic: topic.to_owned(),
            group: None,
            member: 0,
            generation: 0,
            positions,
            next_first: 0,
        }))
    }

    async fn flush(&self) -> Result<()> {
        let inner = self.inner.clone();
        blocking(move || inner.sync()).await
    }
}

struct EmbeddedSubscription {
    inner: Arc<Inner>,
    topic: String,
    /// The consumer group; `None` for a [tail](Bus::tail), which reads every partition.
    group: Option<String>,
    member: u64,
    /// Group generation the assignment below was computed for.
    generation: u64,
    /// Assigned partitions and the next offset to return from each.
    positions: Vec<(u32, u64)>,
    /// Which assigned partition is read first next time (fairness).
    next_first: usize,
}

impl std::fmt::Debug for EmbeddedSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedSubscription")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("member", &self.member)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl EmbeddedSubscription {
    /// The group, or `tail`, for metrics and logs.
    fn label(&self) -> String {
        self.group.clone().unwrap_or_else(|| "tail".into())
    }

    /// Recomputes the assignment if the group changed; returns the topic's notifier.
    fn refresh(&mut self) -> Arc<Notify> {
        let state = lock(&self.inner.state);
        let topic = state.topics.get(&self.topic);
        let notify = topic.map(|t| t.notify.clone()).unwrap_or_default();
        let parts = topic.map(|t| t.parts.clone()).unwrap_or_default();
        let name = self.group.clone().unwrap_or_default();
        let group = state.groups.get(&(self.topic.clone(), name.clone()));
        let generation = group.map_or(0, |g| g.generation);
        if self.group.is_some() && generation != self.generation {
            let members: Vec<u64> = group
                .map(|g| g.members.iter().copied().collect())
                .unwrap_or_default();
            let index = members.iter().position(|m| *m == self.member).unwrap_or(0);
            let committed = state.committed.get(&(name.clone(), self.topic.clone()));
            let kept = std::mem::take(&mut self.positions);
            self.positions = (0..parts.len() as u32)
                .filter(|p| (*p as usize) % members.len().max(1) == index)
                .map(|p| {
                    // A partition this consumer keeps continues where it is; a new one starts
                    // at the group's committed offset.
                    let position = kept.iter().find(|(q, _)| *q == p).map(|(_, pos)| *pos);
                    (
                        p,
                        position.unwrap_or_else(|| {
                            committed
                                .and_then(|c| c.get(p as usize))
                                .copied()
                                .unwrap_or(0)
                        }),
                    )
                })
                .collect();
            self.generation = generation;
        }
        // Skip what retention removed, and count it.
        let label = self.label();
        for (p, position) in &mut self.positions {
            if let Some(part) = parts.get(*p as usize)
                && *position < part.start
            {
                let skipped = part.start - *position;
                metrics::counter!(BUS_RETENTION_SKIPPED, "topic" => self.topic.clone(), "group" => label.clone())
                    .increment(skipped);
                warn!(topic = %self.topic, group = %label, partition = *p, skipped, "records removed by retention before this group consumed them");
                *position = part.start;
            }
        }
        notify
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notify = self.refresh();
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut from = self.positions.clone();
            if !from.is_empty() {
                let k = self.next_first % from.len();
                from.rotate_left(k);
                self.next_first = self.next_first.wrapping_add(1);
            }
            let inner = self.inner.clone();
            let topic = self.topic.clone();
            let (out, next) = blocking(move || inner.read(&topic, &from, max)).await?;
            for (p, position) in next {
                if let Some(pos) = self.positions.iter_mut().find(|(q, _)| *q == p) {
                    pos.1 = pos.1.max(position);
                }
            }
            if !out.is_empty() {
                metrics::counter!(BUS_RECORDS_CONSUMED, "topic" => self.topic.clone(), "group" => self.label())
                    .increment(out.len() as u64);
                return Ok(out);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&mut self) -> Result<()> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        // Commit only partitions this consumer still owns: after a rebalance another consumer
        // may have taken the rest.
        let owned: Vec<(u32, u64)> = {
            let state = lock(&self.inner.state);
            let generation = state
                .groups
                .get(&(self.topic.clone(), group.clone()))
                .map_or(0, |g| g.generation);
            if generation != self.generation {
                Vec::new()
            } else {
                self.positions.clone()
            }
        };
        let inner = self.inner.clone();
        let topic = self.topic.clone();
        blocking(move || inner.commit_offsets(&group, &topic, &owned)).await
    }
}

impl Drop for EmbeddedSubscription {
    fn drop(&mut self) {
        let Some(group) = self.group.clone() else {
            return;
        };
        let mut state = lock(&self.inner.state);
        if let Some(g) = state.groups.get_mut(&(self.topic.clone(), group)) {
            g.members.remove(&self.member);
            g.generation += 1;
        }
    }
}
