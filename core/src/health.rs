//! Process readiness, shared between the roles of one process and the `/readyz` endpoint.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Which components of this process are ready, and whether it is shutting down.
///
/// Each role registers itself as not ready when it is built and marks itself ready once it
/// serves; `/readyz` answers 200 only when every registered component is ready and the process
/// is not draining.
#[derive(Debug, Default)]
pub struct Health {
    components: Mutex<BTreeMap<String, bool>>,
    draining: AtomicBool,
}

impl Health {
    /// Registers `component` as not yet ready.
    pub fn register(&self, component: &str) {
        self.lock().insert(component.to_owned(), false);
    }

    /// Marks `component` ready (or not).
    pub fn set_ready(&self, component: &str, ready: bool) {
        self.lock().insert(component.to_owned(), ready);
    }

    /// Marks the whole process as draining: it stops reporting ready.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// True when at least one component is registered, all are ready, and the process is not draining.
    pub fn is_ready(&self) -> bool {
        let components = self.lock();
        !self.draining.load(Ordering::SeqCst)
            && !components.is_empty()
            && components.values().all(|ready| *ready)
    }

    /// Each component with its readiness, for the `/readyz` body.
    pub fn components(&self) -> BTreeMap<String, bool> {
        self.lock().clone()
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
        // A poisoned lock only means another thread panicked while holding it; the map is
        // still a valid map, so keep serving.
        self.components
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_all_components_ready_and_not_draining() {
        let health = Health::default();
        assert!(!health.is_ready(), "nothing registered is not ready");
        health.register("broker");
        health.register("sink");
        health.set_ready("broker", true);
        assert!(!health.is_ready());
        health.set_ready("sink", true);
        assert!(health.is_ready());
        health.set_draining();
        assert!(!health.is_ready());
    }
}
