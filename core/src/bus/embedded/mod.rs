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

mod storage;
mod subscription;

use storage::export_lag;

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
