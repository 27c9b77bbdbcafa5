//! The meter fleet simulator behind `meterstack simulate` and `meterstack backfill`.
//!
//! In: a [`SimConfig`]. Out: MQTT publishes of the meterstack wire format on
//! `meters/{meter_id}/readings`, one connection per meter (client id = meter id), QoS 1 — or,
//! through [`offline::Offline`], the same readings without a network — and a labels file:
//! the ground truth of every fault injected.
//!
//! - [`load`]: BDEW standard load profiles by class, holidays, synthetic weather, the sun.
//! - [`household`]: one home's occupancy, appliance runs and holidays on top of the profile.
//! - [`meter`]: the fleet (classes, feeders, registers) and one meter's behaviour per tick,
//!   including its local buffer and its faults.
//! - [`faults`]: fault types, rates, planning and labels.
//! - [`run`]: the MQTT driver (acknowledgements, reconnect backfill, resend commands).
//! - [`verify`]: checks a labels file against what was received.
//!
//! Simulated time runs `speed` times faster than real time from `start`, but never ahead of
//! the wall clock: once it catches up, meters report in real time. Everything is a function
//! of the seed: the same seed gives the same fleet, readings and faults.

pub mod faults;
pub mod household;
pub mod load;
pub mod meter;
pub mod offline;
mod run;
pub mod score;
pub mod verify;

pub use faults::{FaultConfig, FaultType, Label};
pub use meter::{FleetConfig, MeterSpec, RunShape, build_fleet, registry_csv};
pub use run::{MAX_READINGS_PER_MESSAGE, SimStats};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::load::{Site, Weather};
use crate::run::{Clock, Counters, TaskEnv};

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error("simulator config: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// `Result` with the simulator [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// The fleet.
    pub fleet: FleetConfig,
    /// Reading interval of every meter (1 s to 60 min, dividing a day).
    #[serde(with = "meterstack_core::duration")]
    pub interval: Duration,
    /// Simulated seconds per real second (1 = real time).
    pub speed: f64,
    /// MQTT broker, `HOST:PORT`.
    pub mqtt: String,
    /// First simulated instant (aligned down to the interval); `None` means now.
    pub start: Option<DateTime<Utc>>,
    /// Stop after this many intervals; `None` runs until interrupted.
    pub intervals: Option<u64>,
    /// Seed of the fleet's randomness: the same seed gives the same fleet and readings.
    pub seed: u64,
    /// Faults to inject.
    pub faults: FaultConfig,
    /// Where to write the labels (JSON lines), if anywhere.
    pub labels: Option<PathBuf>,
    /// Readings each meter keeps for resend requests.
    pub buffer: usize,
    /// Unacknowledged messages a meter may have in flight.
    pub inflight: usize,
    /// MQTT keep-alive, seconds.
    pub keep_alive: u16,
    /// CSV of `meter_id,secret`: meters listed log in with their secret.
    pub credentials: Option<PathBuf>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            fleet: FleetConfig::default(),
            interval: Duration::from_secs(15 * 60),
            speed: 1.0,
            mqtt: "127.0.0.1:1883".into(),
            start: None,
            intervals: None,
            seed: 1,
            faults: FaultConfig::none(),
            labels: None,
            buffer: 96,
            inflight: 16,
            keep_alive: 60,
            credentials: None,
        }
    }
}

/// Checks an interval: 1 s to 60 min, a whole number of seconds dividing a day.
pub fn validate_interval(interval: Duration) -> Result<TimeDelta> {
    let secs = interval.as_secs();
    if !(1..=3600).contains(&secs) || interval.subsec_nanos() != 0 || 86_400 % secs != 0 {
        return Err(Error::Config(format!(
            "interval must be whole seconds between 1s and 60m that divide a day (e.g. 1s, 10s, 1m, 5m, 15m, 30m, 60m), not {interval:?}"
        )));
    }
    Ok(TimeDelta::seconds(secs as i64))
}

impl FleetConfig {
    /// Checks the fleet and returns where it is.
    pub fn site(&self) -> Result<Site> {
        if self.meters == 0 {
            return Err(Error::Config("meters must be at least 1".into()));
        }
        if self.meters_per_feeder == 0 {
            return Err(Error::Config("meters_per_feeder must be at least 1".into()));
        }
        let shares = [self.commercial_share, self.prosumer_share];
        if shares.iter().any(|s| !(0.0..=1.0).contains(s)) || shares.iter().sum::<f64>() > 1.0 {
            return Err(Error::Config(
                "commercial_share and prosumer_share must be shares that sum to at most 1".into(),
            ));
        }
        if !(-90.0..=90.0).contains(&self.latitude) || !(-180.0..=180.0).contains(&self.longitude) {
            return Err(Error::Config("latitude/longitude out of range".into()));
        }
        meterstack_core::MeterId::new(&format!("{}{}", self.id_prefix, self.meters))
            .map_err(|e| Error::Config(format!("id_prefix gives invalid meter ids: {e}")))?;
        let tz = self
            .timezone
            .parse()
            .map_err(|_| Error::Config(format!("unknown time zone {:?}", self.timezone)))?;
        Ok(Site {
            tz,
            latitude: self.latitude,
            longitude: self.longitude,
        })
    }
}

impl SimConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        self.fleet.site()?;
        validate_interval(self.interval)?;
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err(Error::Config("speed must be a positive number".into()));
        }
        if self.inflight == 0 || self.inflight > 65_000 {
            return Err(Error::Config("inflight must be between 1 and 65000".into()));
        }
        self.faults.validate().map_err(Error::Config)?;
        split_host_port(&self.mqtt)?;
        Ok(())
    }

    /// The first tick: `start` (or now) aligned down to the interval.
    pub fn first_tick(&self) -> Result<DateTime<Utc>> {
        let dt = validate_interval(self.interval)?.num_seconds();
        let first = self.start.unwrap_or_else(Utc::now);
        DateTime::from_timestamp(first.timestamp() - first.timestamp().rem_euclid(dt), 0)
            .ok_or_else(|| Error::Config("start out of range".into()))
    }

    /// The shape every meter of the run shares.
    pub fn shape(&self) -> Result<RunShape> {
        let dt = validate_interval(self.interval)?;
        Ok(RunShape {
            start: self.first_tick()?,
            dt,
            horizon: self
                .intervals
                .map(|n| dt * i32::try_from(n).unwrap_or(i32::MAX)),
            seed: self.seed,
            faults: Arc::new(self.faults.clone()),
            buffer: self.buffer,
        })
    }
}

/// `HOST:PORT` → (host, port).
pub(crate) fn split_host_port(addr: &str) -> Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| Error::Config(format!("mqtt address {addr:?} is not HOST:PORT")))?;
    let port = port
        .parse()
        .map_err(|_| Error::Config(format!("mqtt address {addr:?} has no valid port")))?;
    Ok((host.trim_matches(['[', ']']).to_owned(), port))
}

/// Reads a `meter_id,secret` CSV (a header row naming both columns).
fn read_credentials(path: &PathBuf) -> Result<HashMap<String, String>> {
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    let (Some(id_col), Some(secret_col)) = (
        header.iter().position(|h| *h == "meter_id"),
        header.iter().position(|h| *h == "secret"),
    ) else {
        return Err(Error::Config(format!(
            "{}: the header must name meter_id and secret",
            path.display()
        )));
    };
    let mut out = HashMap::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        match (cells.get(id_col), cells.get(secret_col)) {
            (Some(id), Some(secret)) => out.insert((*id).to_owned(), (*secret).to_owned()),
            _ => {
                return Err(Error::Config(format!(
                    "{} line {}: missing a column",
                    path.display(),
                    i + 2
                )));
            }
        };
    }
    Ok(out)
}

/// Runs the fleet over MQTT until `config.intervals` are done or `shutdown` is cancelled,
/// then sends what the meters still hold, waits (up to 10 s) for acknowledgements and
/// disconnects.
pub async fn run(config: SimConfig, shutdown: CancellationToken) -> Result<SimStats> {
    config.validate()?;
    let site = config.fleet.site()?;
    let shape = config.shape()?;
    let specs = build_fleet(&config.fleet, &shape).map_err(Error::Config)?;
    let credentials = config
        .credentials
        .as_ref()
        .map(read_credentials)
        .transpose()?
        .map(Arc::new);
    let (labels_tx, writer) = match &config.labels {
        Some(path) => {
            // Create the file now, so an unwritable path fails before the run.
            std::fs::File::create(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (
                Some(tx),
                Some((
                    path.clone(),
                    tokio::spawn(run::write_labels(path.clone(), rx)),
                )),
            )
        }
        None => (None, None),
    };
    let counters = Arc::new(Counters::default());
    let env = TaskEnv {
        addr: config.mqtt.clone(),
        clock: Clock {
            start: shape.start,
            dt: shape.dt,
            speed: config.speed,
            real0: tokio::time::Instant::now(),
            wall0: Utc::now(),
        },
        intervals: config.intervals,
        site,
        weather: Weather::new(config.seed),
        inflight: config.inflight,
        keep_alive: config.keep_alive,
        counters: counters.clone(),
        labels: labels_tx,
        credentials,
    };
    info!(meters = specs.len(), start = %shape.start, speed = config.speed, "simulation started");
    let progress = {
        let counters = counters.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(10)) => {}
                    () = stop.cancelled() => return,
                }
                let s = counters.snapshot();
                info!(
                    intervals = s.intervals,
                    published = s.published,
                    acked = s.acked,
                    connects = s.connects,
                    "simulating"
                );
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for spec in specs {
        let meter = meter::Meter::new(spec, shape.clone());
        tasks.spawn(run::meter_task(meter, env.clone(), shutdown.clone()));
    }
    drop(env);
    while tasks.join_next().await.is_some() {}
    progress.abort();
    let mut stats = counters.snapshot();
    if let Some((path, writer)) = writer {
        stats.labels = writer
            .await
            .map_err(|e| Error::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?
            .map_err(|source| Error::Io { path, source })?;
    }
    info!(
        intervals = stats.intervals,
        published = stats.published,
        acked = stats.acked,
        unacked = stats.unacked,
        connects = stats.connects,
        labels = stats.labels,
        "simulation finished"
    );
    Ok(stats)
}
