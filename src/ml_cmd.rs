//! `meterstack ml …`: train a model on the trusted zone, forecast, backtest models, and manage
//! the model registry — the same code (`meterstack_ml::{train, inference}`) the `ml` role runs.

use std::io::Write;

use anyhow::bail;
use chrono::{DateTime, NaiveDate, Utc};
use meterstack_lake::query::Lake;
use meterstack_ml::backtest::Score;
use meterstack_ml::registry::ModelRegistry;
use meterstack_ml::series::{hour_of, start_of};
use meterstack_ml::{Calendar, Promote, Series, inference, train};
use meterstack_pipeline::Registry;

use crate::config::Config;

/// `meterstack ml` commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum MlCommand {
    /// Train a model on the trusted zone's hourly consumption before `--until` (default: the
    /// start of today, local), register it, backtest it and the current model on the last
    /// `ml.backtest_days`, and promote it per `ml.promote`.
    Train {
        /// Use only data before this local date.
        #[arg(long)]
        until: Option<NaiveDate>,
        /// Only meters whose id matches this SQL LIKE pattern, e.g. `hh-1%`.
        #[arg(long)]
        meters: Option<String>,
        /// Override `ml.promote`: if_better, always or never.
        #[arg(long)]
        promote: Option<Promote>,
    },
    /// Forecast every meter's next `ml.forecast_hours` with the current model, with feeder and
    /// fleet totals, into the SQL store (what the `ml` role does after each ETL run).
    Forecast {
        /// Forecast as of this instant (RFC 3339) instead of now: data before the local
        /// midnight at or before it.
        #[arg(long)]
        at: Option<DateTime<Utc>>,
    },
    /// Day-ahead forecasts from every local midnight in [from, to), each from data before it,
    /// scored against the baselines: MAE, RMSE, MASE, ratios, pinball loss, coverage.
    Backtest {
        /// First day (local).
        #[arg(long)]
        from: NaiveDate,
        /// Day after the last (local).
        #[arg(long)]
        to: NaiveDate,
        /// Score this registered version (its training data must end by `--from`; its scores
        /// are stored with it). Default: train a fresh model on the data before `--from`.
        #[arg(long)]
        model: Option<String>,
        /// Only meters whose id matches this SQL LIKE pattern.
        #[arg(long)]
        meters: Option<String>,
        /// Print the scores as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The model registry.
    #[command(subcommand)]
    Models(ModelsCommand),
}

/// `meterstack ml models` commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ModelsCommand {
    /// Every version (JSON lines, with `current`), oldest training data first.
    List,
    /// One version's record (JSON).
    Show {
        /// The version.
        version: String,
    },
    /// Make a version current (it must load cleanly).
    Promote {
        /// The version.
        version: String,
    },
    /// Make the version current before this one current again.
    Rollback,
}

struct Ctx {
    lake: Lake,
    models: ModelRegistry,
    registry: Registry,
    calendar: Calendar,
    store: meterstack_core::store::SqlStore,
}

async fn ctx(config: &Config) -> anyhow::Result<Ctx> {
    let store = config.open_store().await?;
    let objects = config.lake.build(&config.data_dir)?;
    Ok(Ctx {
        lake: Lake::new(objects.clone(), config.http.query.clone())?,
        models: ModelRegistry::new(objects),
        registry: Registry::load(&store).await?,
        calendar: Calendar::new(&config.ml.calendar).map_err(anyhow::Error::msg)?,
        store,
    })
}

fn spinner(template: &str) -> anyhow::Result<indicatif::ProgressBar> {
    let bar = indicatif::ProgressBar::new(0)
        .with_style(indicatif::ProgressStyle::with_template(template)?);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    Ok(bar)
}

async fn frame(
    c: &Ctx,
    until: DateTime<Utc>,
    days: u32,
    meters: Option<&str>,
) -> anyhow::Result<Vec<Series>> {
    let bar = spinner("{spinner} reading readings_hourly: {msg} rows · {elapsed}")?;
    let series = train::frame(&c.lake, &c.store, &c.registry, until, days, meters, |n| {
        bar.set_message(n.to_string());
    })
    .await;
    bar.finish_and_clear();
    Ok(series?)
}

fn local_midnight(c: &Ctx, date: NaiveDate) -> DateTime<Utc> {
    start_of(c.calendar.day_start(date))
}

fn print_scores(scores: &[Score], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(scores)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<16} {:>9} {:>10} {:>10} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "model", "hours", "MAE Wh", "RMSE Wh", "MASE", "/ naive", "/ median", "pinball", "coverage"
    )?;
    for s in scores {
        writeln!(
            out,
            "{:<16} {:>9} {:>10.1} {:>10.1} {:>7.3} {:>9.3} {:>9.3} {:>9.1} {:>8.1}%",
            s.model.name(),
            s.hours,
            s.mae,
            s.rmse,
            s.mase,
            s.mae_vs_seasonal_naive,
            s.mae_vs_median_7d,
            s.pinball,
            s.coverage * 100.0
        )?;
    }
    Ok(())
}

fn score(
    c: &Ctx,
    series: &[Series],
    model: &dyn meterstack_ml::Forecaster,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<Vec<Score>> {
    let bar = spinner("{spinner} backtest {bar:30} {pos}/{len} days · {elapsed}")?;
    let scores = train::score(series, &[model], from, to, &c.calendar, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    Ok(scores)
}

pub(crate) async fn ml(command: MlCommand, config: &Config) -> anyhow::Result<()> {
    match command {
        MlCommand::Train {
            until,
            meters,
            promote,
        } => {
            let c = ctx(config).await?;
            let until = match until {
                Some(d) => local_midnight(&c, d),
                None => start_of(c.calendar.midnight(hour_of(Utc::now()))),
            };
            let series = frame(&c, until, config.ml.train_days, meters.as_deref()).await?;
            let bar = spinner("{spinner} training and backtesting on {msg} · {elapsed}")?;
            bar.set_message(format!("{} meters", series.len()));
            let policy = promote.unwrap_or(config.ml.promote);
            let series = std::sync::Arc::new(series);
            let trained =
                train::train(series, until, &c.calendar, &config.ml, policy, &c.models).await;
            bar.finish_and_clear();
            let t = trained?;
            print_scores(&t.meta.backtest, false)?;
            let m = &t.meta;
            writeln!(
                std::io::stdout().lock(),
                "model {} trained on {} meters, {} rows, data {} … {}; backtest MAE {:.1} Wh{}; {}",
                m.version,
                m.meters,
                m.rows,
                m.data_from,
                m.data_until,
                t.mae.unwrap_or(f64::NAN),
                t.current_mae
                    .map_or(String::new(), |o| format!(" (current model {o:.1} Wh)")),
                if t.promoted {
                    "promoted: now current"
                } else {
                    "not promoted (meterstack ml models promote VERSION)"
                }
            )?;
            Ok(())
        }
        MlCommand::Forecast { at } => {
            let c = ctx(config).await?;
            let at = at.unwrap_or_else(Utc::now);
            let Some(version) = c.models.current().await? else {
                bail!("no current model: train one first (meterstack ml train)");
            };
            let (_, model) = c.models.load(&version).await?;
            let (origin, _) = inference::origin(&c.calendar, at);
            let series = frame(&c, start_of(origin), config.ml.train_days.min(60), None).await?;
            let bar = spinner("{spinner} forecasting {bar:30} {pos}/{len} meters · {elapsed}")?;
            let forecasts = inference::forecast(
                &model,
                &series,
                &c.registry,
                &c.calendar,
                at,
                config.ml.forecast_hours,
                |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
                |_, _| {},
            );
            bar.finish_and_clear();
            let rows = c
                .store
                .upsert_forecasts(&forecasts, &version, Utc::now())
                .await?;
            writeln!(
                std::io::stdout().lock(),
                "{} forecasts ({} hours each, {rows} rows) from model {version}, as of {at}",
                forecasts.len(),
                config.ml.forecast_hours
            )?;
            Ok(())
        }
        MlCommand::Backtest {
            from,
            to,
            model,
            meters,
            json,
        } => {
            if to <= from {
                bail!("--to must be after --from");
            }
            let c = ctx(config).await?;
            let (from, to) = (local_midnight(&c, from), local_midnight(&c, to));
            let days = config.ml.train_days + (to - from).num_days() as u32;
            let series = frame(&c, to, days, meters.as_deref()).await?;
            match model {
                Some(version) => {
                    let (mut meta, gbm) = c.models.load(&version).await?;
                    if meta.data_until > from {
                        bail!(
                            "model {version} was trained on data up to {}, after --from {from}: it has seen the days it would forecast",
                            meta.data_until
                        );
                    }
                    meta.backtest = score(&c, &series, &gbm, from, to)?;
                    print_scores(&meta.backtest, json)?;
                    c.models.update_meta(&meta).await?;
                }
                None => {
                    let before: Vec<Series> =
                        series.iter().map(|s| s.before(hour_of(from))).collect();
                    let bar = spinner("{spinner} training on the data before --from · {elapsed}")?;
                    let fitted = train::fit(&before, from, &c.calendar, &config.ml);
                    bar.finish_and_clear();
                    let (gbm, _) = fitted?;
                    print_scores(&score(&c, &series, &gbm, from, to)?, json)?;
                }
            }
            Ok(())
        }
        MlCommand::Models(command) => {
            let models = ModelRegistry::new(config.lake.build(&config.data_dir)?);
            let mut out = std::io::stdout().lock();
            match command {
                ModelsCommand::List => {
                    let current = models.current().await?;
                    let (metas, bad) = models.list().await?;
                    for m in metas {
                        let mut v = serde_json::to_value(&m)?;
                        v["current"] = (current.as_deref() == Some(m.version.as_str())).into();
                        writeln!(out, "{v}")?;
                    }
                    for b in bad {
                        let line =
                            serde_json::json!({"version": b, "error": "unreadable meta.json"});
                        writeln!(out, "{line}")?;
                    }
                }
                ModelsCommand::Show { version } => {
                    let meta = models.meta(&version).await?;
                    writeln!(out, "{}", serde_json::to_string_pretty(&meta)?)?;
                }
                ModelsCommand::Promote { version } => {
                    models.promote(&version).await?;
                    writeln!(out, "{version} is current")?;
                }
                ModelsCommand::Rollback => {
                    let v = models.rollback().await?;
                    writeln!(out, "{v} is current again")?;
                }
            }
            Ok(())
        }
    }
}
