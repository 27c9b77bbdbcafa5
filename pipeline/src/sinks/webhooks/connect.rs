//! The webhook client's TCP connector: resolves the target, refuses addresses the
//! [`EgressPolicy`] does not permit before connecting, and checks the connected peer again,
//! so DNS rebinding and numeric spellings of private addresses do not get through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use meterstack_core::egress::{EgressError, EgressPolicy};
use tokio::net::TcpStream;

/// Why a connection was not made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The guard refused the target.
    #[error("{0}")]
    Refused(#[from] EgressError),
    /// The target is not a URL with a host.
    #[error("invalid target {0}")]
    Target(String),
    /// No permitted address accepted a connection.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// host:port.
        target: String,
        /// The last failure.
        reason: String,
    },
}

/// A `tower::Service<Uri>` connector for hyper that only connects to permitted addresses.
#[derive(Debug, Clone)]
pub struct GuardedConnector {
    policy: Arc<EgressPolicy>,
    connect_timeout: Duration,
}

impl GuardedConnector {
    /// A connector under `policy`.
    pub fn new(policy: EgressPolicy, connect_timeout: Duration) -> Self {
        Self {
            policy: Arc::new(policy),
            connect_timeout,
        }
    }

    /// Connects to the host of `uri`.
    pub async fn connect(&self, uri: &Uri) -> Result<TcpStream, ConnectError> {
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::Target(uri.to_string()))?;
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let mut reason = String::from("no address");
        let addrs = self.policy.resolve(host, port).await.map_err(|e| match e {
            EgressError::Resolve { host, reason } => ConnectError::Connect {
                target: format!("{host}:{port}"),
                reason,
            },
            refused => ConnectError::Refused(refused),
        })?;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    // The address actually connected to, whatever resolved.
                    let peer = stream.peer_addr().map_err(|e| ConnectError::Connect {
                        target: format!("{host}:{port}"),
                        reason: e.to_string(),
                    })?;
                    self.policy.permits(peer.ip())?;
                    // Webhooks are small requests: send them at once.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => reason = format!("{addr}: {e}"),
                Err(_) => reason = format!("{addr}: connect timed out"),
            }
        }
        Err(ConnectError::Connect {
            target: format!("{host}:{port}"),
            reason,
        })
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&uri).await.map(TokioIo::new) })
    }
}
