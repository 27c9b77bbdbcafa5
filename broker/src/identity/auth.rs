//! Who a connecting meter is: its certificate, its secret, or (development mode only) its word.
//!
//! The identity binds the connection to one meter id; the gate then lets it publish only under
//! `meters/{id}/` and subscribe only to `meters/{id}/commands`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use meterstack_core::metrics::METERS_AUTO_REGISTERED;
use meterstack_core::reading::MeterId;
use meterstack_core::store::SqlStore;
use meterstack_core::store::meters::{MeterCredentials, MeterStatus};
use meterstack_core::store::secret::{sha256_hex, verify_meter_secret};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use meterstack_core::mqtt::{Connect, connack};
use meterstack_core::wire::commands_topic;

/// How a meter proved who it is, with what must stay true for its connection to stay open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Method {
    /// A client certificate: its serial must stay unrevoked.
    Certificate { serial: String },
    /// A secret: the stored hash it matched must stay the meter's.
    Secret { hash: String },
    /// Development mode: no proof.
    None,
}

impl Method {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            Self::Certificate { .. } => "certificate",
            Self::Secret { .. } => "secret",
            Self::None => "none",
        }
    }
}

/// The meter a connection speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) meter_id: MeterId,
    pub(crate) method: Method,
}

/// A verified client certificate's subject CN and serial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerCertificate {
    pub(crate) common_name: String,
    pub(crate) serial: String,
}

/// Why a connection, publish or subscription was refused: a stable `reason` for the metric
/// label and the log, and the CONNACK code for refused connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) reason: &'static str,
    pub(crate) code: u8,
}

const fn refuse(reason: &'static str, code: u8) -> Refusal {
    Refusal { reason, code }
}

/// Every reason the gate refuses a connection, publish or subscription for (the `reason` label
/// of `meterstack_mqtt_refused_total`).
pub const REFUSAL_REASONS: [&str; 23] = [
    "bad_protocol",
    "bad_client_id",
    "no_credentials",
    "bad_credentials",
    "unknown_meter",
    "decommissioned",
    "client_id_mismatch",
    "unknown_certificate",
    "certificate_revoked",
    "certificate_mismatch",
    "tls_untrusted",
    "tls_expired",
    "tls_not_yet_valid",
    "tls_revoked",
    "tls_handshake",
    "publish_denied",
    "subscribe_denied",
    "will_denied",
    "packet_too_large",
    "protocol_violation",
    "max_connections",
    "store_unavailable",
    "credentials_changed",
];

/// Verifies identities against the registry.
#[derive(Debug)]
pub(crate) struct Authenticator {
    store: SqlStore,
    dev: bool,
    /// Argon2 runs on blocking threads, at most this many at once, so that a reconnect storm
    /// cannot take every core from ingestion.
    hashing: Semaphore,
    /// Secrets verified since start: meter → (stored hash, SHA-256 of the secret). A
    /// reconnect with the same secret skips Argon2; a changed stored hash invalidates it.
    verified: Mutex<HashMap<MeterId, (String, String)>>,
}

const MAX_CACHED: usize = 1_000_000;

impl Authenticator {
    pub(crate) fn new(store: SqlStore, dev: bool) -> Arc<Self> {
        if dev {
            warn!(
                "DEVELOPMENT MODE: meters may connect WITHOUT CREDENTIALS and unknown meters are REGISTERED AUTOMATICALLY. Never run a production system with --dev."
            );
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Arc::new(Self {
            store,
            dev,
            hashing: Semaphore::new(threads.div_ceil(2)),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Decides who `connect` (arriving with `certificate`, if any) is.
    pub(crate) async fn authenticate(
        &self,
        connect: &Connect,
        certificate: Option<&PeerCertificate>,
    ) -> Result<Identity, Refusal> {
        if connect.level != 4 || connect.protocol != "MQTT" {
            return Err(refuse("bad_protocol", connack::UNACCEPTABLE_PROTOCOL));
        }
        let meter_id = MeterId::new(&connect.client_id)
            .map_err(|_| refuse("bad_client_id", connack::IDENTIFIER_REJECTED))?;
        if let Some(user) = &connect.username
            && user != meter_id.as_str()
        {
            return Err(refuse("client_id_mismatch", connack::NOT_AUTHORIZED));
        }
        let store_error = |e: meterstack_core::store::StoreError| {
            warn!(error = %e, "cannot authenticate a meter: the SQL store is unavailable");
            refuse("store_unavailable", connack::SERVER_UNAVAILABLE)
        };
        let mut creds = self
            .store
            .meter_credentials(&meter_id)
            .await
            .map_err(store_error)?;
        let method = match (certificate, &connect.password) {
            (Some(cert), _) => {
                if cert.common_name != meter_id.as_str() {
                    return Err(refuse("client_id_mismatch", connack::NOT_AUTHORIZED));
                }
                let record = self
                    .store
                    .certificate(&cert.serial)
                    .await
                    .map_err(store_error)?
                    .ok_or(refuse("unknown_certificate", connack::NOT_AUTHORIZED))?;
                if record.meter_id != meter_id {
                    return Err(refuse("certificate_mismatch", connack::NOT_AUTHORIZED));
                }
                if record.revoked_at.is_some() {
                    return Err(refuse("certificate_revoked", connack::NOT_AUTHORIZED));
                }
                Method::Certificate {
                    serial: cert.serial.clone(),
                }
            }
            (None, Some(password)) => {
                let hash = creds
                    .as_ref()
                    .ok_or(refuse("unknown_meter", connack::BAD_CREDENTIALS))?
                    .secret_hash
                    .clone()
                    .ok_or(refuse("bad_credentials", connack::BAD_CREDENTIALS))?;
                if !self.verify(&meter_id, password, hash.clone()).await {
                    return Err(refuse("bad_credentials", connack::BAD_CREDENTIALS));
                }
                Method::Secret { hash }
            }
            (None, None) if connect.username.is_some() => {
                return Err(refuse("bad_credentials", connack::BAD_CREDENTIALS));
            }
            (None, None) if !self.dev => {
                return Err(refuse("no_credentials", connack::NOT_AUTHORIZED));
            }
            (None, None) => {
                if creds.is_none() {
                    if self
                        .store
                        .auto_register(&meter_id)
                        .await
                        .map_err(store_error)?
                    {
                        metrics::counter!(METERS_AUTO_REGISTERED).increment(1);
                        info!(meter = %meter_id, "development mode: registered an unknown meter");
                    }
                    creds = Some(MeterCredentials {
                        status: MeterStatus::Active,
                        secret_hash: None,
                    });
                }
                Method::None
            }
        };
        // Every method: the meter must be registered and in service.
        match creds.map(|c| c.status) {
            None => return Err(refuse("unknown_meter", connack::NOT_AUTHORIZED)),
            Some(MeterStatus::Decommissioned) => {
                return Err(refuse("decommissioned", connack::NOT_AUTHORIZED));
            }
            Some(MeterStatus::Active) => {}
        }
        Ok(Identity { meter_id, method })
    }

    /// Whether an open connection's identity still holds: the meter registered and active,
    /// its certificate unrevoked, its secret unchanged. `Some(reason)` if not. A store that
    /// cannot answer keeps the connection (it was valid; the next round asks again).
    pub(crate) async fn revalidate(&self, identity: &Identity) -> Option<&'static str> {
        let creds = match self.store.meter_credentials(&identity.meter_id).await {
            Ok(Some(creds)) => creds,
            Ok(None) => return Some("unknown_meter"),
            Err(_) => return None,
        };
        if creds.status == MeterStatus::Decommissioned {
            return Some("decommissioned");
        }
        match &identity.method {
            Method::Certificate { serial } => match self.store.certificate(serial).await {
                Ok(Some(c)) if c.revoked_at.is_none() => None,
                Ok(_) => Some("certificate_revoked"),
                Err(_) => None,
            },
            Method::Secret { hash } => (creds.secret_hash.as_deref() != Some(hash.as_str()))
                .then_some("credentials_changed"),
            Method::None => None,
        }
    }

    async fn verify(&self, meter_id: &MeterId, password: &[u8], hash: String) -> bool {
        let Ok(password) = std::str::from_utf8(password).map(str::to_owned) else {
            return false;
        };
        let fingerprint = sha256_hex(password.as_bytes());
        if let Ok(cache) = self.verified.lock()
            && cache.get(meter_id) == Some(&(hash.clone(), fingerprint.clone()))
        {
            return true;
        }
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        let stored = hash.clone();
        let ok = tokio::task::spawn_blocking(move || verify_meter_secret(&password, &stored))
            .await
            .unwrap_or(false);
        if ok && let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(meter_id.clone(), (hash, fingerprint));
        }
        ok
    }
}

/// The topics a meter may publish to: `meters/{own id}/{format}`, not its command topic.
pub(crate) fn may_publish(identity: &Identity, topic: &str) -> bool {
    let mut parts = topic.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("meters"), Some(id), Some(format), None)
            if id == identity.meter_id.as_str()
                && format != "commands"
                && !format.is_empty()
                && !format.contains(['+', '#'])
    )
}

/// The only filter a meter may subscribe to: its own command topic, spelled out.
pub(crate) fn may_subscribe(identity: &Identity, filter: &str) -> bool {
    filter == commands_topic(&identity.meter_id)
}
