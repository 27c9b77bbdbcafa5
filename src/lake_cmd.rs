//! `meterstack etl` (one ETL run with a progress bar) and `meterstack sql` (a query from the
//! shell, with the same bounds and formats as `POST /api/v1/query`).

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use meterstack_core::store::SqlStore;
use meterstack_lake::query::{Format, Lake, params_from_json};
use meterstack_pipeline::Registry;

use crate::config::Config;

/// Flags of `meterstack etl`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EtlArgs {
    /// Print the run's report as JSON
    #[arg(long)]
    json: bool,
}

/// Flags of `meterstack sql`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SqlArgs {
    /// One read-only SQL statement
    sql: String,
    /// Result format: json, jsonl, csv, arrow, parquet
    #[arg(long, default_value = "csv")]
    format: String,
    /// Parameters as JSON: an array for $1, $2, … or an object for $name
    #[arg(long)]
    params: Option<String>,
}

async fn sql_store(config: &Config) -> anyhow::Result<SqlStore> {
    config
        .store
        .build(&config.data_dir)
        .await
        .context("cannot open the SQL store")
}

pub(crate) async fn etl(args: EtlArgs, config: &Config) -> anyhow::Result<()> {
    let store = sql_store(config).await?;
    let registry = Registry::load(&store).await?;
    let lake = config.lake.build(&config.data_dir)?;
    let bar = indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
        "{spinner} etl {bar:30} {pos}/{len} dates · {msg} · {elapsed}",
    )?);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let progress = {
        let bar = bar.clone();
        move |p: meterstack_lake::etl::Progress| {
            bar.set_length(p.total as u64);
            bar.set_position(p.done as u64);
            bar.set_message(format!("{} readings", p.readings));
        }
    };
    let report = config
        .lake
        .etl
        .build(&config.pipeline, lake)
        .run_once(Arc::new(registry), Utc::now(), &progress)
        .await?;
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(
            out,
            "{} new raw files; {} dates restated; {} readings read, {} duplicates dropped; rows written: readings {}, readings_hourly {}, readings_daily {}; {} files compacted; {} partitions expired; {} retired files deleted; {} unreadable files; {:.1} s",
            report.new_files,
            report.dates_restated.len(),
            report.readings_read,
            report.duplicates,
            report.rows_written[0],
            report.rows_written[1],
            report.rows_written[2],
            report.files_compacted,
            report.partitions_expired,
            report.files_deleted,
            report.unreadable_files,
            report.seconds
        )?;
    }
    Ok(())
}

pub(crate) async fn sql(args: SqlArgs, config: &Config) -> anyhow::Result<()> {
    let format = Format::parse(&args.format).with_context(|| {
        format!(
            "unknown format {:?}; use json, jsonl, csv, arrow or parquet",
            args.format
        )
    })?;
    let params = match &args.params {
        Some(text) => {
            params_from_json(&serde_json::from_str(text).context("--params is not JSON")?)?
        }
        None => None,
    };
    let store = sql_store(config).await?;
    let lake = Lake::new(
        config.lake.build(&config.data_dir)?,
        config.http.query.clone(),
    )?
    .with_store(store);
    let mut result = lake.query(&args.sql, params, format).await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = result.next_chunk().await {
        out.write_all(&chunk?)?;
    }
    if matches!(format, Format::Json) {
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}
