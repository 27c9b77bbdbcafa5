//! The device hub: an embedded MQTT broker (rumqttd) behind meterstack's gate, and the bridge
//! from broker to bus.
//!
//! In: MQTT connections from meters (TCP and TLS); publishes on `meters/{meter_id}/readings`
//! (JSON) and `meters/{meter_id}/dsmr` (DSMR P1 telegrams); commands from the bus topic
//! `meter.commands`.
//! Out: one record per accepted publish on the bus topic `readings.raw` — the payload exactly as
//! it arrived, keyed by meter id, with its receive time and source topic as headers; connect and
//! disconnect events on `meter.events` and in the registry; commands on `meters/{id}/commands`.
//!
//! Meters connect to the gate ([`gate`]), which authenticates them ([`auth`]), binds each
//! connection to one meter id and relays it to rumqttd on loopback. rumqttd acknowledges a QoS 1
//! publish (PUBACK) as soon as its router holds it, before the bridge has appended it to the
//! bus; see [`bridge`] for how that window is kept short, and [`gate`] for how a graceful
//! shutdown closes it.

mod backlog;
pub mod bridge;
pub mod commands;
mod config;
pub mod connectivity;
mod gate;
pub mod identity;

pub use config::{BridgeConfig, LimitsConfig, MqttConfig, MqttTlsConfig};
pub use identity::auth::REFUSAL_REASONS;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use meterstack_core::bus::{Bus, TopicNames};
use meterstack_core::component::{BoxError, Component, Context};
use meterstack_core::store::SqlStore;
use meterstack_core::store::secret::random_hex;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Errors of the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This process has no bus.
    #[error(transparent)]
    NoBus(#[from] meterstack_core::component::NoBus),
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
    /// The TLS listener's certificate, key or CA is unusable.
    #[error("MQTT TLS: {0}")]
    Tls(#[from] meterstack_core::tls::TlsError),
    /// The bus refused the command subscription.
    #[error("cannot subscribe to meter commands: {0}")]
    Bus(#[from] meterstack_core::bus::Error),
    /// No listener is enabled.
    #[error("neither the TCP nor the TLS MQTT listener is enabled")]
    NoListener,
    /// rumqttd's log would be too small.
    #[error(
        "mqtt.segment_bytes must be at least 1024 and mqtt.segments at least 2 (got {segment_bytes} and {segments})"
    )]
    LogTooSmall {
        /// The configured segment size.
        segment_bytes: usize,
        /// The configured segment count.
        segments: usize,
    },
}

/// `Result` with the broker [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the broker's listeners are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The plain-TCP listener, if enabled.
    pub tcp: Option<SocketAddr>,
    /// The TLS listener, if enabled.
    pub tls: Option<SocketAddr>,
}

/// A started embedded broker, with its gate and bridge; run it with [`Broker::run`].
pub struct Broker {
    /// The addresses meters connect to (the gate's).
    pub addrs: Addresses,
    gate: gate::Gate,
    bridge: bridge::Bridge,
    connectivity: connectivity::Writer,
    commands: (
        Box<dyn meterstack_core::bus::Subscription>,
        rumqttd::local::LinkTx,
    ),
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("addrs", &self.addrs)
            .field("gate", &self.gate)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Component for Broker {
    fn name(&self) -> &'static str {
        "MQTT broker"
    }

    async fn run(self: Box<Self>, stop: CancellationToken) -> Result<(), BoxError> {
        (*self).run(stop).await;
        Ok(())
    }
}

impl Broker {
    /// Serves meters until `shutdown` is cancelled. Then, in order: the gate closes every
    /// meter connection, and the bridge drains what rumqttd still holds onto the bus; the
    /// connectivity writer records the disconnects. Returns when all are done.
    pub async fn run(self, shutdown: CancellationToken) {
        let bridge_stop = CancellationToken::new();
        let bridge = tokio::spawn(self.bridge.run(bridge_stop.clone()));
        let writer = tokio::spawn(self.connectivity.run());
        let (subscription, link) = self.commands;
        let commands = tokio::spawn(commands::run(subscription, link, shutdown.clone()));
        self.gate.run(shutdown).await;
        bridge_stop.cancel();
        for (name, task) in [
            ("bridge", bridge),
            ("commands", commands),
            ("connectivity", writer),
        ] {
            if let Err(e) = task.await {
                error!(error = %e, task = name, "broker task failed");
            }
        }
    }
}

/// What the broker uses of its [`Context`].
#[derive(Debug, Clone)]
struct BrokerDeps {
    bus: Arc<dyn Bus>,
    topics: TopicNames,
    /// The registry.
    store: SqlStore,
    /// Development mode: meters without credentials are accepted and auto-registered.
    dev: bool,
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

impl MqttConfig {
    /// Starts rumqttd on its own threads (listening on a free loopback port, accepting only
    /// the gate), links the bridge to it, binds the gate's listeners, and returns once rumqttd
    /// accepts connections.
    /// `dev` is development mode: meters without credentials are accepted and
    /// auto-registered.
    pub async fn start(&self, ctx: &Context, dev: bool) -> Result<Broker> {
        let deps = BrokerDeps {
            bus: ctx.bus("the MQTT broker")?.clone(),
            topics: ctx.topics.clone(),
            store: ctx.store.clone(),
            dev,
        };
        if self.segment_bytes < 1024 || self.segments < 2 {
            return Err(Error::LogTooSmall {
                segment_bytes: self.segment_bytes,
                segments: self.segments,
            });
        }
        let backlog = Arc::new(backlog::Backlog::new(self.segment_bytes, self.segments));
        let tcp = if self.tcp_enabled {
            Some(bind(self.listen).await?)
        } else {
            None
        };
        let tls = if self.tls.enabled() {
            let client_ca = (!self.tls.client_ca.as_os_str().is_empty())
                .then_some(self.tls.client_ca.as_path());
            let config = meterstack_core::tls::server_config(
                &self.tls.cert,
                &self.tls.key,
                client_ca,
                self.tls.require_client_cert,
                &[b"mqtt"],
            )?;
            Some((
                bind(self.tls.listen).await?,
                tokio_rustls::TlsAcceptor::from(config),
            ))
        } else {
            None
        };
        let local = |l: &tokio::net::TcpListener, addr| {
            l.local_addr()
                .map_err(|source| Error::Bind { addr, source })
        };
        let addrs = Addresses {
            tcp: tcp.as_ref().map(|l| local(l, self.listen)).transpose()?,
            tls: tls
                .as_ref()
                .map(|(l, _)| local(l, self.tls.listen))
                .transpose()?,
        };
        if addrs.tcp.is_none() && addrs.tls.is_none() {
            return Err(Error::NoListener);
        }
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
        // Only the gate may talk to rumqttd: a random password per process, known to no one
        // else, so a local process cannot bypass identity checks through the loopback port.
        let gate_user = "meterstack-gate".to_owned();
        let gate_password = random_hex(32);
        let mut broker =
            rumqttd::Broker::new(self.rumqttd_config(internal, &gate_user, &gate_password));
        let (mut link_tx, link_rx) = broker
            .link("meterstack-bridge")
            .map_err(|e| Error::Link(e.to_string()))?;
        link_tx
            .subscribe(meterstack_core::wire::METER_TOPIC_FILTER)
            .map_err(|e| Error::Link(e.to_string()))?;
        let (command_link, _command_rx) = broker
            .link("meterstack-commands")
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
        let subscription = deps
            .bus
            .subscribe(&deps.topics.meter_commands, commands::GROUP)
            .await?;
        let (connectivity, writer) = connectivity::channel(
            deps.store.clone(),
            deps.bus.clone(),
            &deps.topics.meter_events,
            Duration::from_secs(5),
        );
        let shared = gate::Shared {
            upstream: internal,
            upstream_user: gate_user,
            upstream_password: gate_password,
            buffer_bytes: self.gate_buffer_bytes,
            max_packet_bytes: self.max_packet_bytes,
            connect_timeout: self.connection_timeout,
            limits: self.limits.clone(),
            max_connections: self.max_connections,
            auth: identity::auth::Authenticator::new(deps.store.clone(), deps.dev),
            connectivity,
            session_prefix: random_hex(4),
            sessions: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            live: std::sync::Mutex::new(std::collections::HashMap::new()),
            revalidate_every: self.revalidate_interval.max(Duration::from_millis(100)),
            backlog: backlog.clone(),
        };
        info!(tcp = ?addrs.tcp, tls = ?addrs.tls, "MQTT broker listening (MQTT 3.1.1)");
        Ok(Broker {
            addrs,
            gate: gate::Gate {
                tcp,
                tls,
                shared: Arc::new(shared),
            },
            bridge: bridge::Bridge::new(
                self.bridge.clone(),
                link_tx,
                link_rx,
                deps.bus,
                &deps.topics.readings_raw,
                backlog,
            ),
            connectivity: writer,
            commands: (subscription, command_link),
        })
    }

    fn rumqttd_config(&self, listen: SocketAddr, user: &str, password: &str) -> rumqttd::Config {
        let connections = rumqttd::ConnectionSettings {
            connection_timeout_ms: u16::try_from(self.connection_timeout.as_millis())
                .unwrap_or(u16::MAX),
            max_payload_size: self.max_packet_bytes,
            max_inflight_count: self.max_inflight,
            auth: Some(
                [(user.to_owned(), password.to_owned())]
                    .into_iter()
                    .collect(),
            ),
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
                // The gate enforces max_connections; rumqttd also holds the local links.
                max_connections: self.max_connections + 16,
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
