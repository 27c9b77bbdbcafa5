//! The `meterstack` binary: every role of the platform behind one command line.

mod backfill;
mod bench;
mod billing_cmd;
mod bus_cmd;
mod certs;
mod config;
mod eval;
mod health;
mod lake_cmd;
mod ml_cmd;
mod registry_cmd;
mod run;
mod simulate;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Overrides};

/// Self-hosted streaming platform for utility smart meters.
#[derive(Debug, Parser)]
#[command(name = "meterstack", version, about)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every role in one process: MQTT broker, bus, raw-zone sink, HTTP API.
    Up {
        /// Development mode: accept meters without credentials and register unknown meters
        /// (key `dev`). Never in production.
        #[arg(long)]
        dev: bool,
    },
    /// Run some roles in this process, e.g. `--roles broker` here and `--roles sink,api`
    /// elsewhere, sharing a Kafka bus.
    Run {
        /// Roles to run
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<run::Role>,
        /// Development mode (see `up --dev`).
        #[arg(long)]
        dev: bool,
    },
    /// The meter registry: add, list, show, import from CSV, new secrets.
    #[command(subcommand)]
    Meters(registry_cmd::MetersCommand),
    /// API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(registry_cmd::KeysCommand),
    /// The meter certificate authority: init-ca, issue, server, revoke, list.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Print the effective configuration (defaults, file, environment, flags) as TOML.
    Config,
    /// Publish readings from a simulated fleet of meters over MQTT, with faults and their
    /// labels.
    Simulate(simulate::Args),
    /// Write a simulated fleet's history straight to the raw zone of the lake.
    Backfill(simulate::BackfillArgs),
    /// Score the pipeline against a simulated fleet with labelled faults: precision, recall
    /// and F1 per fault type (`--clean`: false alerts on a fleet without faults).
    Eval(eval::Args),
    /// Run the ETL raw → trusted zone once (with compaction and retention), with a progress bar.
    Etl(lake_cmd::EtlArgs),
    /// Run one read-only SQL query over the lake, e.g. `meterstack sql "SELECT count(*) FROM
    /// readings"` (same tables, bounds and formats as POST /api/v1/query; CSV by default).
    Sql(lake_cmd::SqlArgs),
    /// Bring history from another system into the lake.
    #[command(subcommand)]
    Import(lake_cmd::ImportCommand),
    /// Forecasting: train on the trusted zone, backtest, the model registry.
    #[command(subcommand)]
    Ml(ml_cmd::MlCommand),
    /// Tariffs: import (OpenEI URDB records or the native form), list, show.
    #[command(subcommand)]
    Tariffs(billing_cmd::TariffsCommand),
    /// Billing: `billing run --period YYYY-MM` bills every meter for a cycle.
    #[command(subcommand)]
    Billing(billing_cmd::BillingCommand),
    /// Inspect the bus.
    #[command(subcommand)]
    Bus(bus_cmd::BusCommand),
    /// Probe this process's readiness (`GET /readyz` on `http.listen`): exit 0 when ready.
    /// The container image's HEALTHCHECK.
    Health(health::Args),
    /// The benchmark suite (ingest vs Mosquitto, freshness, SQL vs DuckDB), or one benchmark
    /// (see docs/BENCHMARKS.md; use a release build).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("meterstack: error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config => {
            let config = Config::load(&cli.overrides)?;
            #[allow(clippy::print_stdout)]
            {
                print!("{}", config.to_toml()?);
            }
            Ok(())
        }
        Command::Health(args) => {
            let config = Config::load(&cli.overrides)?;
            let body = health::probe(&args, &config.http)?;
            #[allow(clippy::print_stdout)]
            {
                println!("{body}");
            }
            Ok(())
        }
        Command::Up { dev } => {
            let mut config = Config::load(&cli.overrides)?;
            config.dev |= dev;
            telemetry::init_logging(&config.log.filter);
            runtime()?.block_on(run::run(config, &run::Role::ALL.into_iter().collect()))
        }
        Command::Run { roles, dev } => {
            let mut config = Config::load(&cli.overrides)?;
            config.dev |= dev;
            telemetry::init_logging(&config.log.filter);
            runtime()?.block_on(run::run(config, &roles.into_iter().collect()))
        }
        Command::Meters(command) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(registry_cmd::meters(command, &config))
        }
        Command::Keys(command) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(registry_cmd::keys(command, &config))
        }
        Command::Certs(command) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(certs::run(command, &config))
        }
        Command::Bench(command) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(bench::run(command, &config))
        }
        Command::Eval(args) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            eval::run(&args, &config.pipeline, &config.ml)
        }
        Command::Etl(args) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(lake_cmd::etl(args, &config))
        }
        Command::Sql(args) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(lake_cmd::sql(args, &config))
        }
        Command::Import(command) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(lake_cmd::import(command, &config))
        }
        Command::Ml(command) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(ml_cmd::ml(command, &config))
        }
        Command::Tariffs(command) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(billing_cmd::tariffs(command, &config))
        }
        Command::Billing(command) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(billing_cmd::billing(command, &config))
        }
        Command::Bus(command) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(bus_cmd::run(command, &config))
        }
        Command::Backfill(args) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging("warn");
            runtime()?.block_on(simulate::backfill(args, &config))
        }
        Command::Simulate(args) => {
            let config = Config::load(&cli.overrides)?;
            telemetry::init_logging(&config.log.filter);
            runtime()?.block_on(simulate::simulate(args, &config))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meterstack")
        .build()?)
}
