//! The built-in certificate authority for meter identities (ECDSA P-256).
//!
//! A CA lives in a directory: `ca.crt`, and `ca.key` readable by the owner only. A meter's
//! client certificate names the meter id as its subject CN; the broker accepts a certificate
//! only if it chains to the CA, is within its validity, names the connecting client id, and its
//! serial is recorded in the registry and not revoked ([`super::auth`]). A server certificate
//! serves the MQTT TLS and HTTPS listeners.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeDelta, Utc};
use meterstack_core::reading::MeterId;
use meterstack_core::store::secret::random_hex;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

/// Errors of the certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// There is no CA in the directory.
    #[error("no CA in {0} (run `meterstack certs init-ca` first)")]
    Missing(PathBuf),
    /// `init` would replace a CA.
    #[error(
        "a CA already exists in {0} (refusing to replace it: every issued certificate depends on it)"
    )]
    Exists(PathBuf),
    /// Generating or signing failed, or a file is not what it must be.
    #[error("certificate: {0}")]
    Certificate(String),
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        Self::Certificate(e.to_string())
    }
}

/// `Result` with [`CaError`].
pub type Result<T, E = CaError> = std::result::Result<T, E>;

/// A certificate and its private key, as PEM.
#[derive(Debug)]
pub struct Issued {
    /// The certificate (for a server: followed by the CA's, the chain).
    pub cert_pem: String,
    /// The certificate itself, DER.
    pub cert_der: Vec<u8>,
    /// Its private key.
    pub key_pem: String,
    /// Its serial, lowercase hex, as the registry records it.
    pub serial: String,
}

/// A loaded certificate authority.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// The CA's parameters; the same every time, so that certificates issued later name the CA
/// exactly as its own certificate does (subject and key identifier).
fn ca_params(not_before: DateTime<Utc>, not_after: DateTime<Utc>) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meterstack");
    dn.push(DnType::CommonName, "meterstack meter CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = to_time(not_before)?;
    params.not_after = to_time(not_after)?;
    Ok(params)
}

fn to_time(t: DateTime<Utc>) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|_| CaError::Certificate(format!("time {t} out of range")))
}

fn serial() -> SerialNumber {
    // 16 random bytes with the top bit clear: a positive DER integer of fixed length.
    let mut bytes = hex::decode(random_hex(16)).unwrap_or_else(|_| vec![1; 16]);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Writes `contents` to `path` (fsynced), readable by the owner only if `secret`.
pub fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    meterstack_core::files::write_synced(path, contents, secret).map_err(|source| CaError::Io {
        path: path.to_owned(),
        source,
    })
}

impl CertificateAuthority {
    /// Creates a CA valid for `days` in `dir` (refuses to replace one). Returns the path of
    /// its certificate.
    pub fn init(dir: &Path, days: i64) -> Result<PathBuf> {
        if dir.join("ca.key").exists() {
            return Err(CaError::Exists(dir.to_owned()));
        }
        let key = KeyPair::generate()?;
        let now = Utc::now();
        let cert = ca_params(now - TimeDelta::minutes(5), now + TimeDelta::days(days))?
            .self_signed(&key)?;
        write_file(&dir.join("ca.key"), &key.serialize_pem(), true)?;
        write_file(&dir.join("ca.crt"), &cert.pem(), false)?;
        Ok(dir.join("ca.crt"))
    }

    /// Loads the CA in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let key_pem = std::fs::read_to_string(dir.join("ca.key"))
            .map_err(|_| CaError::Missing(dir.to_owned()))?;
        let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).map_err(|source| CaError::Io {
            path: dir.join("ca.crt"),
            source,
        })?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|_| CaError::Certificate("the CA key is not a PEM private key".into()))?;
        let now = Utc::now();
        Ok(Self {
            issuer: Issuer::new(ca_params(now, now)?, key),
            ca_pem,
        })
    }

    /// The CA's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A client certificate for `meter`, valid from `not_before` to `not_after`.
    pub fn issue_meter(
        &self,
        meter: &MeterId,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<Issued> {
        if not_before >= not_after {
            return Err(CaError::Certificate(
                "the start of validity must lie before its end".into(),
            ));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, meter.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = to_time(not_before)?;
        params.not_after = to_time(not_after)?;
        self.sign(params, false)
    }

    /// A server certificate for `names` and `ips`, valid for `days`, followed by the CA's.
    pub fn issue_server(&self, names: &[String], ips: &[IpAddr], days: i64) -> Result<Issued> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("meterstack", String::as_str),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = to_time(Utc::now() - TimeDelta::minutes(5))?;
        params.not_after = to_time(Utc::now() + TimeDelta::days(days))?;
        self.sign(params, true)
    }

    fn sign(&self, mut params: CertificateParams, chain: bool) -> Result<Issued> {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(serial());
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let (_, serial) = meterstack_core::tls::certificate_identity(cert.der())
            .map_err(|e| CaError::Certificate(format!("issued certificate does not parse: {e}")))?;
        let cert_pem = if chain {
            format!("{}{}", cert.pem(), self.ca_pem)
        } else {
            cert.pem()
        };
        Ok(Issued {
            cert_pem,
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_meter_certificates_name_the_meter_and_chain_to_the_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let crt = CertificateAuthority::init(dir.path(), 10).expect("init");
        assert!(crt.exists());
        assert!(matches!(
            CertificateAuthority::init(dir.path(), 10),
            Err(CaError::Exists(_))
        ));
        let mode = std::fs::metadata(dir.path().join("ca.key"))
            .expect("key")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let ca = CertificateAuthority::load(dir.path()).expect("load");
        let meter = MeterId::new("m-1").expect("id");
        let now = Utc::now();
        let issued = ca
            .issue_meter(&meter, now, now + TimeDelta::days(1))
            .expect("issue");
        let (cn, serial) =
            meterstack_core::tls::certificate_identity(&issued.cert_der).expect("parse");
        assert_eq!(cn, "m-1");
        assert_eq!(serial, issued.serial);
        assert!(ca.issue_meter(&meter, now, now).is_err());
        let missing = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            CertificateAuthority::load(missing.path()),
            Err(CaError::Missing(_))
        ));
    }
}
