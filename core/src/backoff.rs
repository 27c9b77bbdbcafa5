//! The one retry policy of meterstack, for work that must not be dropped (a broker-acknowledged
//! message, a lake file whose records are not yet committed, an alert event, a bus poll):
//! exponential backoff with jitter, reset after a success, and the stop signal honoured at
//! every wait.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Delays that double from `initial` up to `max`; each wait sleeps a random time between half
/// the delay and the whole of it, so that many retriers (every consumer of a broker that came
/// back) do not retry in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `initial`, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            next: initial,
            max: max.max(initial),
        }
    }

    /// The upper bound of the next [`wait`](Backoff::wait).
    pub fn next_delay(&self) -> Duration {
        self.next
    }

    /// Back to the initial delay: call after a success, so that the next failure, however much
    /// later, waits the short delay again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// Sleeps the current delay (jittered), then doubles it up to the maximum. Returns `false`
    /// as soon as `stop` is cancelled (at once if it already is), `true` after a full wait.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = self.jittered();
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            biased;
            () = stop.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    fn jittered(&self) -> Duration {
        let nanos = u64::try_from(self.next.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_up_to_the_maximum_with_jitter_and_resets() {
        let stop = CancellationToken::new();
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        let mut bounds = Vec::new();
        for _ in 0..4 {
            let bound = b.next_delay();
            bounds.push(bound.as_millis());
            let start = tokio::time::Instant::now();
            assert!(b.wait(&stop).await);
            let slept = start.elapsed();
            assert!(
                slept >= bound / 2 && slept <= bound,
                "{slept:?} of {bound:?}"
            );
        }
        assert_eq!(bounds, [100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_at_once() {
        let stop = CancellationToken::new();
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let waiting = tokio::spawn({
            let stop = stop.clone();
            async move {
                let start = tokio::time::Instant::now();
                (b.wait(&stop).await, start.elapsed())
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        let (completed, waited) = waiting.await.expect("task");
        assert!(!completed);
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        // Already stopped: no wait at all.
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let start = tokio::time::Instant::now();
        assert!(!b.wait(&stop).await);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
