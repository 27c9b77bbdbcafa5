//! Exponential backoff for retrying work that must not be dropped (a broker-acknowledged
//! message, a lake file whose records are not yet committed).

use std::time::Duration;

/// Delays that double from `initial` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `initial`, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { next: initial, max }
    }

    /// The delay the next [`wait`](Backoff::wait) sleeps.
    pub fn next_delay(&self) -> Duration {
        self.next
    }

    /// Sleeps the current delay, then doubles it (up to the maximum).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_up_to_the_maximum() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(b.next_delay().as_millis());
            b.wait().await;
        }
        assert_eq!(seen, [100, 200, 300, 300]);
    }
}
