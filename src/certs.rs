//! `meterstack certs …`: the command line of the built-in certificate authority for meter
//! identities ([`meterstack_broker::identity::ca`]).
//!
//! `init-ca` creates a CA in `<data-dir>/ca/`. `issue METER_ID` signs a client certificate
//! whose subject CN is the meter id and records its serial in the registry. `server` signs a
//! certificate for the MQTT TLS and HTTPS listeners. `revoke` takes effect at the meter's next
//! connection attempt.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::bail;
use chrono::{DateTime, TimeDelta, Utc};
use meterstack_broker::identity::ca::{CertificateAuthority, write_file};
use meterstack_core::reading::MeterId;

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

#[allow(clippy::print_stdout)]
pub(crate) async fn run(command: CertsCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        CertsCommand::InitCa { days } => {
            let crt = CertificateAuthority::init(&ca_dir(config), days)?;
            println!(
                "CA created: {} (key {}, mode 0600)",
                crt.display(),
                ca_dir(config).join("ca.key").display()
            );
            println!(
                "configure the broker with mqtt.tls.client_ca = \"{}\"",
                crt.display()
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
            let store = config.open_store().await?;
            anyhow::ensure!(
                store.meter(&meter_id).await?.is_some(),
                "meter {meter_id} is not registered (meterstack meters add {meter_id} …)"
            );
            let ca = CertificateAuthority::load(&ca_dir(config))?;
            let not_before = not_before.unwrap_or_else(|| Utc::now() - TimeDelta::minutes(5));
            let not_after = not_after.unwrap_or_else(|| Utc::now() + TimeDelta::days(days));
            anyhow::ensure!(
                not_before < not_after,
                "--not-before must lie before --not-after"
            );
            let issued = ca.issue_meter(&meter_id, not_before, not_after)?;
            store
                .record_certificate(&issued.serial, &meter_id, not_before, not_after)
                .await?;
            let out = out.unwrap_or_else(|| config.data_dir.join("certs"));
            let crt = out.join(format!("{meter_id}.crt"));
            let key_path = out.join(format!("{meter_id}.key"));
            write_file(&crt, &issued.cert_pem, false)?;
            write_file(&key_path, &issued.key_pem, true)?;
            write_file(&out.join("ca.crt"), ca.ca_pem(), false)?;
            println!("serial {}", issued.serial);
            println!("certificate {}", crt.display());
            println!("key {}", key_path.display());
        }
        CertsCommand::Server {
            names,
            ips,
            out,
            days,
        } => {
            let ca = CertificateAuthority::load(&ca_dir(config))?;
            let issued = ca.issue_server(&names, &ips, days)?;
            let out = out.unwrap_or_else(|| config.data_dir.join("certs"));
            write_file(&out.join("server.crt"), &issued.cert_pem, false)?;
            write_file(&out.join("server.key"), &issued.key_pem, true)?;
            println!("certificate {}", out.join("server.crt").display());
            println!("key {}", out.join("server.key").display());
        }
        CertsCommand::Revoke { serial, meter } => {
            let store = config.open_store().await?;
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
            let store = config.open_store().await?;
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
