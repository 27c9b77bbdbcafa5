//! `meterstack simulate`: a fleet of simulated meters publishing over MQTT.

use std::time::Duration;

use chrono::Utc;
use meterstack_sim::SimConfig;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Flags of `meterstack simulate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Number of meters
    #[arg(long, default_value_t = 10)]
    meters: usize,
    /// Reading interval of every meter (1s to 60m)
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    interval: Duration,
    /// Simulated seconds per real second; simulated time never runs ahead of the clock
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// MQTT broker HOST:PORT [default: 127.0.0.1 and the configured MQTT port]
    #[arg(long)]
    mqtt: Option<String>,
    /// Start this long before now (e.g. 7d), to backfill history at --speed
    #[arg(long, value_parser = parse_duration)]
    backfill: Option<Duration>,
    /// Stop after this many intervals [default: run until interrupted]
    #[arg(long)]
    intervals: Option<u64>,
    /// Seed of the fleet's randomness
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Meter id prefix
    #[arg(long, default_value = "m-")]
    id_prefix: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    meterstack_core::duration::parse(s).map_err(|e| e.to_string())
}

pub(crate) async fn simulate(args: Args, config: &Config) -> anyhow::Result<()> {
    let start = match args.backfill {
        Some(back) => Some(Utc::now() - chrono::TimeDelta::from_std(back)?),
        None => None,
    };
    let sim = SimConfig {
        meters: args.meters,
        interval: args.interval,
        speed: args.speed,
        mqtt: args
            .mqtt
            .unwrap_or_else(|| format!("127.0.0.1:{}", config.mqtt.listen.port())),
        start,
        intervals: args.intervals,
        id_prefix: args.id_prefix,
        seed: args.seed,
        ..SimConfig::default()
    };
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        crate::run::shutdown_signal().await;
        on_signal.cancel();
    });
    let stats = meterstack_sim::run(sim, shutdown).await?;
    anyhow::ensure!(
        stats.acked == stats.published,
        "{} of {} readings were not acknowledged by the broker",
        stats.published - stats.acked,
        stats.published
    );
    Ok(())
}
