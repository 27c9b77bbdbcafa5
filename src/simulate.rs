//! `meterstack simulate` (a fleet of simulated meters publishing over MQTT) and
//! `meterstack backfill` (the same fleet's history written straight to the raw zone).

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use meterstack_sim::{FaultConfig, FaultType, FleetConfig, SimConfig};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The fleet and its faults: flags shared by `simulate` and `backfill`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FleetArgs {
    /// Number of meters
    #[arg(long, default_value_t = 10)]
    meters: usize,
    /// Reading interval of every meter: 1s to 60m, dividing a day
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    interval: Duration,
    /// Seed of the fleet's randomness: the same seed gives the same fleet, readings and faults
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Meter id prefix (ids are the prefix and a zero-padded number)
    #[arg(long, default_value = "m-")]
    id_prefix: String,
    /// Meters per feeder (consecutive meters share one)
    #[arg(long, default_value_t = 40)]
    meters_per_feeder: usize,
    /// Share of commercial meters
    #[arg(long, default_value_t = 0.1)]
    commercial_share: f64,
    /// Share of prosumers (households with solar that export)
    #[arg(long, default_value_t = 0.1)]
    prosumer_share: f64,
    /// Inject faults at their default rates (`default`) or not at all (`none`)
    #[arg(long, default_value = "default", value_parser = ["default", "none"])]
    faults: String,
    /// Multiply every fault rate by this
    #[arg(long, default_value_t = 1.0)]
    fault_scale: f64,
    /// Set one fault's rate, events per meter-day (per feeder-day for feeder_outage), e.g.
    /// `--fault-rate gap=0.1`; repeatable
    #[arg(long = "fault-rate", value_parser = parse_rate)]
    fault_rates: Vec<(FaultType, f64)>,
    /// Write the ground truth of every injected fault here (JSON lines)
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Write the fleet as a registry CSV here (for `meterstack meters import`)
    #[arg(long)]
    fleet_csv: Option<PathBuf>,
}

impl FleetArgs {
    fn fleet(&self) -> FleetConfig {
        FleetConfig {
            meters: self.meters,
            id_prefix: self.id_prefix.clone(),
            meters_per_feeder: self.meters_per_feeder,
            commercial_share: self.commercial_share,
            prosumer_share: self.prosumer_share,
            ..FleetConfig::default()
        }
    }

    fn faults(&self) -> FaultConfig {
        FaultConfig {
            enabled: self.faults == "default",
            scale: self.fault_scale,
            rates: self.fault_rates.iter().copied().collect(),
        }
    }

    /// Writes the registry CSV, if asked for.
    fn write_fleet_csv(&self, config: &SimConfig) -> anyhow::Result<()> {
        if let Some(path) = &self.fleet_csv {
            let specs = meterstack_sim::build_fleet(&config.fleet, &config.shape()?)
                .map_err(|e| anyhow::anyhow!(e))?;
            std::fs::write(path, meterstack_sim::registry_csv(&specs))
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        Ok(())
    }
}

/// Flags of `meterstack simulate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Simulated seconds per real second; simulated time never runs ahead of the clock
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// MQTT broker HOST:PORT [default: 127.0.0.1 and the configured MQTT port]
    #[arg(long)]
    mqtt: Option<String>,
    /// First simulated instant: RFC 3339, or how long ago (e.g. 7d) to replay history at
    /// --speed [default: now]
    #[arg(long, value_parser = parse_start)]
    start: Option<DateTime<Utc>>,
    /// Stop after this many intervals [default: run until interrupted]
    #[arg(long)]
    intervals: Option<u64>,
    /// Readings each meter keeps for resend requests
    #[arg(long, default_value_t = 96)]
    buffer: usize,
    /// Unacknowledged messages each meter may have in flight
    #[arg(long, default_value_t = 16)]
    inflight: usize,
    /// CSV with columns meter_id,secret: those meters log in with their secret
    #[arg(long)]
    credentials: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    meterstack_core::duration::parse(s).map_err(|e| e.to_string())
}

fn parse_start(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = parse_duration(s)
        .map_err(|_| format!("{s:?} is neither RFC 3339 nor a duration like 7d"))?;
    Ok(Utc::now() - chrono::TimeDelta::from_std(ago).map_err(|e| e.to_string())?)
}

fn parse_rate(s: &str) -> Result<(FaultType, f64), String> {
    let (name, rate) = s
        .split_once('=')
        .ok_or("expected TYPE=RATE, e.g. gap=0.1")?;
    let kind = FaultType::from_name(name.trim()).ok_or_else(|| {
        let names: Vec<_> = FaultType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown fault type {name:?}; one of {}", names.join(", "))
    })?;
    let rate: f64 = rate
        .trim()
        .parse()
        .map_err(|_| format!("{rate:?} is not a number"))?;
    Ok((kind, rate))
}

pub(crate) async fn simulate(args: Args, config: &Config) -> anyhow::Result<()> {
    let sim = SimConfig {
        fleet: args.fleet.fleet(),
        interval: args.fleet.interval,
        speed: args.speed,
        mqtt: args
            .mqtt
            .unwrap_or_else(|| format!("127.0.0.1:{}", config.mqtt.listen.port())),
        start: args.start,
        intervals: args.intervals,
        seed: args.fleet.seed,
        faults: args.fleet.faults(),
        labels: args.fleet.labels.clone(),
        buffer: args.buffer,
        inflight: args.inflight,
        keep_alive: 60,
        credentials: args.credentials,
    };
    sim.validate()?;
    args.fleet.write_fleet_csv(&sim)?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        crate::run::shutdown_signal().await;
        on_signal.cancel();
    });
    let stats = meterstack_sim::run(sim, shutdown).await?;
    anyhow::ensure!(
        stats.unacked == 0,
        "{} readings were never acknowledged by the broker",
        stats.unacked
    );
    Ok(())
}

/// Flags of `meterstack backfill`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BackfillArgs {
    #[command(flatten)]
    fleet: FleetArgs,
    /// Days of history, ending at --end
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// End of the history (exclusive): RFC 3339 or how long ago (e.g. 1d) [default: now]
    #[arg(long, value_parser = parse_start)]
    end: Option<DateTime<Utc>>,
    /// Meters per Parquet file and per worker batch
    #[arg(long, default_value_t = 2000)]
    chunk: usize,
}

pub(crate) async fn backfill(args: BackfillArgs, config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(args.days > 0, "--days must be at least 1");
    let dt = meterstack_sim::validate_interval(args.fleet.interval)?;
    let end = args.end.unwrap_or_else(Utc::now);
    let intervals = u64::from(args.days) * 86_400 / dt.num_seconds() as u64;
    let sim = SimConfig {
        fleet: args.fleet.fleet(),
        interval: args.fleet.interval,
        start: Some(end - dt * i32::try_from(intervals)?),
        intervals: Some(intervals),
        seed: args.fleet.seed,
        faults: args.fleet.faults(),
        labels: args.fleet.labels.clone(),
        ..SimConfig::default()
    };
    sim.validate()?;
    args.fleet.write_fleet_csv(&sim)?;
    let store = config.lake.build(&config.data_dir)?;
    let report = crate::backfill::write(&sim, store, args.chunk.max(1)).await?;
    #[allow(clippy::print_stdout)]
    {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}
