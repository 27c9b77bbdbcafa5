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

/// `meterstack import` commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ImportCommand {
    /// Readings from another meter-data system, a CSV file (`.csv` or `.csv.gz`) whose header
    /// names its form: `meter_id,ts,import_wh[,export_wh,power_w,voltage_v,current_a]`
    /// (register readings) or `meter_id,interval_start,energy_wh[,export_wh]` (intervals);
    /// times RFC 3339 or epoch milliseconds. Written to the raw zone as the sink writes it;
    /// run `meterstack etl` (or let the etl role) to bring it into the trusted zone.
    Readings {
        /// The file.
        file: std::path::PathBuf,
        /// Import the good rows of a file with bad ones (default: a file with bad rows is not
        /// imported at all).
        #[arg(long)]
        skip_bad: bool,
        /// Interval length of an interval file [default: pipeline.interval]
        #[arg(long, value_parser = humantime::parse_duration)]
        interval: Option<std::time::Duration>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Outdoor temperatures the forecasting models may use, a CSV file (`.csv` or `.csv.gz`)
    /// with header `area,ts,temperature_c`: an area is a feeder, or `*` for every meter whose
    /// feeder has none of its own; times RFC 3339 or epoch milliseconds, averaged per hour.
    /// Observations and weather forecasts alike: an hour imported again is replaced.
    Temperatures {
        /// The file.
        file: std::path::PathBuf,
        /// Import the good rows of a file with bad ones (default: a file with bad rows is not
        /// imported at all).
        #[arg(long)]
        skip_bad: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
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

pub(crate) async fn import(command: ImportCommand, config: &Config) -> anyhow::Result<()> {
    let (file, skip_bad, interval, json) = match command {
        ImportCommand::Readings {
            file,
            skip_bad,
            interval,
            json,
        } => (file, skip_bad, interval, json),
        ImportCommand::Temperatures {
            file,
            skip_bad,
            json,
        } => return import_temperatures(&file, skip_bad, json, config).await,
    };
    let interval = interval.unwrap_or(config.pipeline.interval);
    let options = meterstack_lake::import::ImportOptions {
        skip_bad,
        interval: chrono::TimeDelta::from_std(interval).context("--interval is too long")?,
        ..meterstack_lake::import::ImportOptions::default()
    };
    let store = config.lake.build(&config.data_dir)?;
    let bar = indicatif::ProgressBar::new(0).with_style(indicatif::ProgressStyle::with_template(
        "{spinner} import {bar:30} {binary_bytes}/{binary_total_bytes} · {elapsed} · eta {eta}",
    )?);
    let progress = {
        let bar = bar.clone();
        move |done: u64, total: u64| {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let report = meterstack_lake::import::import(&file, store, &options, progress).await;
    bar.finish_and_clear();
    let report = report.with_context(|| format!("cannot import {}", file.display()))?;
    print_report(
        json,
        &report,
        &format!(
            "{} rows ({:?} form): {} readings in {} raw files ({} bytes); {} bad rows skipped; {:.1} s, {:.0} readings/s",
            report.rows,
            report.form,
            report.readings,
            report.files,
            report.bytes,
            report.bad_rows,
            report.seconds,
            report.readings_per_s
        ),
        &report.first_bad,
    )
}

async fn import_temperatures(
    file: &std::path::Path,
    skip_bad: bool,
    json: bool,
    config: &Config,
) -> anyhow::Result<()> {
    let store = config.open_store().await?;
    let report = meterstack_ml::weather::import(file, &store, skip_bad)
        .await
        .with_context(|| format!("cannot import {}", file.display()))?;
    print_report(
        json,
        &report,
        &format!(
            "{} rows: {} hours of {} areas ({}); {} bad rows skipped",
            report.rows,
            report.hours,
            report.areas.len(),
            report.areas.join(", "),
            report.bad_rows
        ),
        &report.first_bad,
    )
}

/// An import's report: as JSON, or its `summary` and the first bad rows by line.
fn print_report(
    json: bool,
    report: &impl serde::Serialize,
    summary: &str,
    first_bad: &[meterstack_lake::import::BadRow],
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
    } else {
        writeln!(out, "{summary}")?;
        for b in first_bad {
            writeln!(out, "  line {}: {}", b.line, b.reason)?;
        }
    }
    Ok(())
}
