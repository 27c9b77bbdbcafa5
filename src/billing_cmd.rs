//! `meterstack tariffs …`: import tariff files (URDB records or the native form), list and
//! show the stored versions; `meterstack billing run`: bill every meter for a cycle.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{Datelike, NaiveDate};
use clap::Subcommand;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub(crate) enum TariffsCommand {
    /// Import a tariff file as a new version: an OpenEI URDB record (bare, or the API's
    /// `{"items": [...]}`) or meterstack's native form (JSON or TOML with `urdb`).
    Import {
        /// The file.
        file: PathBuf,
        /// The tariff's id (default: the native form's `id`, else the URDB `label`).
        #[arg(long)]
        id: Option<String>,
        /// First local date the version applies to (default: the native form's, else the
        /// URDB `startdate`).
        #[arg(long)]
        effective_from: Option<NaiveDate>,
    },
    /// List every stored version.
    List,
    /// Show one tariff's versions with their documents.
    Show {
        /// The tariff's id.
        tariff_id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum BillingCommand {
    /// Bill every meter with a tariff for the cycle starting in a month, into the SQL store
    /// (SQL table `bills`). Idempotent: a bill that changed since the last run (late data)
    /// becomes a new revision; the old one is kept.
    Run {
        /// The month, `YYYY-MM`.
        #[arg(long)]
        period: String,
    },
}

#[allow(clippy::print_stdout)]
pub(crate) async fn billing(command: BillingCommand, config: &Config) -> anyhow::Result<()> {
    let BillingCommand::Run { period } = command;
    let month = NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
        .with_context(|| format!("--period {period:?} is not YYYY-MM"))?;
    anyhow::ensure!(
        (1900..=9999).contains(&month.year()),
        "--period {period:?}: the year must lie in 1900 … 9999"
    );
    let store = config.open_store().await?;
    // A run reads whole months of the trusted zone: no HTTP query deadline.
    let mut query = config.http.query.clone();
    query.timeout = std::time::Duration::from_secs(24 * 3600);
    let lake = meterstack_lake::query::Lake::new(config.lake.build(&config.data_dir)?, query)?
        .with_store(store.clone());
    let tz = config.billing.tz().map_err(anyhow::Error::msg)?;
    let step = chrono::Duration::from_std(config.pipeline.interval)?;
    let started = std::time::Instant::now();
    let report = meterstack_billing::run::run(&lake, &store, tz, step, month).await?;
    println!(
        "period {}: {} meters with a tariff, {} new bills, {} revised, {} unchanged, {} not billed ({:.1} s)",
        report.period,
        report.meters,
        report.new,
        report.revised,
        report.unchanged,
        report.failed.len(),
        started.elapsed().as_secs_f64()
    );
    for (meter, why) in report.failed.iter().take(20) {
        println!("not billed: {meter}: {why}");
    }
    if report.failed.len() > 20 {
        println!("not billed: … and {} more", report.failed.len() - 20);
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
pub(crate) async fn tariffs(command: TariffsCommand, config: &Config) -> anyhow::Result<()> {
    let store = config.open_store().await?;
    match command {
        TariffsCommand::Import {
            file,
            id,
            effective_from,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let v = meterstack_billing::import_tariff(&store, &text, id.as_deref(), effective_from)
                .await
                .with_context(|| format!("{} not imported", file.display()))?;
            println!(
                "tariff {} version {} from {}{}: {}",
                v.tariff_id,
                v.version,
                v.effective_from,
                v.effective_to
                    .map(|d| format!(" to {d}"))
                    .unwrap_or_default(),
                v.name
            );
        }
        TariffsCommand::List => {
            for v in store.tariff_versions(None).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    v.tariff_id,
                    v.version,
                    v.effective_from,
                    v.effective_to
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "-".into()),
                    v.currency,
                    v.name
                );
            }
        }
        TariffsCommand::Show { tariff_id } => {
            let versions = store.tariff_versions(Some(&tariff_id)).await?;
            anyhow::ensure!(!versions.is_empty(), "tariff {tariff_id} not found");
            for v in versions {
                let document: serde_json::Value = serde_json::from_str(&v.document)?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "tariff_id": v.tariff_id,
                        "version": v.version,
                        "effective_from": v.effective_from,
                        "effective_to": v.effective_to,
                        "imported_at": v.imported_at,
                        "document": document,
                    }))?
                );
            }
        }
    }
    Ok(())
}
