//! The meter fleet simulator behind `meterstack simulate`.
//!
//! In: a [`SimConfig`]. Out: MQTT publishes of the meterstack wire format on
//! `meters/{meter_id}/readings`, one connection per meter (client id = meter id), QoS 1.
//!
//! Each meter belongs to a class (household, commercial) with its own mean load; its power
//! follows a daily and weekly shape ([`profile`]) with seasonal scaling and per-meter noise.
//! Its import register only grows, by the energy of each interval. Voltage stays near 230 V
//! with noise. Simulated time runs `speed` times faster than real time from `start`, but never
//! ahead of the wall clock: once it catches up, meters report in real time.

pub mod profile;
mod run;

pub use run::{SimStats, run};

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable.
    #[error("simulator config: {0}")]
    Config(String),
}

/// `Result` with the simulator [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Number of meters.
    pub meters: usize,
    /// Reading interval of every meter.
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
    /// Meter ids are this prefix and a zero-padded number: `m-001`, `m-002`, …
    pub id_prefix: String,
    /// Seed of the fleet's randomness: the same seed gives the same fleet and readings.
    pub seed: u64,
    /// Offset of the fleet's local time from UTC, in hours (shapes follow local time).
    pub utc_offset_hours: i32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            meters: 10,
            interval: Duration::from_secs(15 * 60),
            speed: 1.0,
            mqtt: "127.0.0.1:1883".into(),
            start: None,
            intervals: None,
            id_prefix: "m-".into(),
            seed: 1,
            utc_offset_hours: 1,
        }
    }
}

impl SimConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        if self.meters == 0 {
            return Err(Error::Config("meters must be at least 1".into()));
        }
        if self.interval < Duration::from_secs(1) || self.interval > Duration::from_secs(3600) {
            return Err(Error::Config("interval must be between 1s and 60m".into()));
        }
        if !(self.speed.is_finite() && self.speed > 0.0) {
            return Err(Error::Config("speed must be a positive number".into()));
        }
        if !(-12..=14).contains(&self.utc_offset_hours) {
            return Err(Error::Config(
                "utc_offset_hours must be between -12 and 14".into(),
            ));
        }
        meterstack_core::MeterId::new(&format!("{}{}", self.id_prefix, self.meters))
            .map_err(|e| Error::Config(format!("id_prefix gives invalid meter ids: {e}")))?;
        split_host_port(&self.mqtt)?;
        Ok(())
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
