//! The one consumer driver: poll → handle → make the output durable → commit, with one retry
//! policy ([`Backoff`]: exponential with jitter, reset after a success, the stop signal
//! honoured at every wait, every failure counted). Every consumer of the bus runs on it: the
//! raw sink, the pipeline, the alert recorder, the broker's commands, the live feed's
//! followers.
//!
//! The driver commits only after the handler says the output of every record handed to it is
//! durable, and only records it handed to the handler: delivery is at-least-once end to end.
//! A failing output is retried in place (the consumer stops polling, so nothing piles up in
//! memory while a store is down).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Delivery, Subscription};
use crate::backoff::Backoff;
use crate::metrics::{BUS_ERRORS, CONSUMER_OUTPUT_ERRORS};

/// What a consumer does with its records.
pub trait Handler: Send {
    /// Why output could not be made durable.
    type Error: std::fmt::Display + Send;

    /// Takes one polled batch, in memory (decode, route, buffer). The batch is empty when
    /// nothing arrived within the poll's wait, so time-driven work can run then.
    fn handle(&mut self, batch: Vec<Delivery>);

    /// Writes the output that is due — all of it when `last` (the consumer is about to end) —
    /// and says whether the output of every record handled so far is durable, so that the
    /// driver may commit. On an error the driver waits its backoff and calls `flush` again:
    /// the handler keeps its pending output and writes it again, identically.
    fn flush(&mut self, last: bool) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// How long the next poll may wait for a record, if the handler has a deadline sooner than
    /// the consumer's wait (a flush interval).
    fn wait(&self) -> Option<Duration> {
        None
    }
}

/// How a consumer polls, retries and ends.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The consumer's name in logs and metrics: its group, or the topic of a tail.
    pub name: String,
    /// At most this many records per poll.
    pub batch: usize,
    /// How long a poll waits for a first record.
    pub wait: Duration,
    /// On the stop signal, keep consuming until caught up, write everything and commit
    /// (`true`), or end at once and leave the uncommitted records to be delivered again.
    pub drain: bool,
    /// The first retry delay.
    pub retry_initial: Duration,
    /// The longest retry delay.
    pub retry_max: Duration,
}

impl ConsumerOptions {
    /// `name`, 1000 records per poll waiting up to 1 s, no draining, retries from 100 ms to 10 s.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            batch: 1000,
            wait: Duration::from_secs(1),
            drain: false,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
        }
    }
}

/// How long a draining consumer's poll waits before it counts as caught up.
const DRAIN_WAIT: Duration = Duration::from_millis(50);

/// Runs `handler` on `subscription` until `stop` (then drains if the options say so).
pub async fn consume<H: Handler>(
    subscription: &mut dyn Subscription,
    handler: &mut H,
    options: &ConsumerOptions,
    stop: &CancellationToken,
) {
    let mut retry = Retry {
        backoff: Backoff::new(options.retry_initial, options.retry_max),
        drain: options.drain,
        name: &options.name,
    };
    let mut uncommitted = false;
    loop {
        let draining = stop.is_cancelled();
        if draining && !options.drain {
            return;
        }
        let wait = if draining {
            DRAIN_WAIT
        } else {
            handler.wait().map_or(options.wait, |w| w.min(options.wait))
        };
        let polled = if draining {
            subscription.poll(options.batch, wait).await
        } else {
            tokio::select! {
                () = stop.cancelled() => continue,
                r = subscription.poll(options.batch, wait) => r,
            }
        };
        let batch = match polled {
            Ok(batch) => batch,
            Err(e) => {
                if !retry.failed(Op::Poll, e.to_string(), stop).await {
                    return;
                }
                continue;
            }
        };
        let last = draining && batch.is_empty();
        uncommitted |= !batch.is_empty();
        handler.handle(batch);
        let durable = loop {
            match handler.flush(last).await {
                Ok(durable) => break durable,
                Err(e) => {
                    if !retry.failed(Op::Output, e.to_string(), stop).await {
                        return;
                    }
                }
            }
        };
        if durable && uncommitted {
            while let Err(e) = subscription.commit().await {
                if !retry.failed(Op::Commit, e.to_string(), stop).await {
                    return;
                }
            }
            uncommitted = false;
        }
        retry.backoff.reset();
        if last {
            info!(consumer = %options.name, "consumer drained");
            return;
        }
    }
}

/// What a consumer retries.
#[derive(Debug, Clone, Copy)]
enum Op {
    Poll,
    Output,
    Commit,
}

/// The retry policy of one consumer.
struct Retry<'a> {
    backoff: Backoff,
    drain: bool,
    name: &'a str,
}

impl Retry<'_> {
    /// Counts and logs a failure of `op`, then waits before the retry. Returns `false` when the
    /// consumer must end now: the stop signal came and it does not drain. A draining consumer
    /// keeps retrying until the process's drain deadline ends it.
    async fn failed(&mut self, op: Op, error: String, stop: &CancellationToken) -> bool {
        let consumer = self.name.to_owned();
        let (metric, op) = match op {
            Op::Poll => (
                metrics::counter!(BUS_ERRORS, "op" => "poll", "consumer" => consumer),
                "poll",
            ),
            Op::Commit => (
                metrics::counter!(BUS_ERRORS, "op" => "commit", "consumer" => consumer),
                "commit",
            ),
            Op::Output => (
                metrics::counter!(CONSUMER_OUTPUT_ERRORS, "consumer" => consumer),
                "output",
            ),
        };
        metric.increment(1);
        warn!(consumer = %self.name, op, %error, retry_in_ms = self.backoff.next_delay().as_millis() as u64, "consumer: retrying");
        if stop.is_cancelled() {
            if self.drain {
                self.backoff.wait(&CancellationToken::new()).await;
            }
            return self.drain;
        }
        self.backoff.wait(stop).await || self.drain
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use bytes::Bytes;
    use chrono::Utc;

    use super::*;
    use crate::bus::{Record, Result};

    /// A scripted subscription: batches to return, failures to inject, commits seen.
    #[derive(Debug, Default)]
    struct Script {
        polls: VecDeque<Result<Vec<Delivery>>>,
        commit_failures: usize,
        /// Offsets handed out since the last commit, and the commits made (each the offsets
        /// it covered).
        handed: Vec<u64>,
        commits: Vec<Vec<u64>>,
        /// When each poll was made.
        polled_at: Vec<tokio::time::Instant>,
    }

    #[derive(Debug, Clone, Default)]
    struct Scripted(Arc<Mutex<Script>>);

    #[async_trait]
    impl Subscription for Scripted {
        async fn poll(&mut self, _max: usize, wait: Duration) -> Result<Vec<Delivery>> {
            let next = {
                let mut s = self.0.lock().expect("lock");
                s.polled_at.push(tokio::time::Instant::now());
                s.polls.pop_front()
            };
            match next {
                Some(Ok(batch)) => {
                    let mut s = self.0.lock().expect("lock");
                    s.handed.extend(batch.iter().map(|d| d.offset));
                    Ok(batch)
                }
                Some(Err(e)) => Err(e),
                None => {
                    tokio::time::sleep(wait).await;
                    Ok(Vec::new())
                }
            }
        }

        async fn commit(&mut self) -> Result<()> {
            let mut s = self.0.lock().expect("lock");
            if s.commit_failures > 0 {
                s.commit_failures -= 1;
                return Err(crate::bus::Error::Storage("commit refused".into()));
            }
            let handed = std::mem::take(&mut s.handed);
            s.commits.push(handed);
            Ok(())
        }
    }

    fn batch(offsets: std::ops::Range<u64>) -> Vec<Delivery> {
        offsets
            .map(|offset| Delivery {
                partition: 0,
                offset,
                record: Record {
                    key: "m".into(),
                    value: Bytes::from(offset.to_string()),
                    timestamp: Utc::now(),
                    headers: Vec::new(),
                },
            })
            .collect()
    }

    /// Keeps what it was handed; its output fails `failures` times first.
    #[derive(Default)]
    struct Keeper {
        pending: Vec<u64>,
        written: Vec<u64>,
        failures: usize,
        flushes: usize,
    }

    impl Handler for Keeper {
        type Error = String;

        fn handle(&mut self, batch: Vec<Delivery>) {
            self.pending.extend(batch.iter().map(|d| d.offset));
        }

        async fn flush(&mut self, _last: bool) -> Result<bool, String> {
            self.flushes += 1;
            if self.failures > 0 {
                self.failures -= 1;
                return Err("store down".into());
            }
            self.written.append(&mut self.pending);
            Ok(true)
        }
    }

    fn options(drain: bool) -> ConsumerOptions {
        ConsumerOptions {
            wait: Duration::from_millis(100),
            drain,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(8),
            ..ConsumerOptions::new("test")
        }
    }

    #[tokio::test(start_paused = true)]
    async fn output_failures_are_retried_in_place_and_commits_follow_durable_output() {
        let script = Scripted::default();
        {
            let mut s = script.0.lock().expect("lock");
            s.polls.push_back(Ok(batch(0..3)));
            s.polls
                .push_back(Err(crate::bus::Error::Storage("reset".into())));
            s.polls.push_back(Ok(batch(3..5)));
            s.commit_failures = 1;
        }
        let mut handler = Keeper {
            failures: 3,
            ..Keeper::default()
        };
        let stop = CancellationToken::new();
        let mut sub = script.clone();
        let task = {
            let stop = stop.clone();
            async move {
                consume(&mut sub, &mut handler, &options(true), &stop).await;
                handler
            }
        };
        let (handler, ()) = tokio::join!(task, async {
            // Failures: 3 outputs (1 + 2 + 4 s at most), a poll after the reset (1 s at most),
            // a commit (1 s at most).
            tokio::time::sleep(Duration::from_secs(30)).await;
            stop.cancel();
        });
        assert_eq!(handler.written, [0, 1, 2, 3, 4]);
        let s = script.0.lock().expect("lock");
        let committed: Vec<u64> = s.commits.iter().flatten().copied().collect();
        assert_eq!(committed, [0, 1, 2, 3, 4], "each record committed once");
        assert_eq!(
            s.commits[0],
            [0, 1, 2],
            "the first commit waited for its output"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_backoff_resets_after_a_success() {
        // Two failures, a success, then one more failure: the retry after it waits the initial
        // delay again (≤ 1 s), not the doubled one (2 to 4 s).
        let script = Scripted::default();
        {
            let mut s = script.0.lock().expect("lock");
            for _ in 0..2 {
                s.polls
                    .push_back(Err(crate::bus::Error::Storage("x".into())));
            }
            s.polls.push_back(Ok(batch(0..1)));
            s.polls
                .push_back(Err(crate::bus::Error::Storage("x".into())));
            s.polls.push_back(Ok(batch(1..2)));
        }
        let mut handler = Keeper::default();
        let stop = CancellationToken::new();
        let mut sub = script.clone();
        let waiter = {
            let script = script.clone();
            let stop = stop.clone();
            async move {
                while !script.0.lock().expect("lock").polls.is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                stop.cancel();
            }
        };
        let opts = options(false);
        tokio::join!(consume(&mut sub, &mut handler, &opts, &stop), waiter);
        assert_eq!(handler.written, [0, 1]);
        let at = &script.0.lock().expect("lock").polled_at;
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps[1] >= Duration::from_secs(1),
            "the second retry doubled: {gaps:?}"
        );
        assert!(
            gaps[3] <= Duration::from_secs(1),
            "the retry after a success starts over: {gaps:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_a_retry_wait_at_once_and_commits_nothing_unwritten() {
        let script = Scripted::default();
        script
            .0
            .lock()
            .expect("lock")
            .polls
            .push_back(Ok(batch(0..3)));
        let mut handler = Keeper {
            failures: usize::MAX,
            ..Keeper::default()
        };
        let stop = CancellationToken::new();
        let mut sub = script.clone();
        let start = tokio::time::Instant::now();
        let opts = ConsumerOptions {
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(60),
            ..options(false)
        };
        tokio::join!(consume(&mut sub, &mut handler, &opts, &stop), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stop.cancel();
        });
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(handler.written.is_empty());
        assert!(script.0.lock().expect("lock").commits.is_empty());
    }
}
