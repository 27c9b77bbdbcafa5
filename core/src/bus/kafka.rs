//! The Kafka bus backend, through rdkafka (librdkafka).
//!
//! - Producer: idempotent (`enable.idempotence`), `acks=all`; records keyed by meter id, so
//!   each meter's records stay in one partition, in order (librdkafka's `murmur2_random`
//!   partitioner, the one Java clients use). An append returns once every record is
//!   acknowledged by the cluster.
//! - Consumers: Kafka consumer groups, `enable.auto.commit=false`; [`Subscription::commit`]
//!   commits, synchronously, the offsets after the records this consumer has polled, for the
//!   partitions it still owns. A consumer that dies, or loses a partition in a rebalance,
//!   before committing, leaves those records to be delivered again (at-least-once).
//! - Topics are created at start with `bus.partitions` partitions, `bus.kafka.replication`
//!   replicas and the `[bus.retention]` limits (an existing topic is left as it is).
//! - Anything in `bus.kafka.properties` is passed to librdkafka as is: TLS (`security.protocol`,
//!   `ssl.*`), SASL (`sasl.*`), timeouts.
//!
//! Record timestamps are Kafka's (milliseconds); headers are Kafka headers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::DateTime;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Bus, Delivery, Error, Record, Result, Retention, Subscription};
use crate::metrics::{BUS_CONSUMER_LAG, BUS_RECORDS_APPENDED, BUS_RECORDS_CONSUMED};

/// Section `[bus.kafka]` of `meterstack.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `HOST:PORT[,HOST:PORT…]`.
    pub brokers: String,
    /// Replication factor of the topics meterstack creates.
    pub replication: i32,
    /// Client id reported to the brokers.
    pub client_id: String,
    /// How long an append may wait for the cluster before it fails (and is retried by the caller).
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
    /// librdkafka properties passed through unchanged (e.g. `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `ssl.ca.location`).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            replication: 1,
            client_id: "meterstack".into(),
            timeout: Duration::from_secs(30),
            properties: BTreeMap::new(),
        }
    }
}

fn kafka(e: KafkaError) -> Error {
    Error::Storage(format!("kafka: {e}"))
}

/// The Kafka bus.
pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBus")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KafkaConfig {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", &self.client_id);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

impl KafkaBus {
    /// Connects, and creates `topics` with `partitions` partitions where they do not exist.
    pub async fn connect(
        config: KafkaConfig,
        topics: &[&str],
        partitions: u32,
        retention: &Retention,
    ) -> Result<Self> {
        let producer: FutureProducer = config
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("message.timeout.ms", config.timeout.as_millis().to_string())
            .create()
            .map_err(kafka)?;
        let admin: AdminClient<DefaultClientContext> = config.client().create().map_err(kafka)?;
        let partitions = i32::try_from(partitions.max(1)).unwrap_or(i32::MAX);
        let retention_ms = retention.age.as_millis().to_string();
        let retention_bytes = retention.bytes.to_string();
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                NewTopic::new(t, partitions, TopicReplication::Fixed(config.replication))
                    .set("retention.ms", &retention_ms)
                    .set("retention.bytes", &retention_bytes)
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(config.timeout));
        for result in admin.create_topics(&new, &options).await.map_err(kafka)? {
            match result {
                Ok(topic) => info!(topic, partitions, "kafka topic created"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(Error::Storage(format!(
                        "kafka: cannot create topic {topic}: {code}"
                    )));
                }
            }
        }
        Ok(Self { config, producer })
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<()> {
        let n = records.len() as u64;
        // Sent together, acknowledged together; the idempotent producer keeps per-partition
        // order across its in-flight requests.
        let sends = records.iter().map(|r| {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (key, value) in &r.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                });
            }
            let record = FutureRecord::to(topic)
                .key(r.key.as_bytes())
                .payload(r.value.as_ref())
                .timestamp(r.timestamp.timestamp_millis())
                .headers(headers);
            self.producer.send(record, self.config.timeout)
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| kafka(e))?;
        }
        metrics::counter!(BUS_RECORDS_APPENDED, "topic" => topic.to_owned()).increment(n);
        Ok(())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>> {
        let consumer: StreamConsumer = self
            .config
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(kafka)?;
        consumer.subscribe(&[topic]).map_err(kafka)?;
        Ok(Box::new(KafkaSubscription {
            consumer: Arc::new(consumer),
            topic: topic.to_owned(),
            group: group.to_owned(),
            polled: HashMap::new(),
            timeout: self.config.timeout,
            lag_exported: None,
            tail: false,
            deferred: None,
        }))
    }

    async fn tail(&self, topic: &str) -> Result<Box<dyn Subscription>> {
        // No group is joined (partitions are assigned, not subscribed); librdkafka still wants
        // a group id, which is never used to commit.
        let consumer: StreamConsumer = self
            .config
            .client()
            .set(
                "group.id",
                format!(
                    "meterstack-tail-{}-{}",
                    std::process::id(),
                    chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
                ),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
            .map_err(kafka)?;
        let consumer = Arc::new(consumer);
        let (c, t, timeout) = (consumer.clone(), topic.to_owned(), self.config.timeout);
        tokio::task::spawn_blocking(move || -> Result<()> {
            let metadata = c.fetch_metadata(Some(&t), timeout).map_err(kafka)?;
            let mut list = TopicPartitionList::new();
            for m in metadata.topics().iter().filter(|m| m.name() == t) {
                for p in m.partitions() {
                    list.add_partition_offset(&t, p.id(), Offset::End)
                        .map_err(kafka)?;
                }
            }
            if list.count() == 0 {
                return Err(Error::Storage(format!(
                    "kafka: topic {t} has no partitions"
                )));
            }
            c.assign(&list).map_err(kafka)
        })
        .await
        .map_err(|e| Error::Storage(format!("kafka tail task: {e}")))??;
        Ok(Box::new(KafkaSubscription {
            consumer,
            topic: topic.to_owned(),
            group: "tail".into(),
            polled: HashMap::new(),
            timeout: self.config.timeout,
            lag_exported: None,
            tail: true,
            deferred: None,
        }))
    }

    async fn flush(&self) -> Result<()> {
        let producer = self.producer.clone();
        let timeout = self.config.timeout;
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|e| Error::Storage(format!("kafka flush task: {e}")))?
            .map_err(kafka)
    }
}

struct KafkaSubscription {
    consumer: Arc<StreamConsumer>,
    topic: String,
    group: String,
    /// Next offset to commit per partition: one past the last record polled.
    polled: HashMap<i32, i64>,
    timeout: Duration,
    /// When lag was last exported: asking the brokers for every partition's high watermark
    /// costs a round trip each, so it is done at most every [`LAG_EVERY`].
    lag_exported: Option<std::time::Instant>,
    /// A [tail](Bus::tail): assigned every partition, commits nothing.
    tail: bool,
    /// An error met after records were taken in the same poll, reported by the next one.
    deferred: Option<KafkaError>,
}

const LAG_EVERY: Duration = Duration::from_secs(5);

impl std::fmt::Debug for KafkaSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscription")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("polled", &self.polled)
            .finish_non_exhaustive()
    }
}

fn to_delivery(m: &rdkafka::message::BorrowedMessage<'_>) -> Delivery {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let millis = m.timestamp().to_millis().unwrap_or_default();
    Delivery {
        partition: u32::try_from(m.partition()).unwrap_or_default(),
        offset: u64::try_from(m.offset()).unwrap_or_default(),
        record: Record {
            key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
            value: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            timestamp: DateTime::from_timestamp_millis(millis).unwrap_or_default(),
            headers,
        },
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        if let Some(e) = self.deferred.take() {
            return Err(kafka(e));
        }
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(out),
            Ok(m) => m,
        };
        let mut next = Some(first);
        while let Some(message) = next.take() {
            let m = match message {
                Ok(m) => m,
                Err(e) if out.is_empty() => return Err(kafka(e)),
                // The records taken so far are this consumer's now (librdkafka's position has
                // moved past them): hand them over, and report the error on the next poll.
                // Dropping them here would let the next commit skip records nobody handled.
                Err(e) => {
                    self.deferred = Some(e);
                    break;
                }
            };
            self.polled.insert(m.partition(), m.offset() + 1);
            out.push(to_delivery(&m));
            if out.len() >= max {
                break;
            }
            // Whatever librdkafka has already fetched, without waiting.
            next = self.consumer.recv().now_or_never();
        }
        metrics::counter!(BUS_RECORDS_CONSUMED, "topic" => self.topic.clone(), "group" => self.group.clone())
            .increment(out.len() as u64);
        Ok(out)
    }

    async fn commit(&mut self) -> Result<()> {
        if self.tail || self.polled.is_empty() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let group = self.group.clone();
        let polled = std::mem::take(&mut self.polled);
        let timeout = self.timeout;
        let export_lag = self.lag_exported.is_none_or(|t| t.elapsed() >= LAG_EVERY);
        if export_lag {
            self.lag_exported = Some(std::time::Instant::now());
        }
        tokio::task::spawn_blocking(move || -> Result<()> {
            let owned = consumer.assignment().map_err(kafka)?;
            let mut list = TopicPartitionList::new();
            for (&p, &next) in &polled {
                if owned.find_partition(&topic, p).is_some() {
                    list.add_partition_offset(&topic, p, Offset::Offset(next)).map_err(kafka)?;
                }
            }
            if list.count() > 0 {
                match consumer.commit(&list, CommitMode::Sync) {
                    Ok(()) => {}
                    // A rebalance took the partitions meanwhile: the new owner consumes them
                    // again from the last commit.
                    Err(KafkaError::ConsumerCommit(
                        code @ (RDKafkaErrorCode::RebalanceInProgress
                        | RDKafkaErrorCode::IllegalGeneration
                        | RDKafkaErrorCode::UnknownMemberId),
                    )) => warn!(topic, group, %code, "commit lost to a rebalance; records will be delivered again"),
                    Err(e) => return Err(kafka(e)),
                }
            }
            if !export_lag {
                return Ok(());
            }
            // Lag of the partitions this consumer owns.
            let mut lag = 0i64;
            for element in owned.elements_for_topic(&topic) {
                let p = element.partition();
                let (_, high) = consumer.fetch_watermarks(&topic, p, timeout).map_err(kafka)?;
                let committed = polled.get(&p).copied().unwrap_or(high);
                lag += (high - committed).max(0);
            }
            metrics::gauge!(BUS_CONSUMER_LAG, "topic" => topic, "group" => group).set(lag as f64);
            Ok(())
        })
        .await
        .map_err(|e| Error::Storage(format!("kafka commit task: {e}")))?
    }
}
