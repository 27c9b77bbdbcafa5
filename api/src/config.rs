use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Section `[http]` of `meterstack.toml`: the HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the API listens on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Limits of `POST /api/v1/query`.
    pub query: QueryConfig,
    /// HTTPS.
    pub tls: HttpTlsConfig,
    /// The live feed (`/api/v1/live`).
    pub live: crate::live::LiveConfig,
}

/// Section `[http.tls]`: HTTPS. Off while `cert` is empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTlsConfig {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

impl HttpTlsConfig {
    /// Whether HTTPS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_body_bytes: 1024 * 1024,
            query: QueryConfig::default(),
            tls: HttpTlsConfig::default(),
            live: crate::live::LiveConfig::default(),
        }
    }
}

pub use meterstack_lake::query::QueryConfig;
