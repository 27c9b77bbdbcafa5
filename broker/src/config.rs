use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Section `[mqtt]` of `meterstack.toml`: the embedded broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Address meters connect to (MQTT 3.1.1 over plain TCP); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Whether the plain-TCP listener runs. Secrets cross it in clear text: in production,
    /// turn it off and let meters use the TLS listener.
    pub tcp_enabled: bool,
    /// The TLS listener (MQTT over TLS, client certificates).
    pub tls: MqttTlsConfig,
    /// Limits per meter.
    pub limits: LimitsConfig,
    /// Splice buffer per direction per meter connection, in bytes (see the gate in
    /// docs/ARCHITECTURE.md).
    pub gate_buffer_bytes: usize,
    /// Most concurrent client connections.
    pub max_connections: usize,
    /// Largest MQTT packet the broker accepts; a bigger one closes the client's connection.
    /// Kept above `ingest.max_payload_bytes` so that an oversized reading payload reaches the
    /// decoder, which rejects it with a reason and keeps it for inspection.
    pub max_packet_bytes: usize,
    /// Most unacknowledged outgoing QoS 1/2 messages per connection.
    pub max_inflight: usize,
    /// How long a new connection may take to send CONNECT (at most 65 s).
    #[serde(with = "meterstack_core::duration")]
    pub connection_timeout: Duration,
    /// How often open connections are checked against the registry: a revoked certificate,
    /// a changed secret or a decommissioned meter closes its connection within this time.
    #[serde(with = "meterstack_core::duration")]
    pub revalidate_interval: Duration,
    /// Size of one segment of rumqttd's in-memory log of the bridge's subscription (all meter
    /// topics share it; at least 1 KiB).
    pub segment_bytes: usize,
    /// Segments rumqttd keeps (at least 2). `segment_bytes × segments` bounds the broker's
    /// memory for readings. The gate holds meters back while the bridge has more than half of
    /// `segment_bytes × (segments - 1)` outstanding, so rumqttd never overwrites a message it
    /// has acknowledged (that would be counted in `meterstack_mqtt_overwritten_total`).
    pub segments: usize,
    /// The bridge from broker to bus.
    pub bridge: BridgeConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            tcp_enabled: true,
            tls: MqttTlsConfig::default(),
            limits: LimitsConfig::default(),
            gate_buffer_bytes: 4096,
            max_connections: 100_000,
            max_packet_bytes: 2 * 1024 * 1024,
            max_inflight: 100,
            connection_timeout: Duration::from_secs(10),
            revalidate_interval: Duration::from_secs(60),
            segment_bytes: 16 * 1024 * 1024,
            segments: 4,
            bridge: BridgeConfig::default(),
        }
    }
}

/// Section `[mqtt.bridge]`: how accepted publishes move onto the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Most messages appended to the bus in one batch.
    pub max_batch: usize,
    /// On shutdown, the bridge keeps draining the broker until it has been quiet this long…
    #[serde(with = "meterstack_core::duration")]
    pub drain_quiet: Duration,
    /// …or until this much time has passed.
    #[serde(with = "meterstack_core::duration")]
    pub drain_max: Duration,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            drain_quiet: Duration::from_millis(200),
            drain_max: Duration::from_secs(3),
        }
    }
}

/// Section `[mqtt.tls]`: MQTT over TLS. Off while `cert` is empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttTlsConfig {
    /// Address of the TLS listener; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The server's certificate chain (PEM), e.g. from `meterstack certs server`.
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// CA whose client certificates identify meters (PEM), e.g. `<data-dir>/ca/ca.crt` from
    /// `meterstack certs init-ca`. Empty: no client certificates.
    pub client_ca: PathBuf,
    /// Refuse TLS clients without a client certificate (otherwise they may use a secret).
    pub require_client_cert: bool,
}

impl Default for MqttTlsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8883)),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            client_ca: PathBuf::new(),
            require_client_cert: false,
        }
    }
}

impl MqttTlsConfig {
    /// Whether the TLS listener is configured.
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }
}

/// Section `[mqtt.limits]`: per-meter limits (the connection limit is `mqtt.max_connections`,
/// payload and batch limits are in `[ingest]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sustained publishes per second per meter connection. A meter above it is slowed down
    /// (its socket is read more slowly), which never slows other meters.
    pub publish_rate: f64,
    /// Publishes a meter may send at once above the rate (e.g. a backfill after an outage).
    pub publish_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            publish_rate: 20.0,
            publish_burst: 200,
        }
    }
}
