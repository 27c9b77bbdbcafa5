//! `meterstack bench forecast`: the forecasting targets — accuracy against both baselines on a
//! simulated fleet (trained on all but the last weeks, day-ahead backtest on those), training
//! time, inference time for a large fleet, and peak memory.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use meterstack_core::store::meters::MeterClass;
use meterstack_core::store::temperatures::ALL_AREAS;
use meterstack_ml::model::gbm::{Gbm, GbmConfig};
use meterstack_ml::series::{hour_of, start_of};
use meterstack_ml::{Calendar, CalendarConfig, Series, inference, train};
use meterstack_pipeline::Registry;
use meterstack_sim::{FleetConfig, RunShape, offline};
use serde_json::{Value, json};

/// Peak resident memory of this process so far, bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `meters` simulated meters' true hourly energy over `days` days from `start` (no faults),
/// generated on all cores, with the simulated area's temperature if `with_temperature`.
pub(crate) fn simulated(
    meters: usize,
    days: usize,
    start: DateTime<Utc>,
    seed: u64,
    with_temperature: bool,
) -> anyhow::Result<Vec<Series>> {
    let shape = RunShape::clean(start, days, seed);
    let fleet = FleetConfig {
        meters,
        ..FleetConfig::default()
    };
    let start_h = hour_of(start);
    let temperature = Arc::new(Series {
        start: start_h,
        // Three days past the end: the weather forecast of the last forecasts.
        values: offline::hourly_temperature(&fleet, &shape, (days + 3) * 24)
            .map_err(anyhow::Error::msg)?,
        ..Series::new(ALL_AREAS, None)
    });
    Ok(offline::hourly_fleet(&fleet, &shape, days)
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .map(|(meter_id, class, values)| Series {
            meter_id,
            class: Some(MeterClass::from(class)),
            start: start_h,
            values,
            temperature: with_temperature.then(|| temperature.clone()),
        })
        .collect())
}

/// Flags of `meterstack bench forecast`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ForecastArgs {
    /// Meters simulated
    #[arg(long, default_value_t = 1000)]
    meters: usize,
    /// Days simulated
    #[arg(long, default_value_t = 365)]
    days: usize,
    /// Days at the end backtested (not trained on)
    #[arg(long, default_value_t = 28)]
    test_days: usize,
    /// First day (UTC midnight)
    #[arg(long, default_value = "2025-01-01T00:00:00Z")]
    start: DateTime<Utc>,
    /// The fleet's seed
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Meters forecast in the timed inference
    #[arg(long, default_value_t = 100_000)]
    inference_meters: usize,
    /// The learner's budget [default: ml.gbm.budget]
    #[arg(long)]
    budget: Option<f32>,
    /// Train and forecast without the simulated area's temperature
    #[arg(long)]
    no_temperature: bool,
}

/// Runs the benchmark with the learner's settings `gbm` (its budget overridden by the flag).
pub(crate) fn run(args: &ForecastArgs, mut gbm: GbmConfig) -> anyhow::Result<Value> {
    let ForecastArgs {
        meters,
        days,
        test_days,
        start,
        seed,
        inference_meters,
        budget,
        no_temperature,
    } = args.clone();
    if let Some(b) = budget {
        gbm.budget = b;
    }
    anyhow::ensure!(
        days > test_days + 21,
        "--days must exceed --test-days by at least three weeks"
    );
    // The utility's calendar is the simulated site's: its time zone and public holidays.
    let timezone = FleetConfig::default().timezone;
    let holidays = (0..=days as u64 + 1)
        .filter_map(|d| start.date_naive().checked_add_days(chrono::Days::new(d)))
        .filter(|d| meterstack_sim::load::is_holiday(*d))
        .collect();
    let calendar = Calendar::new(&CalendarConfig {
        timezone: timezone.clone(),
        holidays,
    })
    .map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let frame = simulated(meters, days, start, seed, !no_temperature)?;
    let simulate_s = t.elapsed().as_secs_f64();
    let split = calendar.midnight(hour_of(start) + ((days - test_days) * 24) as i64);
    let train_frame: Vec<Series> = frame.iter().map(|s| s.before(split)).collect();
    let refs: Vec<&Series> = train_frame.iter().collect();
    let rss_before = peak_rss();
    let t = Instant::now();
    let model = Gbm::fit(&refs, split, &calendar, &gbm)?;
    let train_s = t.elapsed().as_secs_f64();
    let rss_train = peak_rss();
    let t = Instant::now();
    let end = frame.iter().map(Series::end).max().unwrap_or(split);
    let scores = train::score(
        &frame,
        &[&model],
        start_of(split),
        start_of(end),
        &calendar,
        |_, _| {},
    );
    let backtest_s = t.elapsed().as_secs_f64();
    // The same model when its temperature feed is lost (it was trained with one).
    let temperature_lost = (!no_temperature).then(|| {
        let blind: Vec<Series> = frame
            .iter()
            .map(|s| Series {
                temperature: None,
                ..s.clone()
            })
            .collect();
        train::score(
            &blind,
            &[&model],
            start_of(split),
            start_of(end),
            &calendar,
            |_, _| {},
        )
        .pop()
    });

    // Inference: the fleet's last five weeks, copied under new ids up to `inference_meters`.
    let at = start_of(end);
    let recent: Vec<Series> = frame
        .iter()
        .map(|s| {
            let from = hour_of(at) - 35 * 24;
            Series {
                start: from,
                values: (from..hour_of(at)).map(|h| s.at(h)).collect(),
                ..s.clone()
            }
        })
        .collect();
    drop(frame);
    drop(train_frame);
    let big: Vec<Series> = (0..inference_meters)
        .map(|i| {
            let s = &recent[i % recent.len()];
            Series {
                meter_id: format!("inf-{i:06}"),
                ..s.clone()
            }
        })
        .collect();
    let t = Instant::now();
    let forecasts = inference::forecast(
        &model,
        &big,
        &Registry::default(),
        &calendar,
        at,
        48,
        |_, _| {},
        |_, _| {},
    );
    let inference_s = t.elapsed().as_secs_f64();
    Ok(json!({
        "meters": meters,
        "days": days,
        "test_days": test_days,
        "start": start,
        "seed": seed,
        "timezone": timezone,
        "training": {
            "rows": model.rows,
            "band_scales": model.band_scales(),
            "seconds": train_s,
            "peak_rss_bytes_before": rss_before,
            "peak_rss_bytes_after": rss_train,
            "budget": gbm.budget,
            "max_rows": gbm.max_rows,
            "max_trees": gbm.max_trees,
            "band_rows": gbm.band_rows,
            "band_budget": gbm.band_budget,
            "band_max_trees": gbm.band_max_trees,
        },
        "simulate_seconds": simulate_s,
        "backtest_seconds": backtest_s,
        "scores": scores,
        "temperature": !no_temperature,
        "scores_temperature_lost": temperature_lost,
        "inference": {
            "meters": inference_meters,
            "forecasts": forecasts.len(),
            "seconds": inference_s,
            "peak_rss_bytes": peak_rss(),
        },
    }))
}
