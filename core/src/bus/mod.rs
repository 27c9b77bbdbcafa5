//! The bus: the one interface every stage uses to pass records to the next.
//!
//! A topic is an append-only log of [`Record`]s, keyed by meter id so that each meter's records
//! stay in order. Consumers join a group; a group's committed position survives its consumers,
//! and a consumer commits only after its own output is durable, which makes delivery
//! at-least-once end to end.
//!
//! Every consumer runs on one driver, [`consumer::consume`]: poll → handle → make the output
//! durable → commit, with one retry policy.
//!
//! The backend is chosen once, in configuration ([`BusConfig::build`]); code above the [`Bus`]
//! trait never asks which one it has.
//!
//! | backend | durability | use |
//! |---|---|---|
//! | `embedded` ([`embedded::EmbeddedBus`]) | on local disk (redb), fsync per policy | `meterstack up` on one machine: the default |
//! | `kafka` ([`kafka::KafkaBus`]) | the Kafka cluster's (`acks=all`) | roles in several processes or on several machines |

mod codec;
pub mod consumer;
pub mod embedded;
pub mod kafka;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend's storage failed.
    #[error("bus storage: {0}")]
    Storage(String),
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
    /// A record of `value` as JSON under `key`, stamped now (`None` if it cannot be
    /// serialized).
    pub fn json<T: serde::Serialize>(key: String, value: &T) -> Option<Self> {
        Some(Self {
            key,
            value: Bytes::from(serde_json::to_vec(value).ok()?),
            timestamp: Utc::now(),
            headers: Vec::new(),
        })
    }

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

    /// Follows `topic` from its end, outside any group: every record appended after this call,
    /// in every partition, to this subscriber alone (each process's live feed sees the whole
    /// topic). Nothing is committed; [`Subscription::commit`] does nothing.
    async fn tail(&self, topic: &str) -> Result<Box<dyn Subscription>>;

    /// Makes every record appended and every offset committed so far durable (for a
    /// graceful shutdown under a relaxed fsync policy).
    async fn flush(&self) -> Result<()>;
}

/// The partition of `key` among `partitions`: a stable FNV-1a hash, so a key always maps to
/// the same partition, across processes and versions.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % partitions.max(1)
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
    /// Every message the broker accepted, exactly as it arrived, with its receive time,
    /// source topic and format (headers), keyed by meter id.
    pub readings_raw: String,
    /// Readings that passed validation (VEE).
    pub readings_clean: String,
    /// Readings that failed decoding or validation, with the reason.
    pub readings_rejected: String,
    /// Interval and window aggregates.
    pub aggregates: String,
    /// Alert lifecycle events.
    pub alerts: String,
    /// Meter connect and disconnect events.
    pub meter_events: String,
    /// Commands for meters (published to `meters/{id}/commands` by the broker role).
    pub meter_commands: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self {
            readings_raw: "readings.raw".into(),
            readings_clean: "readings.clean".into(),
            readings_rejected: "readings.rejected".into(),
            aggregates: "aggregates".into(),
            alerts: "alerts".into(),
            meter_events: "meter.events".into(),
            meter_commands: "meter.commands".into(),
        }
    }
}

impl TopicNames {
    /// Every topic name.
    pub fn all(&self) -> [&str; 7] {
        [
            &self.readings_raw,
            &self.readings_clean,
            &self.readings_rejected,
            &self.aggregates,
            &self.alerts,
            &self.meter_events,
            &self.meter_commands,
        ]
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
    /// A durable log on local disk; see [`embedded::EmbeddedBus`].
    #[default]
    Embedded,
    /// Apache Kafka or a Kafka-protocol broker; see [`kafka::KafkaBus`].
    Kafka,
}

impl std::str::FromStr for BusBackend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "embedded" => Ok(Self::Embedded),
            "kafka" => Ok(Self::Kafka),
            other => Err(format!(
                "the bus backend is embedded or kafka, not {other:?}"
            )),
        }
    }
}

/// Section `[bus.retention]`: how long topics keep records, on either backend (the embedded
/// log enforces it; Kafka topics are created with `retention.ms` and `retention.bytes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Records older than this (by receive time) are deleted.
    #[serde(with = "crate::duration")]
    pub age: Duration,
    /// Each partition keeps at most this many bytes; the oldest records go first.
    pub bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            age: Duration::from_secs(7 * 86_400),
            bytes: 1 << 30,
        }
    }
}

/// Section `[bus]` of `meterstack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// The backend.
    pub backend: BusBackend,
    /// Partitions of each topic when it is created.
    pub partitions: u32,
    /// Topic names.
    pub topics: TopicNames,
    /// How long topics keep records.
    pub retention: Retention,
    /// Settings of the `embedded` backend.
    pub embedded: embedded::EmbeddedConfig,
    /// Settings of the `kafka` backend.
    pub kafka: kafka::KafkaConfig,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            backend: BusBackend::default(),
            partitions: 8,
            topics: TopicNames::default(),
            retention: Retention::default(),
            embedded: embedded::EmbeddedConfig::default(),
            kafka: kafka::KafkaConfig::default(),
        }
    }
}

impl BusConfig {
    /// Opens the configured backend; `data_dir` holds the embedded log. Kafka topics are
    /// created here; embedded ones when first used.
    pub async fn build(&self, data_dir: &Path) -> Result<Arc<dyn Bus>> {
        Ok(match self.backend {
            BusBackend::Embedded => Arc::new(embedded::EmbeddedBus::open(
                &self.embedded.file(data_dir),
                self.embedded.clone(),
                self.partitions,
                self.retention.clone(),
            )?),
            BusBackend::Kafka => Arc::new(
                kafka::KafkaBus::connect(
                    self.kafka.clone(),
                    &self.topics.all(),
                    self.partitions,
                    &self.retention,
                )
                .await?,
            ),
        })
    }
}

#[cfg(test)]
mod tests;
