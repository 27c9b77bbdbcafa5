//! The gate: meterstack's own TCP listener in front of rumqttd.
//!
//! Meters connect to the gate; each connection is spliced byte for byte to rumqttd, which
//! listens on loopback only. rumqttd has no shutdown API and acknowledges a QoS 1 publish as
//! soon as its router holds it, so without the gate it would go on acknowledging publishes
//! after the bridge's last read, and those would be lost. On shutdown the gate stops
//! accepting and closes every meter connection first; the bridge then drains whatever rumqttd
//! still holds. A publish whose PUBACK was cut off is unacknowledged, so the meter sends it
//! again: at-least-once, never lost.
//!
//! The splice buffers are small (`buffer_bytes` each way) so that 100,000 idle meter
//! connections cost little memory.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// The gate's listener and where it forwards to.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) listener: TcpListener,
    pub(crate) upstream: SocketAddr,
    pub(crate) buffer_bytes: usize,
}

impl Gate {
    /// Accepts and splices connections until `shutdown`; then closes every connection and
    /// returns once all are closed.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((client, peer)) => {
                    connections.spawn(splice(
                        client,
                        peer,
                        self.upstream,
                        self.buffer_bytes,
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "cannot accept MQTT connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        drop(self.listener);
        connections.close();
        let open = connections.len();
        connections.wait().await;
        info!(closed = open, "MQTT gate closed every meter connection");
    }
}

async fn splice(
    mut client: TcpStream,
    peer: SocketAddr,
    upstream: SocketAddr,
    buffer: usize,
    shutdown: CancellationToken,
) {
    let mut server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, error = %e, "cannot reach the embedded broker");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        result = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut server, buffer, buffer) => {
            if let Err(e) = result {
                debug!(%peer, error = %e, "MQTT connection ended");
            }
        }
        () = shutdown.cancelled() => {}
    }
}
