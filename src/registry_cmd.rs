//! `meterstack meters …` and `meterstack keys …`: the registry and API keys from the shell,
//! against the same SQL store the server uses (safe while it runs).

use std::path::PathBuf;

use anyhow::Context;
use chrono::NaiveDate;
use meterstack_core::reading::MeterId;
use meterstack_core::store::keys::Role;
use meterstack_core::store::meters::{MeterClass, MeterFields, MeterFilter, MeterStatus};

use crate::config::Config;

/// Meter registry commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum MetersCommand {
    /// Register a meter.
    Add {
        /// The meter id (its MQTT client id).
        meter_id: String,
        #[command(flatten)]
        fields: FieldArgs,
        /// Also generate its secret (printed once).
        #[arg(long)]
        secret: bool,
    },
    /// List meters (JSON lines), optionally filtered.
    List {
        /// Only this feeder.
        #[arg(long)]
        feeder: Option<String>,
        /// Only this class.
        #[arg(long)]
        class: Option<MeterClass>,
        /// Only this status.
        #[arg(long)]
        status: Option<MeterStatus>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Show one meter with its connectivity (JSON).
    Show {
        /// The meter.
        meter_id: String,
    },
    /// Create or update meters from a CSV file with a header row of field names (meter_id,
    /// site_ref, customer_ref, feeder, transformer, lat, lon, meter_class, rated_current_a,
    /// tariff_id, status, installed_on, exchanged_on). All rows or none.
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// Generate a new secret for a meter (printed once; the old one stops working).
    Secret {
        /// The meter.
        meter_id: String,
    },
}

/// Descriptive fields of `meters add`.
#[derive(Debug, clap::Args)]
pub(crate) struct FieldArgs {
    /// Site reference.
    #[arg(long)]
    site_ref: Option<String>,
    /// Customer reference.
    #[arg(long)]
    customer_ref: Option<String>,
    /// Feeder.
    #[arg(long)]
    feeder: Option<String>,
    /// Transformer.
    #[arg(long)]
    transformer: Option<String>,
    /// Latitude.
    #[arg(long, allow_hyphen_values = true)]
    lat: Option<f64>,
    /// Longitude.
    #[arg(long, allow_hyphen_values = true)]
    lon: Option<f64>,
    /// Class.
    #[arg(long)]
    class: Option<MeterClass>,
    /// Rated maximum current, A.
    #[arg(long)]
    rated_current_a: Option<f64>,
    /// Tariff.
    #[arg(long)]
    tariff_id: Option<String>,
    /// Installation date (YYYY-MM-DD).
    #[arg(long)]
    installed_on: Option<NaiveDate>,
}

impl FieldArgs {
    fn into_fields(self) -> MeterFields {
        MeterFields {
            site_ref: self.site_ref.map(Some),
            customer_ref: self.customer_ref.map(Some),
            feeder: self.feeder.map(Some),
            transformer: self.transformer.map(Some),
            lat: self.lat.map(Some),
            lon: self.lon.map(Some),
            meter_class: self.class.map(Some),
            rated_current_a: self.rated_current_a.map(Some),
            tariff_id: self.tariff_id.map(Some),
            installed_on: self.installed_on.map(Some),
            ..MeterFields::default()
        }
    }
}

/// API key commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key (printed once).
    Create {
        /// What the key may do.
        #[arg(long)]
        role: Role,
        /// What it is for.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (never their secrets).
    List,
    /// Revoke a key by id.
    Revoke {
        /// The key id (`msk_<id>_…`).
        key_id: String,
    },
}

#[allow(clippy::print_stdout)]
pub(crate) async fn meters(command: MetersCommand, config: &Config) -> anyhow::Result<()> {
    let store = config.open_store().await?;
    match command {
        MetersCommand::Add {
            meter_id,
            fields,
            secret,
        } => {
            let id = MeterId::new(&meter_id)?;
            let meter = store.create_meter(&id, &fields.into_fields()).await?;
            println!("{}", serde_json::to_string(&meter)?);
            if secret {
                println!("secret {}", store.rotate_meter_secret(&id).await?);
            }
        }
        MetersCommand::List {
            feeder,
            class,
            status,
            limit,
        } => {
            let mut filter = MeterFilter {
                feeder,
                meter_class: class,
                status,
                limit: Some(1000),
                ..MeterFilter::default()
            };
            let mut printed = 0;
            'pages: loop {
                let page = store.list_meters(&filter).await?;
                if page.is_empty() {
                    break;
                }
                filter.after = page.last().map(|m| m.meter_id.to_string());
                for m in page {
                    if printed == limit {
                        break 'pages;
                    }
                    println!("{}", serde_json::to_string(&m)?);
                    printed += 1;
                }
            }
        }
        MetersCommand::Show { meter_id } => {
            let id = MeterId::new(&meter_id)?;
            let view = store
                .meter_view(&id)
                .await?
                .with_context(|| format!("meter {id} is not registered"))?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        MetersCommand::Import { file } => {
            let rows = read_csv(&file)?;
            let (created, updated) = store.upsert_meters(&rows).await?;
            println!(
                "imported {}: {created} created, {updated} updated",
                file.display()
            );
        }
        MetersCommand::Secret { meter_id } => {
            let id = MeterId::new(&meter_id)?;
            println!("secret {}", store.rotate_meter_secret(&id).await?);
        }
    }
    Ok(())
}

/// Every row of a registry CSV, or the first error with its line number.
fn read_csv(file: &PathBuf) -> anyhow::Result<Vec<(MeterId, MeterFields)>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let headers = reader.headers()?.clone();
    anyhow::ensure!(
        headers.iter().any(|h| h == "meter_id"),
        "{}: the header row has no meter_id column",
        file.display()
    );
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{} line {line}", file.display()))?;
        let mut meter_id = None;
        let mut cells = Vec::new();
        for (name, value) in headers.iter().zip(record.iter()) {
            if name == "meter_id" {
                meter_id = Some(value);
            } else {
                cells.push((name, value));
            }
        }
        let id = MeterId::new(meter_id.unwrap_or_default())
            .with_context(|| format!("{} line {line}: meter_id", file.display()))?;
        let fields = MeterFields::from_cells(cells)
            .with_context(|| format!("{} line {line}", file.display()))?;
        rows.push((id, fields));
    }
    Ok(rows)
}

#[allow(clippy::print_stdout)]
pub(crate) async fn keys(command: KeysCommand, config: &Config) -> anyhow::Result<()> {
    let store = config.open_store().await?;
    match command {
        KeysCommand::Create { role, name } => {
            let (key, plaintext) = store.create_api_key(role, &name).await?;
            println!("key_id {} role {}", key.key_id, key.role.as_str());
            println!("{plaintext}");
        }
        KeysCommand::List => {
            for key in store.api_keys().await? {
                println!("{}", serde_json::to_string(&key)?);
            }
        }
        KeysCommand::Revoke { key_id } => {
            let key = store.revoke_api_key(&key_id).await?;
            println!("revoked {} ({})", key.key_id, key.role.as_str());
        }
    }
    Ok(())
}
