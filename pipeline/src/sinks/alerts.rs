//! The alert store's feed: `alerts` topic → the SQL store's alert lifecycle
//! ([`meterstack_core::store::alerts`]).
//!
//! Events are applied idempotently (redeliveries change nothing), so the consumer commits its
//! bus position only after a batch is stored and simply applies a batch again after a store
//! failure. A record that is not an alert event is counted, logged and skipped.

use std::sync::Arc;

use meterstack_core::bus::consumer::{ConsumerOptions, Handler, consume};
use meterstack_core::bus::{Bus, Delivery};
use meterstack_core::component::{BoxError, Component, Context, NoBus};
use meterstack_core::metrics as m;
use meterstack_core::store::SqlStore;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use meterstack_core::records::Alert;

/// The consumer group of the alert store.
pub const GROUP: &str = "meterstack-alert-store";

/// Records taken per poll.
const BATCH: usize = 500;

/// Stores every event of `alerts` in the SQL store until `stop`.
#[derive(Debug, Clone)]
pub struct AlertRecorder {
    bus: Arc<dyn Bus>,
    topic: String,
    store: SqlStore,
}

#[async_trait::async_trait]
impl Component for AlertRecorder {
    fn name(&self) -> &'static str {
        "alert store"
    }

    async fn run(self: Box<Self>, stop: CancellationToken) -> Result<(), BoxError> {
        Ok((*self).run(stop).await?)
    }
}

impl AlertRecorder {
    /// The recorder of the context's `alerts` topic into its SQL store.
    pub fn build(ctx: &Context) -> Result<Self, NoBus> {
        Ok(Self {
            bus: ctx.bus("the alert store")?.clone(),
            topic: ctx.topics.alerts.clone(),
            store: ctx.store.clone(),
        })
    }

    /// Runs until `stop`; store failures are retried (the batch is applied again).
    pub async fn run(self, stop: CancellationToken) -> Result<(), meterstack_core::bus::Error> {
        let mut sub = self.bus.subscribe(&self.topic, GROUP).await?;
        let options = ConsumerOptions {
            batch: BATCH,
            ..ConsumerOptions::new(GROUP)
        };
        let mut handler = Recorder {
            store: self.store,
            pending: Vec::new(),
        };
        consume(sub.as_mut(), &mut handler, &options, &stop).await;
        Ok(())
    }
}

/// The alert store as a consumer: a batch is stored whole, or applied again.
struct Recorder {
    store: SqlStore,
    pending: Vec<Delivery>,
}

impl Handler for Recorder {
    type Error = meterstack_core::store::StoreError;

    fn handle(&mut self, batch: Vec<Delivery>) {
        self.pending.extend(batch);
    }

    async fn flush(&mut self, _last: bool) -> Result<bool, Self::Error> {
        if let Err(e) = apply(&self.store, &self.pending).await {
            metrics::counter!(m::ALERTS_STORE_ERRORS).increment(1);
            error!(error = %e, "cannot store alerts; retrying the batch");
            return Err(e);
        }
        self.pending.clear();
        Ok(true)
    }
}

async fn apply(store: &SqlStore, batch: &[Delivery]) -> meterstack_core::store::Result<()> {
    for d in batch {
        let alert: Alert = match serde_json::from_slice(&d.record.value) {
            Ok(a) => a,
            Err(e) => {
                metrics::counter!(m::ALERTS_INVALID).increment(1);
                warn!(partition = d.partition, offset = d.offset, error = %e, "not an alert event; skipped");
                continue;
            }
        };
        match store.record_alert(&alert).await {
            Ok(Some((_, transition))) => {
                metrics::counter!(m::ALERTS_TRANSITIONS, "transition" => transition.as_str())
                    .increment(1);
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
