//! The gate: meterstack's own MQTT listeners (TCP and TLS) in front of rumqttd.
//!
//! Every meter connects to the gate, never to rumqttd, which listens on loopback only and
//! accepts nothing but the gate's own credentials. For each connection the gate:
//! - terminates TLS and verifies the client certificate, if any, against the meter CA;
//! - reads CONNECT and decides who the meter is ([`crate::identity::auth`]): certificate, secret, or
//!   (development mode only) nobody; a refusal is answered with a CONNACK code and counted;
//! - binds the connection to that meter id: the client id must be the meter id, every PUBLISH
//!   must go to `meters/{id}/…` (not its command topic), every SUBSCRIBE must be exactly
//!   `meters/{id}/commands`, the will topic likewise; a violation closes the connection and is
//!   counted (MQTT 3.1.1 has no way to refuse a single publish);
//! - throttles a meter that publishes faster than `limits.publish_rate` by reading its socket
//!   more slowly, which slows that meter only;
//! - forwards everything else byte for byte, and rumqttd's answers back, but stops reading
//!   from meters while the bridge is too far behind for rumqttd's log to hold more
//!   ([`crate::backlog`]);
//! - every `mqtt.revalidate_interval`, checks each open connection's identity again and closes
//!   those whose certificate was revoked, whose secret changed, or whose meter was
//!   decommissioned or removed.
//!
//! On shutdown the gate stops accepting and closes every meter connection first; the bridge
//! then drains what rumqttd still holds (see [`crate::bridge`]). A publish whose PUBACK was cut
//! off is unacknowledged, so the meter sends it again: at-least-once, never lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use meterstack_core::metrics::{MQTT_CONNECTIONS, MQTT_CONNECTS, MQTT_REFUSED, MQTT_THROTTLED};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::backlog::{Backlog, log_size};
use crate::config::LimitsConfig;
use crate::connectivity::Connectivity;
use crate::identity::auth::{Authenticator, Identity, PeerCertificate, may_publish, may_subscribe};
use meterstack_core::mqtt::{self as packet, Frame, PacketError, kind};

/// What every connection of the gate shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) upstream: SocketAddr,
    /// The gate's credentials at rumqttd.
    pub(crate) upstream_user: String,
    pub(crate) upstream_password: String,
    pub(crate) buffer_bytes: usize,
    pub(crate) max_packet_bytes: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) limits: LimitsConfig,
    pub(crate) max_connections: usize,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) connectivity: Connectivity,
    /// Session ids are `{session_prefix}-{n}`: unique across restarts and brokers.
    pub(crate) session_prefix: String,
    pub(crate) sessions: AtomicU64,
    pub(crate) open: AtomicUsize,
    /// Open sessions, for revalidation: session number → (identity, its stop token).
    pub(crate) live: Mutex<HashMap<u64, (Identity, CancellationToken)>>,
    /// How often open sessions are checked against the registry.
    pub(crate) revalidate_every: Duration,
    /// What the bridge has yet to move to the bus.
    pub(crate) backlog: Arc<Backlog>,
}

impl Shared {
    /// Checks every open session's identity against the registry; closes those that no
    /// longer hold (certificate revoked, meter decommissioned or removed, secret changed).
    async fn revalidate(&self) {
        let open: Vec<(Identity, CancellationToken)> = match self.live.lock() {
            Ok(live) => live.values().cloned().collect(),
            Err(_) => return,
        };
        for (identity, stop) in open {
            if let Some(reason) = self.auth.revalidate(&identity).await {
                refused(reason);
                info!(meter = %identity.meter_id, reason, "closing a connection whose identity no longer holds");
                stop.cancel();
            }
        }
    }
}

/// Removes a session from [`Shared::live`] when it ends.
struct LiveGuard<'a>(&'a Shared, u64);

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut live) = self.0.live.lock() {
            live.remove(&self.1);
        }
    }
}

/// The gate's listeners.
pub(crate) struct Gate {
    pub(crate) tcp: Option<TcpListener>,
    pub(crate) tls: Option<(TcpListener, TlsAcceptor)>,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("tcp", &self.tcp)
            .field("tls", &self.tls.as_ref().map(|(l, _)| l))
            .finish_non_exhaustive()
    }
}

fn refused(reason: &'static str) {
    metrics::counter!(MQTT_REFUSED, "reason" => reason).increment(1);
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl Gate {
    /// Accepts and serves connections until `shutdown`; then closes every connection and
    /// returns once all are closed.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let connections = TaskTracker::new();
        let tls_listener = self.tls.as_ref().map(|(l, _)| l);
        let revalidation = {
            let shared = self.shared.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(shared.revalidate_every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => shared.revalidate().await,
                    }
                }
            })
        };
        loop {
            let (accepted, tls) = tokio::select! {
                () = shutdown.cancelled() => break,
                a = accept(self.tcp.as_ref()) => (a, false),
                a = accept(tls_listener) => (a, true),
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "cannot accept MQTT connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = self.shared.clone();
            if shared.open.load(Ordering::Relaxed) >= shared.max_connections {
                refused("max_connections");
                debug!(%peer, "refused: mqtt.max_connections reached");
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let stop = shutdown.clone();
            match (&self.tls, tls) {
                (Some((_, acceptor)), true) => {
                    let acceptor = acceptor.clone();
                    connections.spawn(async move {
                        let handshake =
                            tokio::time::timeout(shared.connect_timeout, acceptor.accept(stream));
                        let stream = match handshake.await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                let reason = tls_reason(&e);
                                refused(reason);
                                debug!(%peer, error = %e, reason, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                refused("tls_handshake");
                                return;
                            }
                        };
                        let certificate = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|der| meterstack_core::tls::certificate_identity(der).ok())
                            .map(|(common_name, serial)| PeerCertificate {
                                common_name,
                                serial,
                            });
                        serve(stream, peer, certificate, shared, stop).await;
                    });
                }
                _ => {
                    connections.spawn(serve(stream, peer, None, shared, stop));
                }
            }
        }
        drop(self.tcp);
        drop(self.tls);
        let _ = revalidation.await;
        connections.close();
        let open = connections.len();
        connections.wait().await;
        info!(closed = open, "MQTT gate closed every meter connection");
    }
}

/// Classifies a failed TLS handshake for the refusal metric.
fn tls_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        // Not signed by the meter CA: an unknown issuer, or one named like it (bad signature).
        Some(Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "tls_untrusted",
        Some(Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        )) => "tls_not_yet_valid",
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "tls_expired",
        Some(Error::InvalidCertificate(CertificateError::Revoked)) => "tls_revoked",
        _ => "tls_handshake",
    }
}

/// Counts the connection as open while alive.
struct OpenGuard<'a>(&'a AtomicUsize);

impl<'a> OpenGuard<'a> {
    fn new(open: &'a AtomicUsize) -> Self {
        let n = open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(MQTT_CONNECTIONS).set(n as f64);
        Self(open)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        let n = self.0.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        metrics::gauge!(MQTT_CONNECTIONS).set(n as f64);
    }
}

/// Reads until `buf` holds a complete packet; `Ok(None)` at a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Frame>, GateError> {
    loop {
        if let Some(frame) = packet::frame(buf, max)? {
            return Ok(Some(frame));
        }
        if reader.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum GateError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Packet(#[from] PacketError),
}

async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    certificate: Option<PeerCertificate>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let _open = OpenGuard::new(&shared.open);
    let (mut client_rd, mut client_wr) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(shared.buffer_bytes);

    // 1. CONNECT, within the connection timeout.
    let first = tokio::time::timeout(
        shared.connect_timeout,
        read_frame(&mut client_rd, &mut buf, shared.max_packet_bytes),
    )
    .await;
    let frame = match first {
        Ok(Ok(Some(f))) if f.kind == kind::CONNECT => f,
        Ok(Err(GateError::Packet(PacketError::TooLarge { .. }))) => {
            refused("packet_too_large");
            return;
        }
        Ok(Ok(Some(_))) => {
            refused("protocol_violation");
            return;
        }
        _ => return,
    };
    let connect = match packet::parse_connect(&buf, frame) {
        Ok(c) => c,
        Err(_) => {
            refused("protocol_violation");
            return;
        }
    };
    let _ = buf.split_to(frame.len);
    let identity = match shared
        .auth
        .authenticate(&connect, certificate.as_ref())
        .await
    {
        Ok(id) => id,
        Err(refusal) => {
            refused(refusal.reason);
            info!(%peer, client_id = %connect.client_id, reason = refusal.reason, "MQTT connection refused");
            let _ = client_wr.write_all(&packet::connack(refusal.code)).await;
            let _ = client_wr.shutdown().await;
            return;
        }
    };
    if let Some(will) = &connect.will
        && !may_publish(&identity, &will.topic)
    {
        refused("will_denied");
        let _ = client_wr
            .write_all(&packet::connack(packet::connack::NOT_AUTHORIZED))
            .await;
        return;
    }

    // 2. Hand the connection to rumqttd under the gate's credentials.
    let upstream = match TcpStream::connect(shared.upstream).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, error = %e, "cannot reach the embedded broker");
            let _ = client_wr
                .write_all(&packet::connack(packet::connack::SERVER_UNAVAILABLE))
                .await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let (mut up_rd, mut up_wr) = upstream.into_split();
    let rewritten = packet::Connect {
        username: Some(shared.upstream_user.clone()),
        password: Some(shared.upstream_password.clone().into_bytes()),
        ..connect
    }
    .encode();
    if up_wr.write_all(&rewritten).await.is_err() {
        return;
    }
    let number = shared.sessions.fetch_add(1, Ordering::Relaxed);
    let session = format!("{}-{number}", shared.session_prefix);
    let invalidated = CancellationToken::new();
    if let Ok(mut live) = shared.live.lock() {
        live.insert(number, (identity.clone(), invalidated.clone()));
    }
    let _live = LiveGuard(&shared, number);
    metrics::counter!(MQTT_CONNECTS, "auth" => identity.method.as_str()).increment(1);
    shared.connectivity.connected(
        &identity.meter_id,
        &session,
        identity.method.as_str(),
        peer.to_string(),
    );
    debug!(%peer, meter = %identity.meter_id, %session, "meter connected");

    // 3. Relay, checking every packet from the meter.
    let downstream = async {
        let mut b = vec![0u8; shared.buffer_bytes.max(512)];
        loop {
            match up_rd.read(&mut b).await {
                Ok(0) | Err(_) => return "broker_closed",
                Ok(n) => {
                    if client_wr.write_all(&b[..n]).await.is_err() {
                        return "client_gone";
                    }
                }
            }
        }
    };
    let upstream_relay = relay(&mut client_rd, &mut up_wr, buf, &identity, &shared);
    let reason = tokio::select! {
        r = downstream => r,
        r = upstream_relay => r,
        () = shutdown.cancelled() => "shutdown",
        () = invalidated.cancelled() => "identity_invalidated",
    };
    debug!(%peer, meter = %identity.meter_id, %session, reason, "meter disconnected");
    shared
        .connectivity
        .disconnected(&identity.meter_id, &session, reason);
}

/// Forwards the first `checked` bytes of `buf` (holding `publish_bytes` of publishes, in
/// rumqttd's measure) to rumqttd once the bridge's backlog has room for them; false if rumqttd
/// is gone.
async fn forward<W: AsyncWrite + Unpin>(
    upstream: &mut W,
    buf: &mut BytesMut,
    checked: usize,
    publish_bytes: usize,
    shared: &Shared,
) -> bool {
    if checked == 0 {
        return true;
    }
    if publish_bytes > 0 {
        shared.backlog.admit(publish_bytes).await;
    }
    if upstream.write_all(&buf[..checked]).await.is_err() {
        return false;
    }
    let _ = buf.split_to(checked);
    true
}

/// Token bucket for one connection's publishes.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Forwards the meter's packets to rumqttd after checking each; returns why it stopped.
async fn relay<R, W>(
    client: &mut R,
    upstream: &mut W,
    mut buf: BytesMut,
    identity: &Identity,
    shared: &Shared,
) -> &'static str
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let rate = shared.limits.publish_rate.max(0.001);
    let burst = f64::from(shared.limits.publish_burst.max(1));
    let mut bucket = Bucket {
        tokens: burst,
        at: Instant::now(),
    };
    loop {
        // Check every complete packet in the buffer, then forward them in one write.
        let mut checked = 0usize;
        let mut publish_bytes = 0usize;
        loop {
            let frame = match packet::frame(&buf[checked..], shared.max_packet_bytes) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(PacketError::TooLarge { .. }) => {
                    refused("packet_too_large");
                    return "packet_too_large";
                }
                Err(_) => {
                    refused("protocol_violation");
                    return "protocol_violation";
                }
            };
            let packet = &buf[checked..checked + frame.len];
            match frame.kind {
                kind::PUBLISH => {
                    let size = match packet::parse_publish(packet, frame) {
                        Ok(p) if may_publish(identity, p.topic) => {
                            log_size(p.topic.len(), p.payload.len())
                        }
                        Ok(packet::Publish { topic, .. }) => {
                            refused("publish_denied");
                            info!(meter = %identity.meter_id, topic, "publish to a foreign topic refused; closing");
                            return "publish_denied";
                        }
                        Err(_) => {
                            refused("protocol_violation");
                            return "protocol_violation";
                        }
                    };
                    // Refill, and wait for a token if the meter is over its rate.
                    let now = Instant::now();
                    bucket.tokens = (bucket.tokens
                        + now.duration_since(bucket.at).as_secs_f64() * rate)
                        .min(burst);
                    bucket.at = now;
                    let throttle = bucket.tokens < 1.0;
                    // Forward what is already checked first if the meter must wait, or if this
                    // publish would take the batch over what the bridge may have outstanding.
                    if throttle || publish_bytes + size > shared.backlog.limit() {
                        let forwarded = std::mem::take(&mut publish_bytes);
                        if !forward(upstream, &mut buf, checked, forwarded, shared).await {
                            return "broker_closed";
                        }
                        checked = 0;
                    }
                    if throttle {
                        metrics::counter!(MQTT_THROTTLED).increment(1);
                        let wait = (1.0 - bucket.tokens) / rate;
                        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
                        bucket.tokens = 1.0;
                        bucket.at = Instant::now();
                    }
                    bucket.tokens -= 1.0;
                    publish_bytes += size;
                    shared.connectivity.seen(&identity.meter_id);
                }
                kind::SUBSCRIBE => match packet::subscribe_filters(&buf[checked..], frame) {
                    Ok(filters) if filters.iter().all(|f| may_subscribe(identity, f)) => {}
                    Ok(filters) => {
                        refused("subscribe_denied");
                        info!(meter = %identity.meter_id, ?filters, "subscription refused; closing");
                        return "subscribe_denied";
                    }
                    Err(_) => {
                        refused("protocol_violation");
                        return "protocol_violation";
                    }
                },
                kind::PUBACK
                | kind::PUBREC
                | kind::PUBREL
                | kind::PUBCOMP
                | kind::UNSUBSCRIBE
                | kind::PINGREQ
                | kind::DISCONNECT => {}
                _ => {
                    refused("protocol_violation");
                    return "protocol_violation";
                }
            }
            checked += frame.len;
        }
        if !forward(upstream, &mut buf, checked, publish_bytes, shared).await {
            return "broker_closed";
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(shared.buffer_bytes);
        }
        match client.read_buf(&mut buf).await {
            Ok(0) => return "client_disconnect",
            Ok(_) => {}
            Err(_) => return "client_error",
        }
    }
}
