//! The pipeline on the bus: consume `readings.raw`, emit to `readings.clean`,
//! `readings.rejected`, `aggregates`, `alerts` and `meter.commands`, checkpoint the state.
//!
//! Order of durability, per loop: outputs are appended; every `checkpoint_interval` the state
//! (with, per partition, the offset of the first record it does not reflect) is written to the
//! object store, and only then are the bus offsets committed. After a crash the pipeline loads
//! the checkpoint and skips redelivered records it already reflects, so its state neither
//! loses nor double-counts a reading. Outputs appended after the last checkpoint are emitted
//! again, identically (the processor is deterministic): at-least-once, with stable keys for
//! consumers to deduplicate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use meterstack_core::backoff::Backoff;
use meterstack_core::bus::{Bus, Record, Subscription, TopicNames};
use meterstack_core::metrics as m;
use meterstack_core::store::SqlStore;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::PipelineConfig;
use crate::output::{Aggregate, Outputs};
use crate::processor::{Processor, State};
use crate::registry::Registry;

/// Errors of the pipeline runner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("pipeline configuration: {0}")]
    Config(String),
    /// The bus failed.
    #[error(transparent)]
    Bus(#[from] meterstack_core::bus::Error),
    /// The checkpoint could not be read or written.
    #[error("pipeline checkpoint {path}: {detail}")]
    Checkpoint {
        /// Where.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// The registry could not be loaded.
    #[error("meter registry: {0}")]
    Registry(#[from] meterstack_core::store::StoreError),
}

/// Where the checkpoint lives in the state store.
pub const CHECKPOINT_PATH: &str = "state/pipeline/checkpoint.json";

/// What the pipeline needs from the rest of the system.
#[derive(Debug, Clone)]
pub struct PipelineDeps {
    /// The bus.
    pub bus: Arc<dyn Bus>,
    /// Topic names.
    pub topics: TopicNames,
    /// Where checkpoints go (the lake's object store: local disk or S3).
    pub state_store: Arc<dyn ObjectStore>,
    /// The meter registry.
    pub store: SqlStore,
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    processor: Processor,
    subscription: Box<dyn Subscription>,
    deps: PipelineDeps,
}

/// Reads the checkpoint in `store`; `None` if there is none.
pub async fn load_checkpoint(store: &Arc<dyn ObjectStore>) -> Result<Option<State>, Error> {
    let path = Path::from(CHECKPOINT_PATH);
    let err = |detail: String| Error::Checkpoint {
        path: CHECKPOINT_PATH.into(),
        detail,
    };
    let bytes = match store.get(&path).await {
        Ok(r) => r.bytes().await.map_err(|e| err(e.to_string()))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| err(format!("damaged ({e}); refusing to start from scratch, which would count readings twice — move it aside to reset the pipeline")))
}

/// Writes `state` as the checkpoint (atomically: the object appears whole or not at all).
pub async fn save_checkpoint(store: &Arc<dyn ObjectStore>, state: &State) -> Result<(), Error> {
    let err = |detail: String| Error::Checkpoint {
        path: CHECKPOINT_PATH.into(),
        detail,
    };
    let bytes = serde_json::to_vec(state).map_err(|e| err(e.to_string()))?;
    store
        .put(&Path::from(CHECKPOINT_PATH), Bytes::from(bytes).into())
        .await
        .map_err(|e| err(e.to_string()))?;
    metrics::counter!(m::PIPELINE_CHECKPOINTS).increment(1);
    Ok(())
}

impl PipelineConfig {
    /// Loads the registry and the checkpoint and joins the consumer group.
    pub async fn build(&self, deps: PipelineDeps) -> Result<Pipeline, Error> {
        self.validate().map_err(Error::Config)?;
        let registry = Arc::new(Registry::load(&deps.store).await?);
        let state = load_checkpoint(&deps.state_store).await?;
        match &state {
            Some(s) => {
                info!(meters = s.meters(), clock = %s.clock(), offsets = ?s.offsets, "pipeline resumes from its checkpoint")
            }
            None => info!("pipeline starts without a checkpoint"),
        }
        let subscription = deps
            .bus
            .subscribe(&deps.topics.readings_raw, &self.group)
            .await?;
        Ok(Pipeline {
            processor: Processor::new(self.clone(), registry, state.unwrap_or_default()),
            config: self.clone(),
            subscription,
            deps,
        })
    }
}

fn records<T: Serialize>(items: &[T], key: impl Fn(&T) -> String) -> Vec<Record> {
    let now = Utc::now();
    items
        .iter()
        .filter_map(|item| {
            Some(Record {
                key: key(item),
                value: Bytes::from(serde_json::to_vec(item).ok()?),
                timestamp: now,
                headers: Vec::new(),
            })
        })
        .collect()
}

impl Pipeline {
    /// Runs until `shutdown`, then drains what is on the bus, checkpoints and commits.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), Error> {
        let mut last_checkpoint = Instant::now();
        let mut last_record = Instant::now();
        let mut last_registry = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let draining = shutdown.is_cancelled();
            let wait = Duration::from_millis(if draining { 50 } else { 250 });
            let deliveries = match self.subscription.poll(self.config.poll_max, wait).await {
                Ok(d) => d,
                Err(e) => {
                    metrics::counter!(m::PIPELINE_ERRORS, "op" => "poll").increment(1);
                    warn!(error = %e, "pipeline: bus poll failed; retrying");
                    backoff.wait().await;
                    continue;
                }
            };
            let caught_up = deliveries.is_empty();
            let mut out = Outputs::default();
            for d in &deliveries {
                let next = self
                    .processor
                    .state()
                    .offsets
                    .get(&d.partition)
                    .copied()
                    .unwrap_or(0);
                if d.offset < next {
                    continue;
                }
                self.processor.record(&d.record, &mut out);
                self.processor
                    .offsets_mut()
                    .insert(d.partition, d.offset + 1);
            }
            if caught_up {
                if !self.config.idle_clock.is_zero()
                    && last_record.elapsed() >= self.config.idle_clock
                {
                    self.processor
                        .advance(Utc::now().timestamp_micros(), &mut out);
                }
            } else {
                last_record = Instant::now();
            }
            self.processor.flush(&mut out);
            publish(&self.deps, out).await?;
            if last_checkpoint.elapsed() >= self.config.checkpoint_interval
                || (draining && caught_up)
            {
                match save_checkpoint(&self.deps.state_store, self.processor.state()).await {
                    Ok(()) => {
                        if let Err(e) = self.subscription.commit().await {
                            metrics::counter!(m::PIPELINE_ERRORS, "op" => "commit").increment(1);
                            warn!(error = %e, "pipeline: commit failed; the checkpoint covers it");
                        }
                        last_checkpoint = Instant::now();
                    }
                    Err(e) => {
                        metrics::counter!(m::PIPELINE_ERRORS, "op" => "checkpoint").increment(1);
                        warn!(error = %e, "pipeline: checkpoint failed; offsets stay uncommitted");
                        if draining && caught_up {
                            return Err(e);
                        }
                    }
                }
            }
            if draining && caught_up {
                info!("pipeline drained and checkpointed");
                return Ok(());
            }
            if last_registry.elapsed() >= Duration::from_secs(60) {
                last_registry = Instant::now();
                match Registry::load(&self.deps.store).await {
                    Ok(r) => self.processor.set_registry(Arc::new(r)),
                    Err(e) => {
                        warn!(error = %e, "pipeline: registry refresh failed; keeping the old one")
                    }
                }
            }
        }
    }
}

/// Appends `out` to the output topics, retrying a failing bus a few times.
async fn publish(deps: &PipelineDeps, out: Outputs) -> Result<(), Error> {
    if out.is_empty() {
        return Ok(());
    }
    let t = &deps.topics;
    let batches = [
        (
            &t.readings_clean,
            records(&out.clean, |r| r.meter_id.clone()),
        ),
        (
            &t.readings_rejected,
            records(&out.rejected, |r| r.meter_id.clone().unwrap_or_default()),
        ),
        (
            &t.aggregates,
            records(&out.aggregates, |a| match a {
                Aggregate::MeterWindow(w) => w.meter_id.clone(),
                Aggregate::FeederCompleteness(f) => f.feeder.clone(),
            }),
        ),
        (
            &t.alerts,
            records(&out.alerts, |a| {
                a.meter_id
                    .clone()
                    .or_else(|| a.feeder.clone())
                    .unwrap_or_default()
            }),
        ),
        (&t.meter_commands, {
            let mut recs = records(&out.commands, |(id, _)| id.clone());
            for (rec, (_, cmd)) in recs.iter_mut().zip(&out.commands) {
                rec.value = Bytes::from(serde_json::to_vec(cmd).unwrap_or_default());
            }
            recs
        }),
    ];
    for (topic, recs) in batches {
        if recs.is_empty() {
            continue;
        }
        let mut attempt = 0;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match deps.bus.append(topic, recs.clone()).await {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    metrics::counter!(m::PIPELINE_ERRORS, "op" => "append").increment(1);
                    warn!(error = %e, topic, attempt, "pipeline: append failed; retrying");
                    backoff.wait().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
