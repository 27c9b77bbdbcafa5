//! `meterstack bench`: measurements recorded in docs/BENCHMARKS.md. Run them on a release
//! build (`cargo build --release`), never as tests.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use meterstack_core::bus::Record;
use serde_json::json;

use crate::config::Config;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum BenchCommand {
    /// Produce and consume throughput of the configured bus backend (`--bus`, `--kafka-brokers`):
    /// appends `--records` records of `--bytes` bytes in batches of `--batch` (as the bridge
    /// does), then consumes them with a new group, committing after every poll (as the sink
    /// does). Uses a fresh topic; the embedded backend uses `--data-dir`.
    Bus {
        /// Records to produce and consume
        #[arg(long, default_value_t = 200_000)]
        records: usize,
        /// Payload bytes per record
        #[arg(long, default_value_t = 150)]
        bytes: usize,
        /// Records per append (and per poll)
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Distinct keys (meters)
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
    },
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(command: BenchCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        BenchCommand::Bus {
            records,
            bytes,
            batch,
            keys,
        } => {
            // A fresh topic, configured so that the Kafka backend creates it.
            let topic = format!("bench.{}", Utc::now().timestamp_micros());
            let mut bus_config = config.bus.clone();
            bus_config.topics.readings_raw.clone_from(&topic);
            let bus = bus_config.build(&config.data_dir).await?;
            let payload = Bytes::from(vec![b'x'; bytes]);
            let started = Instant::now();
            let mut i = 0usize;
            while i < records {
                let n = batch.min(records - i);
                let chunk = (i..i + n)
                    .map(|j| Record {
                        key: format!("m-{}", j % keys.max(1)),
                        value: payload.clone(),
                        timestamp: Utc::now(),
                        headers: vec![("source_topic".into(), "meters/m/readings".into())],
                    })
                    .collect();
                bus.append(&topic, chunk).await?;
                i += n;
            }
            bus.flush().await?;
            let produce = started.elapsed();

            let started = Instant::now();
            let mut sub = bus.subscribe(&topic, "bench").await?;
            let mut got = 0usize;
            let deadline = Instant::now() + Duration::from_secs(600);
            while got < records && Instant::now() < deadline {
                let polled = sub.poll(batch, Duration::from_secs(5)).await?;
                got += polled.len();
                sub.commit().await?;
            }
            let consume = started.elapsed();
            anyhow::ensure!(got >= records, "consumed {got} of {records} records");
            let rate = |d: Duration| records as f64 / d.as_secs_f64();
            println!(
                "{}",
                json!({
                    "backend": format!("{:?}", config.bus.backend).to_lowercase(),
                    "records": records, "bytes": bytes, "batch": batch, "keys": keys,
                    "fsync": format!("{:?}", config.bus.embedded.fsync).to_lowercase(),
                    "produce_s": produce.as_secs_f64(), "produce_per_s": rate(produce).round(),
                    "consume_s": consume.as_secs_f64(), "consume_per_s": rate(consume).round(),
                })
            );
            Ok(())
        }
    }
}
