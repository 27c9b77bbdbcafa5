use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, TimeDelta, Utc};
use meterstack_core::MeterId;
use meterstack_core::wire::{encode, readings_topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::profile::Meter;
use crate::{Error, Result, SimConfig, split_host_port};

/// What a simulation run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Intervals simulated.
    pub intervals: u64,
    /// Readings published.
    pub published: u64,
    /// Readings the broker acknowledged (PUBACK).
    pub acked: u64,
}

/// Runs the fleet until `config.intervals` are done or `shutdown` is cancelled, then waits
/// (up to 10 s) for outstanding acknowledgements and disconnects.
pub async fn run(config: SimConfig, shutdown: CancellationToken) -> Result<SimStats> {
    config.validate()?;
    let (host, port) = split_host_port(&config.mqtt)?;
    let interval =
        TimeDelta::from_std(config.interval).map_err(|e| Error::Config(e.to_string()))?;
    let offset = FixedOffset::east_opt(config.utc_offset_hours * 3600)
        .ok_or_else(|| Error::Config("invalid utc offset".into()))?;
    let acked = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let width = config.meters.to_string().len().max(3);
    let mut fleet = Vec::with_capacity(config.meters);
    for n in 1..=config.meters {
        let id = MeterId::new(&format!("{}{:0width$}", config.id_prefix, n))
            .map_err(|e| Error::Config(e.to_string()))?;
        let mut options = MqttOptions::new(id.as_str(), host.clone(), port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, eventloop) = AsyncClient::new(options, 64);
        tokio::spawn(drive(eventloop, id.clone(), acked.clone(), stop.clone()));
        let topic = readings_topic(&id);
        fleet.push((Meter::new(id, n as u64, config.seed), client, topic));
    }

    let interval_secs = config.interval.as_secs() as i64;
    let first = config.start.unwrap_or_else(Utc::now);
    let start = DateTime::from_timestamp(
        first.timestamp() - first.timestamp().rem_euclid(interval_secs),
        0,
    )
    .ok_or_else(|| Error::Config("start out of range".into()))?;
    let real0 = Instant::now();
    let wall0 = Utc::now();
    let mut stats = SimStats::default();
    let mut last_log = Instant::now();
    info!(meters = config.meters, start = %start, speed = config.speed, "simulation started");
    'ticks: loop {
        if config.intervals.is_some_and(|n| stats.intervals >= n) {
            break;
        }
        let sim_t = start + interval * i32::try_from(stats.intervals).unwrap_or(i32::MAX);
        let elapsed_sim = (sim_t - start).to_std().unwrap_or_default();
        let by_speed = real0 + elapsed_sim.div_f64(config.speed);
        // Never publish a reading stamped in the future.
        let by_wall = real0 + (sim_t - wall0).to_std().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep_until(by_speed.max(by_wall)) => {}
            () = shutdown.cancelled() => break,
        }
        for (meter, client, topic) in &mut fleet {
            let reading = meter.read(sim_t, interval, offset);
            let publish =
                client.publish(topic.as_str(), QoS::AtLeastOnce, false, encode(&[reading]));
            tokio::select! {
                result = publish => {
                    if let Err(e) = result {
                        warn!(meter_id = %meter.id, error = %e, "publish failed");
                        continue;
                    }
                }
                () = shutdown.cancelled() => break 'ticks,
            }
            stats.published += 1;
        }
        stats.intervals += 1;
        if last_log.elapsed() > Duration::from_secs(10) {
            last_log = Instant::now();
            info!(simulated = %sim_t, published = stats.published, acked = acked.load(Ordering::Relaxed), "simulating");
        }
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.load(Ordering::Relaxed) < stats.published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (_, client, _) in &fleet {
        // Best effort: the connection may already be gone.
        let _ = client.disconnect().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    stats.acked = acked.load(Ordering::Relaxed);
    info!(
        intervals = stats.intervals,
        published = stats.published,
        acked = stats.acked,
        "simulation finished"
    );
    Ok(stats)
}

/// Polls one meter's MQTT connection, counting acknowledgements and reconnecting on errors.
async fn drive(
    mut eventloop: rumqttc::EventLoop,
    id: MeterId,
    acked: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut warned = false;
    loop {
        let event = tokio::select! {
            event = eventloop.poll() => event,
            () = stop.cancelled() => return,
        };
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked.fetch_add(1, Ordering::Relaxed);
                warned = false;
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => {
                if !warned {
                    warn!(meter_id = %id, error = %e, "MQTT connection failed; retrying every second");
                    warned = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}
