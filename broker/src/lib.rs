//! The device hub: an embedded MQTT broker (rumqttd) and the bridge from broker to bus.
//!
//! In: MQTT publishes from meters on `meters/{meter_id}/readings`.
//! Out: one record per accepted publish on the bus topic `readings.raw` — the payload exactly as
//! it arrived, keyed by meter id, with its receive time and source topic as headers.
//!
//! Meters connect to the gate ([`gate`]), meterstack's own listener, which splices each
//! connection to rumqttd on loopback. rumqttd acknowledges a QoS 1 publish (PUBACK) as soon as
//! its router holds it, before the bridge has appended it to the bus; see [`bridge`] for how
//! that window is kept short, and [`gate`] for how a graceful shutdown closes it.

pub mod bridge;
mod config;
mod gate;

pub use config::{BridgeConfig, MqttConfig};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meterstack_core::bus::Bus;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Errors of the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The MQTT listen address is taken or not ours.
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// rumqttd refused the bridge's local link.
    #[error("cannot link the bridge to the broker: {0}")]
    Link(String),
    /// The broker thread stopped, or did not listen within 10 s.
    #[error("the embedded MQTT broker did not start listening on {0} within 10 s")]
    NotListening(SocketAddr),
    /// A thread could not be spawned.
    #[error("cannot spawn the broker thread: {0}")]
    Spawn(std::io::Error),
}

/// `Result` with the broker [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A started embedded broker, with its gate and bridge; run it with [`Broker::run`].
#[derive(Debug)]
pub struct Broker {
    /// The address meters connect to (the gate's).
    pub addr: SocketAddr,
    gate: gate::Gate,
    bridge: bridge::Bridge,
}

impl Broker {
    /// Serves meters until `shutdown` is cancelled. Then, in order: the gate closes every
    /// meter connection, and the bridge drains what rumqttd still holds onto the bus. Returns
    /// when both are done.
    pub async fn run(self, shutdown: CancellationToken) {
        let bridge_stop = CancellationToken::new();
        let bridge = tokio::spawn(self.bridge.run(bridge_stop.clone()));
        self.gate.run(shutdown).await;
        bridge_stop.cancel();
        if let Err(e) = bridge.await {
            error!(error = %e, "bridge task failed");
        }
    }
}

impl MqttConfig {
    /// Starts rumqttd on its own threads (listening on a free loopback port), links the
    /// bridge to it, binds the gate on `listen`, and returns once rumqttd accepts connections.
    pub async fn start(&self, bus: Arc<dyn Bus>, raw_topic: &str) -> Result<Broker> {
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: self.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: self.listen,
            source,
        })?;
        // rumqttd cannot report a port it chose: take a free one and hand it over. Another
        // process could grab it in between; rumqttd then fails and start returns NotListening.
        let internal = {
            let loopback = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
            let probe = TcpListener::bind(loopback).map_err(|source| Error::Bind {
                addr: loopback,
                source,
            })?;
            probe.local_addr().map_err(|source| Error::Bind {
                addr: loopback,
                source,
            })?
        };
        let mut broker = rumqttd::Broker::new(self.rumqttd_config(internal));
        let (mut link_tx, link_rx) = broker
            .link("meterstack-bridge")
            .map_err(|e| Error::Link(e.to_string()))?;
        link_tx
            .subscribe(meterstack_core::wire::READINGS_TOPIC_FILTER)
            .map_err(|e| Error::Link(e.to_string()))?;
        let thread = std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    error!(error = %e, "embedded MQTT broker stopped");
                }
            })
            .map_err(Error::Spawn)?;
        let started = Instant::now();
        while TcpStream::connect_timeout(&internal, Duration::from_millis(200)).is_err() {
            if thread.is_finished() || started.elapsed() > Duration::from_secs(10) {
                return Err(Error::NotListening(internal));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        info!(%addr, "MQTT broker listening (MQTT 3.1.1)");
        Ok(Broker {
            addr,
            gate: gate::Gate {
                listener,
                upstream: internal,
                buffer_bytes: self.gate_buffer_bytes,
            },
            bridge: bridge::Bridge::new(self.bridge.clone(), link_tx, link_rx, bus, raw_topic),
        })
    }

    fn rumqttd_config(&self, listen: SocketAddr) -> rumqttd::Config {
        let connections = rumqttd::ConnectionSettings {
            connection_timeout_ms: u16::try_from(self.connection_timeout.as_millis())
                .unwrap_or(u16::MAX),
            max_payload_size: self.max_packet_bytes,
            max_inflight_count: self.max_inflight,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        let server = rumqttd::ServerSettings {
            name: "mqtt-v4".into(),
            listen,
            tls: None,
            next_connection_delay_ms: 0,
            connections,
        };
        rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: self.max_connections,
                max_outgoing_packet_count: 1024,
                max_segment_size: self.segment_bytes,
                max_segment_count: self.segments,
                ..Default::default()
            },
            v4: Some([("1".to_owned(), server)].into_iter().collect()),
            ..Default::default()
        }
    }
}
