//! One shape for the parts of every role: a [`Component`] is built from its typed config and
//! one [`Context`] — the backends chosen once in configuration — and runs until the stop
//! signal. The binary maps roles to components (`src/run.rs`) and nothing else.

use std::sync::Arc;

use async_trait::async_trait;
use object_store::ObjectStore;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, TopicNames};
use crate::health::Health;
use crate::store::SqlStore;

/// What every component is built with.
#[derive(Clone)]
pub struct Context {
    /// The bus; `None` in a process that must not hold it (an api-only process on the
    /// embedded bus, whose log another process has open).
    pub bus: Option<Arc<dyn Bus>>,
    /// The bus's topic names.
    pub topics: TopicNames,
    /// The lake's object store (local disk or S3); also where state such as checkpoints lives.
    pub objects: Arc<dyn ObjectStore>,
    /// The SQL store.
    pub store: SqlStore,
    /// The process's health flags.
    pub health: Arc<Health>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("bus", &self.bus)
            .field("topics", &self.topics)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// A component asked for the bus in a process that has none.
#[derive(Debug, thiserror::Error)]
#[error("{0} needs the bus, and this process has none")]
pub struct NoBus(pub &'static str);

impl Context {
    /// The bus, for `component`.
    pub fn bus(&self, component: &'static str) -> Result<&Arc<dyn Bus>, NoBus> {
        self.bus.as_ref().ok_or(NoBus(component))
    }
}

/// Any component's error, as the binary reports it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running part of a role.
#[async_trait]
pub trait Component: Send {
    /// Its name in logs.
    fn name(&self) -> &'static str;

    /// Runs until `stop` is cancelled; a component holding acknowledged data drains it first.
    /// Returning earlier is a failure.
    async fn run(self: Box<Self>, stop: CancellationToken) -> Result<(), BoxError>;
}
