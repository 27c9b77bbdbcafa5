//! The bridge: every publish the broker accepts from a meter (`meters/+/+`, whose topics the
//! gate has checked) is appended to the bus.
//!
//! rumqttd sends PUBACK for a QoS 1 publish once its router holds the message; the bridge then
//! receives it through a local link and appends it to `readings.raw`. Between the two, the
//! message exists only in rumqttd's memory. The bridge keeps that window short by reading
//! continuously and appending in batches of whatever has arrived (up to `max_batch`), never
//! waiting to fill a batch. On shutdown it keeps draining until the broker has been quiet for
//! `drain_quiet` (or `drain_max` has passed), so every publish acknowledged before the shutdown
//! signal reaches the bus. What it has not yet moved is counted in a [`Backlog`] that holds the
//! gate back before rumqttd's log could overflow.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use meterstack_core::backoff::Backoff;
use meterstack_core::bus::{Bus, Record, headers};
use meterstack_core::metrics::{
    BRIDGE_APPEND_SECONDS, BRIDGE_ERRORS, MESSAGES_RECEIVED, MQTT_OVERWRITTEN,
};
use rumqttd::Notification;
use rumqttd::local::{LinkRx, LinkTx};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::BridgeConfig;
use crate::backlog::{Backlog, QUIET, log_size};

/// Moves accepted publishes from the broker onto the bus.
pub struct Bridge {
    config: BridgeConfig,
    // Held so the broker keeps the link (and its subscription) open.
    _link_tx: LinkTx,
    link_rx: LinkRx,
    bus: Arc<dyn Bus>,
    topic: String,
    /// Offset in rumqttd's log of the last message received, to detect overwritten ones.
    last_offset: Option<u64>,
    /// Shared with the gate, which waits while too much is outstanding.
    backlog: Arc<Backlog>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("config", &self.config)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// What the bridge took from the link in one go.
struct Batch {
    records: Vec<Record>,
    /// Whether the link asked to be woken after this batch.
    wake: bool,
    /// When the first message of the batch reached the bridge.
    started: std::time::Instant,
    /// The batch's size in rumqttd's log, as the gate counted it.
    bytes: usize,
}

impl Bridge {
    pub(crate) fn new(
        config: BridgeConfig,
        link_tx: LinkTx,
        link_rx: LinkRx,
        bus: Arc<dyn Bus>,
        topic: &str,
        backlog: Arc<Backlog>,
    ) -> Self {
        Self {
            config,
            _link_tx: link_tx,
            link_rx,
            bus,
            topic: topic.to_owned(),
            last_offset: None,
            backlog,
        }
    }

    /// Runs until `shutdown` is cancelled, then drains the broker and returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                n = tokio::time::timeout(QUIET, self.link_rx.next()) => n,
            };
            match first {
                Err(_) => self.backlog.quiet(),
                Ok(Ok(n)) => {
                    let batch = self.collect(n);
                    self.deliver(batch).await;
                }
                Ok(Err(e)) => {
                    // The router is gone: nothing more can arrive.
                    warn!(error = %e, "broker link closed");
                    return;
                }
            }
        }
        self.drain().await;
    }

    async fn drain(&mut self) {
        let started = tokio::time::Instant::now();
        let mut drained = 0usize;
        while started.elapsed() < self.config.drain_max {
            match tokio::time::timeout(self.config.drain_quiet, self.link_rx.next()).await {
                Ok(Ok(n)) => {
                    let batch = self.collect(n);
                    drained += batch.records.len();
                    self.deliver(batch).await;
                }
                Ok(Err(_)) | Err(_) => break,
            }
        }
        info!(
            drained,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "bridge drained the broker"
        );
    }

    /// Takes `first` and whatever else the link already holds, up to `max_batch`.
    fn collect(&mut self, first: Option<Notification>) -> Batch {
        let mut batch = Batch {
            records: Vec::new(),
            wake: false,
            started: std::time::Instant::now(),
            bytes: 0,
        };
        let mut next = first;
        loop {
            match next {
                Some(Notification::Forward(forward)) => {
                    if let Some((_, offset)) = forward.cursor {
                        self.check_gap(offset);
                    }
                    let topic = String::from_utf8_lossy(&forward.publish.topic).into_owned();
                    // The filter also matches the commands the platform publishes to meters.
                    if !topic.ends_with("/commands") {
                        batch.bytes +=
                            log_size(forward.publish.topic.len(), forward.publish.payload.len());
                        batch
                            .records
                            .push(raw_record(topic, forward.publish.payload));
                    }
                }
                Some(Notification::Unschedule) => batch.wake = true,
                Some(other) => debug!(notification = ?other, "ignored broker notification"),
                None => {}
            }
            if batch.records.len() >= self.config.max_batch {
                break;
            }
            match self.link_rx.next().now_or_never() {
                Some(Ok(Some(n))) => next = Some(n),
                _ => break,
            }
        }
        batch
    }

    /// rumqttd keeps `mqtt.segments × mqtt.segment_bytes` of messages for the bridge's
    /// subscription; if the bridge falls further behind, rumqttd overwrites messages it has
    /// already acknowledged. Its log offsets then jump: count what was lost.
    fn check_gap(&mut self, offset: u64) {
        if let Some(last) = self.last_offset
            && offset > last + 1
        {
            let lost = offset - last - 1;
            metrics::counter!(MQTT_OVERWRITTEN).increment(lost);
            error!(
                lost,
                "the bridge fell behind the broker: acknowledged messages were overwritten before they reached the bus; raise mqtt.segment_bytes or mqtt.segments"
            );
        }
        self.last_offset = Some(offset);
    }

    async fn deliver(&mut self, batch: Batch) {
        if !batch.records.is_empty() {
            let n = batch.records.len() as u64;
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
            // The broker has acknowledged these messages: retry until the bus takes them, even
            // while stopping (the process's drain deadline is the limit), so no stop signal
            // ends these waits.
            let never = tokio_util::sync::CancellationToken::new();
            while let Err(e) = self.bus.append(&self.topic, batch.records.clone()).await {
                metrics::counter!(BRIDGE_ERRORS).increment(1);
                warn!(error = %e, retry_in_ms = backoff.next_delay().as_millis() as u64, "bus append failed");
                backoff.wait(&never).await;
            }
            metrics::counter!(MESSAGES_RECEIVED).increment(n);
            self.backlog.delivered(batch.bytes);
            // How long acknowledged messages lived only in rumqttd's memory (from the bridge's
            // receipt; rumqttd's router adds microseconds before that).
            metrics::histogram!(BRIDGE_APPEND_SECONDS)
                .record(batch.started.elapsed().as_secs_f64());
        }
        if batch.wake
            && let Err(e) = self.link_rx.wake().await
        {
            warn!(error = %e, "cannot reschedule the broker link");
        }
    }
}

/// The `readings.raw` record for a publish on `topic`: keyed by the topic's meter id segment,
/// stamped with the receive time.
fn raw_record(topic: String, payload: bytes::Bytes) -> Record {
    let key = topic.split('/').nth(1).unwrap_or_default().to_owned();
    let format = match topic.rsplit('/').next().unwrap_or_default() {
        "readings" => "json".to_owned(),
        other => other.to_owned(),
    };
    Record {
        key,
        value: payload,
        timestamp: Utc::now(),
        headers: vec![
            (headers::SOURCE_TOPIC.to_owned(), topic),
            (headers::FORMAT.to_owned(), format),
        ],
    }
}
