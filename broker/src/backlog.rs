//! Backpressure from the bridge to the gate.
//!
//! rumqttd acknowledges a QoS 1 publish as soon as its router holds it, and keeps the bridge's
//! subscription in a log of `mqtt.segments × mqtt.segment_bytes`; a bridge that falls further
//! behind than that would see acknowledged messages overwritten. So the gate admits a publish
//! only while the bytes forwarded but not yet on the bus stay under half of what the log is
//! sure to hold; otherwise it stops reading that meter's socket until the bridge catches up.
//! Meters then wait for PUBACKs and keep their readings in their own buffers.
//!
//! The count is kept in rumqttd's own measure of a message (4 + topic + payload bytes). A
//! message the gate forwarded but rumqttd never logged (its connection broke first) would leave
//! the count too high forever, so whenever the bridge has found the broker quiet for
//! [`QUIET`], nothing is in between and the count starts again from zero.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use meterstack_core::metrics::{BRIDGE_BACKLOG_BYTES, MQTT_BACKPRESSURE};
use tokio::sync::Notify;

/// How long the broker must have been quiet for the bridge to reset the count.
pub(crate) const QUIET: Duration = Duration::from_millis(500);

/// Bytes of meter publishes the gate forwarded to rumqttd that the bridge has not yet appended
/// to the bus.
#[derive(Debug)]
pub(crate) struct Backlog {
    bytes: AtomicI64,
    limit: i64,
    drained: Notify,
}

/// rumqttd's size of a publish in its log.
pub(crate) fn log_size(topic_len: usize, payload_len: usize) -> usize {
    4 + topic_len + payload_len
}

impl Backlog {
    /// A backlog for rumqttd's log of `segments` segments of `segment_bytes`: rumqttd drops the
    /// oldest whole segment when it starts a new one, so only `segments - 1` full segments are
    /// sure to be kept; half of that is admitted.
    pub(crate) fn new(segment_bytes: usize, segments: usize) -> Self {
        let kept = segment_bytes.saturating_mul(segments.saturating_sub(1));
        Self {
            bytes: AtomicI64::new(0),
            limit: i64::try_from(kept / 2).unwrap_or(i64::MAX).max(1),
            drained: Notify::new(),
        }
    }

    /// The most the gate admits at once (unless a single message is larger).
    pub(crate) fn limit(&self) -> usize {
        usize::try_from(self.limit).unwrap_or(usize::MAX)
    }

    /// Waits until `bytes` more fit under the limit, and counts them. A message larger than
    /// the limit is admitted alone, when nothing else is outstanding.
    pub(crate) async fn admit(&self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let mut waited = false;
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a drain in between is not missed.
            drained.as_mut().enable();
            let admitted = self
                .bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                    (now <= 0 || now.saturating_add(bytes) <= self.limit)
                        .then(|| now.max(0).saturating_add(bytes))
                });
            if let Ok(before) = admitted {
                metrics::gauge!(BRIDGE_BACKLOG_BYTES).set((before.max(0) + bytes) as f64);
                return;
            }
            if !waited {
                waited = true;
                metrics::counter!(MQTT_BACKPRESSURE).increment(1);
            }
            drained.await;
        }
    }

    /// The bridge appended `bytes` of forwarded messages to the bus.
    pub(crate) fn delivered(&self, bytes: usize) {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        let now = self.bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        metrics::gauge!(BRIDGE_BACKLOG_BYTES).set(now.max(0) as f64);
        self.drained.notify_waiters();
    }

    /// The broker has been quiet for [`QUIET`]: nothing forwarded is still on its way.
    pub(crate) fn quiet(&self) {
        if self.bytes.swap(0, Ordering::AcqRel) != 0 {
            metrics::gauge!(BRIDGE_BACKLOG_BYTES).set(0.0);
            self.drained.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn admits_up_to_half_of_the_kept_segments_then_waits_for_the_bridge() {
        // 3 segments of 1 KiB: 2 KiB kept for sure, 1 KiB admitted.
        let backlog = Arc::new(Backlog::new(1024, 3));
        backlog.admit(600).await;
        backlog.admit(400).await;
        let waiting = tokio::spawn({
            let b = backlog.clone();
            async move { b.admit(100).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "admitted beyond the limit");
        backlog.delivered(600);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("admitted once the bridge delivered")
            .expect("task");
    }

    #[tokio::test]
    async fn a_message_larger_than_the_limit_goes_alone() {
        let backlog = Backlog::new(1024, 2);
        backlog.admit(5000).await;
        let next = tokio::time::timeout(Duration::from_millis(50), backlog.admit(10)).await;
        assert!(next.is_err(), "admitted beside an oversized message");
        backlog.delivered(5000);
        backlog.admit(10).await;
    }

    #[tokio::test]
    async fn a_quiet_broker_resets_a_count_that_drifted() {
        let backlog = Arc::new(Backlog::new(1024, 2));
        // Forwarded, but never logged by rumqttd: the bridge will never deliver it.
        backlog.admit(512).await;
        let waiting = tokio::spawn({
            let b = backlog.clone();
            async move { b.admit(100).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        backlog.quiet();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("admitted after the reset")
            .expect("task");
    }
}
