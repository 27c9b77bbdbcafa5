//! The bus: the one interface every stage uses to pass records to the next.
//!
//! A topic is an append-only log of [`Record`]s, keyed by meter id so that each meter's records
//! stay in order. Consumers join a group; a group's committed position survives its consumers,
//! and a consumer commits only after its own output is durable, which makes delivery
//! at-least-once end to end.
//!
//! The backend is chosen once, in configuration ([`BusConfig::build`]); code above the [`Bus`]
//! trait never asks which one it has.
//!
//! | backend | durability | use |
//! |---|---|---|
//! | `memory` ([`memory::MemoryBus`]) | none: records live in process memory until every group has committed them; a graceful shutdown drains them, a crash loses them | `meterstack up` on one machine today, and tests |

pub mod memory;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another consumer of the same group is already subscribed, and this backend has one
    /// partition per topic.
    #[error("consumer group {group:?} already has a consumer on topic {topic:?}")]
    GroupBusy {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
}

/// `Result` with the bus [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One record on a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Partitioning key: the meter id, so one meter's records keep their order.
    pub key: String,
    /// The payload, unchanged.
    pub value: Bytes,
    /// When the record entered meterstack.
    pub timestamp: DateTime<Utc>,
    /// Small metadata, such as the MQTT topic a message arrived on.
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A record as a consumer receives it, with its position in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Partition of the topic.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
    /// The record.
    pub record: Record,
}

/// The bus interface.
#[async_trait]
pub trait Bus: Send + Sync + fmt::Debug {
    /// Appends `records` to `topic`, in order. Returns once the backend holds them; waits
    /// (backpressure) rather than drop anything when consumers fall behind.
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<()>;

    /// Joins consumer `group` on `topic`, starting at the group's committed position (the
    /// beginning of the retained log for a new group).
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>>;
}

/// One consumer's view of a topic.
#[async_trait]
pub trait Subscription: Send + fmt::Debug {
    /// Returns up to `max` records after the last one returned, waiting up to `wait` for the
    /// first; an empty vector means none arrived in time.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Commits every record returned by [`poll`](Subscription::poll) so far: the caller's
    /// output for them is durable, and the group will not see them again.
    async fn commit(&mut self) -> Result<()>;
}

/// Topic names. Section `[bus.topics]` of `meterstack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicNames {
    /// Every message the broker accepted, exactly as it arrived, with its receive time and
    /// source topic.
    pub readings_raw: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self {
            readings_raw: "readings.raw".into(),
        }
    }
}

/// Header names on `readings.raw` records.
pub mod headers {
    /// The MQTT topic the message was published on.
    pub const SOURCE_TOPIC: &str = "source_topic";
    /// The payload format (`json`).
    pub const FORMAT: &str = "format";
}

/// Which backend carries the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BusBackend {
    /// In process memory; see [`memory::MemoryBus`].
    #[default]
    Memory,
}

/// Section `[bus]` of `meterstack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// The backend.
    pub backend: BusBackend,
    /// Topic names.
    pub topics: TopicNames,
    /// Settings of the `memory` backend.
    pub memory: memory::MemoryConfig,
}

impl BusConfig {
    /// Builds the configured backend.
    pub fn build(&self) -> Arc<dyn Bus> {
        match self.backend {
            BusBackend::Memory => Arc::new(memory::MemoryBus::new(self.memory.clone())),
        }
    }
}
