//! The alert store's feed: `alerts` topic → the SQL store's alert lifecycle
//! ([`meterstack_core::store::alerts`]).
//!
//! Events are applied idempotently (redeliveries change nothing), so the consumer commits its
//! bus position only after a batch is stored and simply applies a batch again after a store
//! failure. A record that is not an alert event is counted, logged and skipped.

use std::sync::Arc;
use std::time::Duration;

use meterstack_core::bus::{Bus, Delivery};
use meterstack_core::metrics as m;
use meterstack_core::store::SqlStore;
use meterstack_core::store::alerts::AlertInput;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::output::{Alert, AlertEvent};

/// The consumer group of the alert store.
pub const GROUP: &str = "meterstack-alert-store";

/// Records taken per poll.
const BATCH: usize = 500;

/// Stores every event of `topic` in `store` until `stop`.
#[derive(Debug, Clone)]
pub struct AlertRecorder {
    /// The bus.
    pub bus: Arc<dyn Bus>,
    /// The `alerts` topic.
    pub topic: String,
    /// The SQL store.
    pub store: SqlStore,
}

/// An `alerts` record as the store takes it.
pub fn alert_input(a: &Alert) -> AlertInput {
    let name = |v: serde_json::Result<serde_json::Value>| {
        v.ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    AlertInput {
        alert_id: a.alert_id.clone(),
        opened: a.event == AlertEvent::Opened,
        alert_type: name(serde_json::to_value(a.kind)),
        severity: a.severity.as_str().to_owned(),
        meter_id: a.meter_id.clone(),
        feeder: a.feeder.clone(),
        start: a.start,
        end: a.end,
        at: a.at,
        evidence: a.evidence.clone(),
    }
}

impl AlertRecorder {
    /// Runs until `stop`; bus failures end it (the process restarts it), store failures are
    /// retried.
    pub async fn run(self, stop: CancellationToken) -> Result<(), meterstack_core::bus::Error> {
        let mut sub = self.bus.subscribe(&self.topic, GROUP).await?;
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                b = sub.poll(BATCH, Duration::from_secs(1)) => b?,
            };
            if batch.is_empty() {
                continue;
            }
            let mut backoff = Duration::from_millis(100);
            while let Err(e) = self.apply(&batch).await {
                metrics::counter!(m::ALERTS_STORE_ERRORS).increment(1);
                error!(error = %e, "cannot store alerts; retrying the batch");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            sub.commit().await?;
        }
    }

    async fn apply(&self, batch: &[Delivery]) -> meterstack_core::store::Result<()> {
        for d in batch {
            let alert: Alert = match serde_json::from_slice(&d.record.value) {
                Ok(a) => a,
                Err(e) => {
                    metrics::counter!(m::ALERTS_INVALID).increment(1);
                    warn!(partition = d.partition, offset = d.offset, error = %e, "not an alert event; skipped");
                    continue;
                }
            };
            match self.store.record_alert(&alert_input(&alert)).await {
                Ok(Some((_, transition))) => {
                    let t = serde_json::to_value(transition)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    metrics::counter!(m::ALERTS_TRANSITIONS, "transition" => t).increment(1);
                }
                Ok(None) => {}
                Err(meterstack_core::store::StoreError::Invalid(reason)) => {
                    metrics::counter!(m::ALERTS_INVALID).increment(1);
                    warn!(alert_id = %alert.alert_id, %reason, "alert event refused; skipped");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
