//! The in-memory bus backend: one partition per topic, held in process memory.
//!
//! A record stays in memory until every consumer group that has joined the topic has committed
//! it. When a topic holds `capacity` uncommitted records, [`Bus::append`] waits until consumers
//! catch up (backpressure) instead of dropping anything. Nothing survives the process: a
//! graceful shutdown drains the topics in order, a crash loses what was in flight.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{Bus, Delivery, Error, Record, Result, Subscription};
use crate::metrics::{BUS_CONSUMER_LAG, BUS_RECORDS_APPENDED, BUS_RECORDS_CONSUMED};

/// Section `[bus.memory]` of `meterstack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Most uncommitted records a topic holds before appends wait.
    pub capacity: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            capacity: 1_000_000,
        }
    }
}

/// The in-memory bus.
#[derive(Debug)]
pub struct MemoryBus {
    config: MemoryConfig,
    topics: Mutex<HashMap<String, Arc<Log>>>,
}

#[derive(Debug)]
struct Log {
    name: String,
    state: Mutex<LogState>,
    appended: Notify,
    space: Notify,
}

#[derive(Debug, Default)]
struct LogState {
    /// Offset of `records[0]`.
    base: u64,
    records: VecDeque<Record>,
    /// Committed position of each group that has joined.
    committed: HashMap<String, u64>,
    /// Groups with a live subscription.
    active: HashSet<String>,
}

impl LogState {
    fn end(&self) -> u64 {
        self.base + self.records.len() as u64
    }

    fn export_lag(&self, topic: &str) {
        for (group, committed) in &self.committed {
            metrics::gauge!(BUS_CONSUMER_LAG, "topic" => topic.to_owned(), "group" => group.clone())
                .set((self.end() - committed) as f64);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state is consistent between statements, so a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryBus {
    /// An empty bus.
    pub fn new(config: MemoryConfig) -> Self {
        Self {
            config,
            topics: Mutex::new(HashMap::new()),
        }
    }

    fn log(&self, topic: &str) -> Arc<Log> {
        lock(&self.topics)
            .entry(topic.to_owned())
            .or_insert_with(|| {
                Arc::new(Log {
                    name: topic.to_owned(),
                    state: Mutex::new(LogState::default()),
                    appended: Notify::new(),
                    space: Notify::new(),
                })
            })
            .clone()
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let log = self.log(topic);
        loop {
            let space = log.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut state = lock(&log.state);
                // A batch larger than the capacity is let into an empty log, so it cannot wait forever.
                if state.records.is_empty()
                    || state.records.len() + records.len() <= self.config.capacity
                {
                    let n = records.len();
                    state.records.extend(records);
                    state.export_lag(&log.name);
                    drop(state);
                    metrics::counter!(BUS_RECORDS_APPENDED, "topic" => topic.to_owned())
                        .increment(n as u64);
                    log.appended.notify_waiters();
                    return Ok(());
                }
            }
            space.await;
        }
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        let log = self.log(topic);
        let position = {
            let mut state = lock(&log.state);
            if !state.active.insert(group.to_owned()) {
                return Err(Error::GroupBusy {
                    topic: topic.to_owned(),
                    group: group.to_owned(),
                });
            }
            let base = state.base;
            *state.committed.entry(group.to_owned()).or_insert(base)
        };
        Ok(Box::new(MemorySubscription {
            log,
            group: group.to_owned(),
            position,
        }))
    }
}

#[derive(Debug)]
struct MemorySubscription {
    log: Arc<Log>,
    group: String,
    /// Next offset to return.
    position: u64,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let appended = self.log.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            {
                let state = lock(&self.log.state);
                if self.position < state.end() && max > 0 {
                    // Records below `base` were committed by every group, this one included.
                    let start = (self.position.max(state.base) - state.base) as usize;
                    let out: Vec<Delivery> = state
                        .records
                        .iter()
                        .skip(start)
                        .take(max)
                        .enumerate()
                        .map(|(i, record)| Delivery {
                            partition: 0,
                            offset: state.base + (start + i) as u64,
                            record: record.clone(),
                        })
                        .collect();
                    self.position = state.base + (start + out.len()) as u64;
                    drop(state);
                    metrics::counter!(BUS_RECORDS_CONSUMED, "topic" => self.log.name.clone(), "group" => self.group.clone())
                        .increment(out.len() as u64);
                    return Ok(out);
                }
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn commit(&mut self) -> Result<()> {
        let mut state = lock(&self.log.state);
        state.committed.insert(self.group.clone(), self.position);
        let low = state
            .committed
            .values()
            .copied()
            .min()
            .unwrap_or(state.base);
        let trim = (low.saturating_sub(state.base) as usize).min(state.records.len());
        state.records.drain(..trim);
        state.base += trim as u64;
        state.export_lag(&self.log.name);
        drop(state);
        if trim > 0 {
            self.log.space.notify_waiters();
        }
        Ok(())
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        lock(&self.log.state).active.remove(&self.group);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use chrono::Utc;

    use super::*;

    fn rec(i: u32) -> Record {
        Record {
            key: format!("m-{}", i % 3),
            value: Bytes::from(i.to_string()),
            timestamp: Utc::now(),
            headers: vec![("source_topic".into(), "meters/x/readings".into())],
        }
    }

    fn values(d: &[Delivery]) -> Vec<String> {
        d.iter()
            .map(|d| String::from_utf8_lossy(&d.record.value).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn groups_resume_from_their_committed_position() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let mut a = bus.subscribe("t", "a").await.expect("subscribe");
        bus.append("t", (0..5).map(rec).collect())
            .await
            .expect("append");
        let got = a.poll(3, Duration::from_millis(10)).await.expect("poll");
        assert_eq!(values(&got), ["0", "1", "2"]);
        assert_eq!(got[2].offset, 2);
        a.commit().await.expect("commit");
        let got = a.poll(10, Duration::from_millis(10)).await.expect("poll");
        assert_eq!(values(&got), ["3", "4"]);
        // Not committed: a new consumer of the group starts again after offset 2.
        drop(a);
        let mut a = bus.subscribe("t", "a").await.expect("resubscribe");
        assert_eq!(
            values(&a.poll(10, Duration::from_millis(10)).await.expect("poll")),
            ["3", "4"]
        );
        // A second group that joined late still sees what the first has not committed.
        let mut b = bus.subscribe("t", "b").await.expect("subscribe b");
        assert_eq!(
            values(&b.poll(10, Duration::from_millis(10)).await.expect("poll")),
            ["3", "4"]
        );
        assert!(matches!(
            bus.subscribe("t", "b").await,
            Err(Error::GroupBusy { .. })
        ));
    }

    #[tokio::test]
    async fn poll_waits_for_appends_and_times_out_empty() {
        let bus = Arc::new(MemoryBus::new(MemoryConfig::default()));
        let mut sub = bus.subscribe("t", "g").await.expect("subscribe");
        assert!(
            sub.poll(10, Duration::from_millis(20))
                .await
                .expect("poll")
                .is_empty()
        );
        let producer = bus.clone();
        let handle = tokio::spawn(async move { producer.append("t", vec![rec(7)]).await });
        let got = sub.poll(10, Duration::from_secs(5)).await.expect("poll");
        assert_eq!(values(&got), ["7"]);
        handle.await.expect("join").expect("append");
    }

    #[tokio::test]
    async fn full_topic_applies_backpressure_until_commit() {
        let bus = Arc::new(MemoryBus::new(MemoryConfig { capacity: 4 }));
        let mut sub = bus.subscribe("t", "g").await.expect("subscribe");
        bus.append("t", (0..4).map(rec).collect())
            .await
            .expect("fills");
        let producer = bus.clone();
        let blocked = tokio::spawn(async move { producer.append("t", vec![rec(4)]).await });
        assert_eq!(
            sub.poll(10, Duration::from_millis(10))
                .await
                .expect("poll")
                .len(),
            4
        );
        // Until the group commits, the fifth record stays out of the full topic.
        assert!(
            sub.poll(10, Duration::from_millis(100))
                .await
                .expect("poll")
                .is_empty()
        );
        assert!(
            !blocked.is_finished(),
            "append must wait while the topic is full"
        );
        sub.commit().await.expect("commit frees space");
        blocked.await.expect("join").expect("append after commit");
        assert_eq!(
            values(&sub.poll(10, Duration::from_secs(5)).await.expect("poll")),
            ["4"]
        );
    }
}
