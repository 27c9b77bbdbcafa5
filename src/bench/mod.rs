//! `meterstack bench`: measurements recorded in docs/BENCHMARKS.md. Run them on a release
//! build (`cargo build --release`), never as tests.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use meterstack_core::bus::Record;
use meterstack_core::mqtt::Connect;
use serde_json::json;

use crate::config::Config;

mod billing;
mod forecast;
mod live;
mod server;
mod sql;
mod suite;
mod webhooks;

use server::Server;

/// `meterstack bench`: the suite, or one benchmark.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    suite: suite::SuiteArgs,
}

/// Single benchmarks.
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
    /// The meter-analytics query set alone: registers and backfills `--meters` × `--days`,
    /// runs the ETL (timed), then times the trusted-zone queries against DuckDB.
    Analytics {
        /// Meters (with --days 90, 3,500 give 30M intervals)
        #[arg(long, default_value_t = 3500)]
        meters: usize,
        /// Days of history from 2026-01-01
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Timed runs per query (after one warm-up); figures are medians
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Where to write the results as JSON
        #[arg(long, default_value = "bench-analytics.json")]
        out: std::path::PathBuf,
    },
    /// Publish → webhook latency: `--rate` readings/s from `--meters` simulated meters for
    /// `--seconds`, with `--anomalies` anomalous readings a second for fresh meters, each
    /// timed from its publish to its webhook at a receiver in this process.
    Webhooks {
        /// Background readings per second
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        /// Simulated meters giving them
        #[arg(long, default_value_t = 1000)]
        meters: usize,
        /// Seconds of anomalies (after a 5 s warm-up)
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Anomalous readings per second
        #[arg(long, default_value_t = 10)]
        anomalies: u32,
    },
    /// The live feed: ingestion with `--clients` WebSocket clients connected (one never
    /// reads) against none, then publish → WebSocket latency at `--rate` readings/s from
    /// `--meters` simulated meters, `--probes` timed readings a second for `--seconds`.
    Live {
        /// Background readings per second during the latency run
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        /// Simulated meters
        #[arg(long, default_value_t = 1000)]
        meters: usize,
        /// Seconds of each phase
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Live clients connected
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Timed readings per second
        #[arg(long, default_value_t = 20)]
        probes: u32,
    },
    /// Forecasting: simulates `--meters` × `--days` of hourly consumption, trains the model
    /// on all but the last `--test-days` (timed, peak memory), backtests day-ahead forecasts on
    /// those against both baselines, then times inference for `--inference-meters` meters.
    Forecast(forecast::ForecastArgs),
    /// A bill run: `--meters` meters × one month of 15-minute intervals written to a
    /// temporary trusted zone, billed twice (all new, then all unchanged); times and memory.
    Billing(billing::BillingArgs),
    /// Simultaneous meter connections: starts `meterstack up --dev` on loopback (data in a
    /// temporary directory), opens `--connections` MQTT connections to it and holds them,
    /// and reports the server's resident memory before and after, per connection.
    Connections {
        /// Connections to open and hold
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Connections opened concurrently
        #[arg(long, default_value_t = 200)]
        parallel: usize,
        /// Seconds to hold them before measuring again
        #[arg(long, default_value_t = 10)]
        hold: u64,
    },
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(args: BenchArgs, config: &Config) -> anyhow::Result<()> {
    let Some(command) = args.command else {
        return suite::run(args.suite).await;
    };
    match command {
        BenchCommand::Analytics {
            meters,
            days,
            runs,
            out,
        } => {
            let mut set = sql::analytics_set(meters, days, runs).await?;
            let mut table = Vec::new();
            suite::push_analytics(&mut table, &mut set);
            for line in &table {
                println!("{line}");
            }
            std::fs::write(&out, serde_json::to_string_pretty(&set)?)?;
            println!("results: {}", out.display());
            Ok(())
        }
        BenchCommand::Billing(args) => {
            let r = billing::run(&args, config).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        BenchCommand::Forecast(args) => {
            let gbm = config.ml.gbm.clone();
            let r = tokio::task::spawn_blocking(move || forecast::run(&args, gbm)).await??;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        BenchCommand::Webhooks {
            rate,
            meters,
            seconds,
            anomalies,
        } => {
            let r = webhooks::run(rate, meters, seconds, anomalies).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        BenchCommand::Live {
            rate,
            meters,
            seconds,
            clients,
            probes,
        } => {
            let r = live::run(rate, meters, seconds, clients, probes).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(())
        }
        BenchCommand::Connections {
            connections,
            parallel,
            hold,
        } => {
            let result = connections_bench(connections, parallel, hold).await?;
            println!("{result}");
            Ok(())
        }
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

async fn connections_bench(
    n: usize,
    parallel: usize,
    hold: u64,
) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Each meter costs the server three descriptors (meter socket, the gate's socket to
    // rumqttd, rumqttd's end of it) and this client one.
    let need = (n as u64) * 3 + 1024;
    let soft = server::raise_nofile(need)?;
    anyhow::ensure!(
        soft >= need,
        "{n} connections need {need} open files; the limit is {soft} (raise it: ulimit -n {need})"
    );
    let dir = tempfile::tempdir()?;
    let server = Server::start(
        &dir.path().join("data"),
        &[("METERSTACK__MQTT__MAX_CONNECTIONS", (n + 100).to_string())],
    )
    .await?;
    let mqtt = server.mqtt.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = server.rss()?;

    let started = Instant::now();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = semaphore.clone().acquire_owned().await?;
        let mqtt = mqtt.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut stream = tokio::net::TcpStream::connect(&mqtt).await?;
            stream
                .write_all(&Connect::new(&format!("bench-{i:06}"), true, 600).encode())
                .await?;
            let mut connack = [0u8; 4];
            stream.read_exact(&mut connack).await?;
            anyhow::ensure!(connack == [0x20, 2, 0, 0], "CONNACK {connack:?}");
            Ok::<_, anyhow::Error>(stream)
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut failed = 0usize;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(stream)) => held.push(stream),
            _ => failed += 1,
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(hold)).await;
    let after = server.rss()?;
    // Still held: every connection is open on both ends.
    let open = held.len();
    drop(held);
    server.stop().await;
    anyhow::ensure!(failed == 0, "{failed} of {n} connections failed");
    let per = (after.saturating_sub(before)) as f64 / open.max(1) as f64;
    Ok(json!({
        "connections": open,
        "connect_s": connect_s,
        "connects_per_s": (open as f64 / connect_s).round(),
        "rss_before_mb": before as f64 / 1e6,
        "rss_after_mb": after as f64 / 1e6,
        "rss_per_connection_kb": (per / 1024.0 * 10.0).round() / 10.0,
    }))
}
