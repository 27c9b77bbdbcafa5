//! The pipeline on the bus: consume `readings.raw`, emit to `readings.clean`,
//! `readings.rejected`, `aggregates`, `alerts` and `meter.commands`, checkpoint the state.
//!
//! It runs on the bus's one consumer driver ([`consume`]). Order of durability, per batch:
//! outputs are appended (retried in place until the bus takes them); every `checkpoint_interval` the state
//! (with, per partition, the offset of the first record it does not reflect) is written to the
//! object store, and only then are the bus offsets committed. After a crash the pipeline loads
//! the checkpoint and skips redelivered records it already reflects, so its state neither
//! loses nor double-counts a reading. Outputs appended after the last checkpoint are emitted
//! again, identically (the processor is deterministic): at-least-once, with stable keys for
//! consumers to deduplicate.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use meterstack_core::bus::consumer::{ConsumerOptions, Handler, consume};
use meterstack_core::bus::{Bus, Delivery, Record, Subscription, TopicNames};
use meterstack_core::component::{BoxError, Component, Context};
use meterstack_core::metrics as m;
use meterstack_core::store::SqlStore;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::PipelineConfig;
use crate::output::Outputs;
use crate::processor::{Processor, State};
use crate::registry::Registry;
use meterstack_core::records::Aggregate;

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

/// What the pipeline uses of its [`Context`].
#[derive(Debug, Clone)]
struct Deps {
    bus: Arc<dyn Bus>,
    topics: TopicNames,
    /// Where checkpoints go (the lake's object store: local disk or S3).
    state_store: Arc<dyn ObjectStore>,
    /// The meter registry.
    store: SqlStore,
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    config: PipelineConfig,
    processor: Processor,
    subscription: Box<dyn Subscription>,
    deps: Deps,
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
    /// Loads the registry and the checkpoint (in the context's object store) and joins the
    /// consumer group on `readings.raw`.
    pub async fn build(&self, ctx: &Context) -> Result<Pipeline, Error> {
        self.validate().map_err(Error::Config)?;
        let deps = Deps {
            bus: ctx
                .bus("the pipeline")
                .map_err(|e| Error::Config(e.to_string()))?
                .clone(),
            topics: ctx.topics.clone(),
            state_store: ctx.objects.clone(),
            store: ctx.store.clone(),
        };
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
    items
        .iter()
        .filter_map(|item| Record::json(key(item), item))
        .collect()
}

#[async_trait::async_trait]
impl Component for Pipeline {
    fn name(&self) -> &'static str {
        "pipeline"
    }

    async fn run(self: Box<Self>, stop: CancellationToken) -> Result<(), BoxError> {
        Ok((*self).run(stop).await?)
    }
}

impl Pipeline {
    /// Runs until `shutdown`, then drains what is on the bus, checkpoints and commits.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Error> {
        let Pipeline {
            config,
            processor,
            mut subscription,
            deps,
        } = self;
        let options = ConsumerOptions {
            batch: config.poll_max,
            wait: Duration::from_millis(250),
            drain: true,
            retry_initial: Duration::from_millis(200),
            ..ConsumerOptions::new(config.group.clone())
        };
        let mut stage = Stage {
            config,
            processor,
            deps,
            pending: VecDeque::new(),
            last_checkpoint: Instant::now(),
            last_record: Instant::now(),
            last_registry: Instant::now(),
        };
        consume(subscription.as_mut(), &mut stage, &options, &shutdown).await;
        Ok(())
    }
}

/// The pipeline as a consumer: records go through the processor in memory; its outputs are
/// appended, then (every `checkpoint_interval`) the state is checkpointed, and only then may
/// the bus position be committed.
struct Stage {
    config: PipelineConfig,
    processor: Processor,
    deps: Deps,
    /// Output records not yet appended, by topic, in order.
    pending: VecDeque<(String, Vec<Record>)>,
    last_checkpoint: Instant,
    last_record: Instant,
    last_registry: Instant,
}

impl Handler for Stage {
    type Error = Error;

    fn handle(&mut self, batch: Vec<Delivery>) {
        let caught_up = batch.is_empty();
        let mut out = Outputs::default();
        for d in &batch {
            let next = self
                .processor
                .state()
                .offsets
                .get(&d.partition)
                .copied()
                .unwrap_or(0);
            // Already reflected in the checkpoint this state was loaded from.
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
                && self.last_record.elapsed() >= self.config.idle_clock
            {
                self.processor
                    .advance(Utc::now().timestamp_micros(), &mut out);
            }
        } else {
            self.last_record = Instant::now();
        }
        self.processor.flush(&mut out);
        self.pending.extend(output_records(&self.deps.topics, out));
    }

    async fn flush(&mut self, last: bool) -> Result<bool, Error> {
        while let Some((topic, records)) = self.pending.front() {
            if let Err(e) = self.deps.bus.append(topic, records.clone()).await {
                metrics::counter!(m::PIPELINE_ERRORS, "op" => "append").increment(1);
                return Err(e.into());
            }
            self.pending.pop_front();
        }
        if self.last_registry.elapsed() >= Duration::from_secs(60) {
            self.last_registry = Instant::now();
            match Registry::load(&self.deps.store).await {
                Ok(r) => self.processor.set_registry(Arc::new(r)),
                Err(e) => {
                    warn!(error = %e, "pipeline: registry refresh failed; keeping the old one")
                }
            }
        }
        if !last && self.last_checkpoint.elapsed() < self.config.checkpoint_interval {
            return Ok(false);
        }
        if let Err(e) = save_checkpoint(&self.deps.state_store, self.processor.state()).await {
            metrics::counter!(m::PIPELINE_ERRORS, "op" => "checkpoint").increment(1);
            return Err(e);
        }
        self.last_checkpoint = Instant::now();
        if last {
            info!("pipeline drained and checkpointed");
        }
        Ok(true)
    }
}

/// `out` as records, by output topic, in the order they are appended.
fn output_records(t: &TopicNames, out: Outputs) -> Vec<(String, Vec<Record>)> {
    if out.is_empty() {
        return Vec::new();
    }
    let mut commands = records(&out.commands, |(id, _)| id.clone());
    for (rec, (_, cmd)) in commands.iter_mut().zip(&out.commands) {
        rec.value = Bytes::from(serde_json::to_vec(cmd).unwrap_or_default());
    }
    [
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
            records(&out.alerts, |a| a.subject().unwrap_or_default().to_owned()),
        ),
        (&t.meter_commands, commands),
    ]
    .into_iter()
    .filter(|(_, recs)| !recs.is_empty())
    .map(|(topic, recs)| (topic.clone(), recs))
    .collect()
}
