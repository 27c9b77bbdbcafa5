//! `meterstack certs …`: the built-in certificate authority for meter identities.
//!
//! `init-ca` creates a CA (ECDSA P-256) in `<data-dir>/ca/` (`ca.crt`, and `ca.key` readable by
//! the owner only). `issue METER_ID` signs a client certificate whose subject CN is the meter
//! id and records its serial in the registry; the broker accepts a certificate only if it
//! chains to the CA, is within its validity, names the connecting client id, and its serial
//! is recorded and not revoked. `server` signs a certificate for the MQTT TLS and HTTPS
//! listeners. `revoke` takes effect at the meter's next connection attempt.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use meterstack_core::reading::MeterId;
use meterstack_core::store::SqlStore;
use meterstack_core::store::secret::random_hex;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::config::Config;

/// Certificate authority commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum CertsCommand {
    /// Create the meter CA in <data-dir>/ca (refuses to overwrite one).
    InitCa {
        /// Validity of the CA, in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a client certificate for a registered meter (subject CN = meter id).
    Issue {
        /// The meter.
        meter_id: String,
        /// Directory for METER_ID.crt and METER_ID.key [default: <data-dir>/certs]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity in days from now.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// Explicit start of validity (RFC 3339), instead of now.
        #[arg(long)]
        not_before: Option<DateTime<Utc>>,
        /// Explicit end of validity (RFC 3339), instead of --days.
        #[arg(long)]
        not_after: Option<DateTime<Utc>>,
    },
    /// Issue a server certificate for the MQTT TLS and HTTPS listeners.
    Server {
        /// DNS names the server is reached by.
        #[arg(long = "name", default_value = "localhost")]
        names: Vec<String>,
        /// IP addresses the server is reached by.
        #[arg(long = "ip")]
        ips: Vec<IpAddr>,
        /// Directory for server.crt and server.key [default: <data-dir>/certs]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Validity in days.
        #[arg(long, default_value_t = 825)]
        days: i64,
    },
    /// Revoke a meter certificate by serial (hex), or every certificate of --meter.
    Revoke {
        /// Serial number, as `certs list` shows it.
        serial: Option<String>,
        /// Revoke every certificate of this meter.
        #[arg(long)]
        meter: Option<String>,
    },
    /// List the certificates issued to a meter.
    List {
        /// The meter.
        meter_id: String,
    },
}

fn ca_dir(config: &Config) -> PathBuf {
    config.data_dir.join("ca")
}

/// The CA's parameters; the same every time, so that certificates issued later name the CA
/// exactly as its own certificate does (subject and key identifier).
fn ca_params(
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> anyhow::Result<CertificateParams> {
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

fn to_time(t: DateTime<Utc>) -> anyhow::Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .with_context(|| format!("time {t} out of range"))
}

/// Writes `contents` to `path` (fsynced), readable by the owner only if `secret`.
pub(crate) fn write(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all()?;
    Ok(())
}

fn load_issuer(config: &Config) -> anyhow::Result<(Issuer<'static, KeyPair>, String)> {
    let dir = ca_dir(config);
    let key_pem = std::fs::read_to_string(dir.join("ca.key")).with_context(|| {
        format!(
            "no CA in {} (run `meterstack certs init-ca` first)",
            dir.display()
        )
    })?;
    let ca_pem = std::fs::read_to_string(dir.join("ca.crt"))
        .with_context(|| format!("cannot read {}", dir.join("ca.crt").display()))?;
    let key = KeyPair::from_pem(&key_pem).context("the CA key is not a PEM private key")?;
    let now = Utc::now();
    Ok((Issuer::new(ca_params(now, now)?, key), ca_pem))
}

fn serial() -> SerialNumber {
    // 16 random bytes with the top bit clear: a positive DER integer of fixed length.
    let mut bytes = hex::decode(random_hex(16)).unwrap_or_else(|_| vec![1; 16]);
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(command: CertsCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        CertsCommand::InitCa { days } => {
            let dir = ca_dir(config);
            if dir.join("ca.key").exists() {
                bail!(
                    "a CA already exists in {} (refusing to replace it: every issued certificate depends on it)",
                    dir.display()
                );
            }
            let key = KeyPair::generate()?;
            let now = Utc::now();
            let cert = ca_params(now - TimeDelta::minutes(5), now + TimeDelta::days(days))?
                .self_signed(&key)?;
            write(&dir.join("ca.key"), &key.serialize_pem(), true)?;
            write(&dir.join("ca.crt"), &cert.pem(), false)?;
            println!(
                "CA created: {} (key {}, mode 0600)",
                dir.join("ca.crt").display(),
                dir.join("ca.key").display()
            );
            println!(
                "configure the broker with mqtt.tls.client_ca = \"{}\"",
                dir.join("ca.crt").display()
            );
        }
        CertsCommand::Issue {
            meter_id,
            out,
            days,
            not_before,
            not_after,
        } => {
            let meter_id = MeterId::new(&meter_id)?;
            let store = open_store(config).await?;
            anyhow::ensure!(
                store.meter(&meter_id).await?.is_some(),
                "meter {meter_id} is not registered (meterstack meters add {meter_id} …)"
            );
            let (issuer, ca_pem) = load_issuer(config)?;
            let not_before = not_before.unwrap_or_else(|| Utc::now() - TimeDelta::minutes(5));
            let not_after = not_after.unwrap_or_else(|| Utc::now() + TimeDelta::days(days));
            anyhow::ensure!(
                not_before < not_after,
                "--not-before must lie before --not-after"
            );
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, meter_id.as_str());
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.use_authority_key_identifier_extension = true;
            params.serial_number = Some(serial());
            params.not_before = to_time(not_before)?;
            params.not_after = to_time(not_after)?;
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            let (_, serial) = meterstack_core::tls::certificate_identity(cert.der())
                .map_err(|e| anyhow::anyhow!("issued certificate does not parse: {e}"))?;
            store
                .record_certificate(&serial, &meter_id, not_before, not_after)
                .await?;
            let out = out.unwrap_or_else(|| config.data_dir.join("certs"));
            let crt = out.join(format!("{meter_id}.crt"));
            let key_path = out.join(format!("{meter_id}.key"));
            write(&crt, &cert.pem(), false)?;
            write(&key_path, &key.serialize_pem(), true)?;
            write(&out.join("ca.crt"), &ca_pem, false)?;
            println!("serial {serial}");
            println!("certificate {}", crt.display());
            println!("key {}", key_path.display());
        }
        CertsCommand::Server {
            names,
            ips,
            out,
            days,
        } => {
            let (issuer, ca_pem) = load_issuer(config)?;
            let mut params = CertificateParams::new(names.clone())?;
            params
                .subject_alt_names
                .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(
                DnType::CommonName,
                names.first().map_or("meterstack", String::as_str),
            );
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.use_authority_key_identifier_extension = true;
            params.serial_number = Some(serial());
            params.not_before = to_time(Utc::now() - TimeDelta::minutes(5))?;
            params.not_after = to_time(Utc::now() + TimeDelta::days(days))?;
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            let out = out.unwrap_or_else(|| config.data_dir.join("certs"));
            // The chain: the server certificate, then the CA.
            write(
                &out.join("server.crt"),
                &format!("{}{}", cert.pem(), ca_pem),
                false,
            )?;
            write(&out.join("server.key"), &key.serialize_pem(), true)?;
            println!("certificate {}", out.join("server.crt").display());
            println!("key {}", out.join("server.key").display());
        }
        CertsCommand::Revoke { serial, meter } => {
            let store = open_store(config).await?;
            let serials: Vec<String> = match (serial, meter) {
                (Some(s), None) => vec![s.to_ascii_lowercase()],
                (None, Some(m)) => store
                    .certificates(&MeterId::new(&m)?)
                    .await?
                    .into_iter()
                    .filter(|c| c.revoked_at.is_none())
                    .map(|c| c.serial)
                    .collect(),
                _ => bail!("give a SERIAL or --meter METER_ID"),
            };
            for s in serials {
                let record = store.revoke_certificate(&s).await?;
                println!("revoked {} (meter {})", record.serial, record.meter_id);
            }
        }
        CertsCommand::List { meter_id } => {
            let store = open_store(config).await?;
            for c in store.certificates(&MeterId::new(&meter_id)?).await? {
                println!(
                    "{}\tnot_before={}\tnot_after={}\t{}",
                    c.serial,
                    c.not_before.to_rfc3339(),
                    c.not_after.to_rfc3339(),
                    c.revoked_at.map_or("valid".to_owned(), |t| format!(
                        "revoked {}",
                        t.to_rfc3339()
                    ))
                );
            }
        }
    }
    Ok(())
}

/// Opens the SQL store the configuration names (creating the data directory for SQLite).
pub(crate) async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    Ok(config.store.build(&config.data_dir).await?)
}
