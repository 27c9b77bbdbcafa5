//! Connectivity: which meters are online and when each was last heard from.
//!
//! The gate reports connects, disconnects and traffic without waiting; one writer task
//! records them in the registry (`meter_connectivity`) and appends connect and disconnect
//! events to the bus topic `meter.events` (JSON, keyed by meter id) for the stages that infer
//! outages. Traffic only moves `last_seen`, flushed every `flush_every`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use meterstack_core::bus::{Bus, Record};
use meterstack_core::metrics::CONNECTIVITY_ERRORS;
use meterstack_core::reading::MeterId;
use meterstack_core::store::SqlStore;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::warn;

/// A connect or disconnect, as it goes onto the bus.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectivityEvent {
    /// `connected` or `disconnected`.
    pub event: &'static str,
    /// The meter.
    pub meter_id: MeterId,
    /// The broker's id of the connection.
    pub session_id: String,
    /// When.
    pub ts: DateTime<Utc>,
    /// How the meter authenticated (connects only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<&'static str>,
    /// Client address (connects only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    /// Why the connection ended (disconnects only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// The gate's handle: cheap, never blocks.
#[derive(Debug, Clone)]
pub(crate) struct Connectivity {
    events: mpsc::UnboundedSender<ConnectivityEvent>,
    seen: Arc<Mutex<HashMap<MeterId, DateTime<Utc>>>>,
}

impl Connectivity {
    pub(crate) fn connected(
        &self,
        meter_id: &MeterId,
        session_id: &str,
        auth_method: &'static str,
        remote_addr: String,
    ) {
        let _ = self.events.send(ConnectivityEvent {
            event: "connected",
            meter_id: meter_id.clone(),
            session_id: session_id.to_owned(),
            ts: Utc::now(),
            auth_method: Some(auth_method),
            remote_addr: Some(remote_addr),
            reason: None,
        });
    }

    pub(crate) fn disconnected(&self, meter_id: &MeterId, session_id: &str, reason: &'static str) {
        let _ = self.events.send(ConnectivityEvent {
            event: "disconnected",
            meter_id: meter_id.clone(),
            session_id: session_id.to_owned(),
            ts: Utc::now(),
            auth_method: None,
            remote_addr: None,
            reason: Some(reason),
        });
    }

    pub(crate) fn seen(&self, meter_id: &MeterId) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(meter_id.clone(), Utc::now());
        }
    }
}

/// The writer: records events until every [`Connectivity`] handle is dropped, then flushes
/// and returns.
#[derive(Debug)]
pub(crate) struct Writer {
    events: mpsc::UnboundedReceiver<ConnectivityEvent>,
    seen: Arc<Mutex<HashMap<MeterId, DateTime<Utc>>>>,
    store: SqlStore,
    bus: Arc<dyn Bus>,
    topic: String,
    flush_every: Duration,
}

pub(crate) fn channel(
    store: SqlStore,
    bus: Arc<dyn Bus>,
    topic: &str,
    flush_every: Duration,
) -> (Connectivity, Writer) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(Mutex::new(HashMap::new()));
    (
        Connectivity {
            events: tx,
            seen: seen.clone(),
        },
        Writer {
            events: rx,
            seen,
            store,
            bus,
            topic: topic.to_owned(),
            flush_every,
        },
    )
}

impl Writer {
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(self.flush_every);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                n = self.events.recv_many(&mut batch, 1000) => {
                    if n == 0 {
                        break;
                    }
                    self.record(std::mem::take(&mut batch)).await;
                }
                _ = tick.tick() => self.flush_seen().await,
            }
        }
        self.flush_seen().await;
    }

    async fn record(&self, events: Vec<ConnectivityEvent>) {
        for e in &events {
            let result = match e.event {
                "connected" => {
                    self.store
                        .record_connect(
                            &e.meter_id,
                            &e.session_id,
                            e.auth_method.unwrap_or("none"),
                            e.remote_addr.as_deref().unwrap_or(""),
                            e.ts,
                        )
                        .await
                }
                _ => {
                    self.store
                        .record_disconnect(
                            &e.meter_id,
                            &e.session_id,
                            e.reason.unwrap_or("unknown"),
                            e.ts,
                        )
                        .await
                }
            };
            if let Err(err) = result {
                metrics::counter!(CONNECTIVITY_ERRORS, "sink" => "store").increment(1);
                warn!(error = %err, meter = %e.meter_id, "cannot record connectivity");
            }
        }
        let records: Vec<Record> = events
            .iter()
            .filter_map(|e| {
                Some(Record {
                    key: e.meter_id.to_string(),
                    value: serde_json::to_vec(e).ok()?.into(),
                    timestamp: e.ts,
                    headers: Vec::new(),
                })
            })
            .collect();
        if let Err(err) = self.bus.append(&self.topic, records).await {
            metrics::counter!(CONNECTIVITY_ERRORS, "sink" => "bus").increment(1);
            warn!(error = %err, "cannot append connectivity events to the bus");
        }
    }

    async fn flush_seen(&self) {
        let seen: Vec<(MeterId, DateTime<Utc>)> = match self.seen.lock() {
            Ok(mut seen) => seen.drain().collect(),
            Err(_) => return,
        };
        if seen.is_empty() {
            return;
        }
        if let Err(err) = self.store.record_seen(&seen).await {
            metrics::counter!(CONNECTIVITY_ERRORS, "sink" => "store").increment(1);
            warn!(error = %err, "cannot record last-seen times");
        }
    }
}
