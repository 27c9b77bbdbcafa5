//! Training (the SageMaker of the AWS design): the frame from the trusted zone, a model fitted
//! on it, registered with its window and backtest, promoted per policy. `meterstack ml train`
//! and the `ml` role run this same code.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use meterstack_core::store::SqlStore;
use meterstack_lake::query::Lake;
use meterstack_pipeline::Registry;

use crate::backtest::{self, Score};
use crate::calendar::Calendar;
use crate::config::{MlConfig, Promote};
use crate::model::baseline::Baseline;
use crate::model::gbm::Gbm;
use crate::model::{Forecaster, ModelKind};
use crate::registry::{ModelMeta, ModelRegistry};
use crate::series::{Series, hour_of, start_of};
use crate::{MlError, source};

/// Every meter's hourly series in the `days` before `until`, measured hours only, with its
/// class from the registry and its area's temperature; meters without any measured hour are
/// left out.
pub async fn frame(
    lake: &Lake,
    store: &SqlStore,
    registry: &Registry,
    until: DateTime<Utc>,
    days: u32,
    meters: Option<&str>,
    progress: impl FnMut(u64),
) -> Result<Vec<Series>, MlError> {
    let from = until - Duration::days(i64::from(days));
    let mut series = source::hourly(lake, store, registry, (from, until), meters, progress).await?;
    series.retain(|s| s.values.iter().any(|v| v.is_finite()));
    if series.is_empty() {
        return Err(MlError::NoData(format!(
            "readings_hourly has no measured hours between {from} and {until} (run the ETL first: meterstack etl)"
        )));
    }
    Ok(series)
}

/// Scores `models` and both baselines on day-ahead forecasts from every local midnight in
/// `[from, to)`.
pub fn score(
    series: &[Series],
    models: &[&dyn Forecaster],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    calendar: &Calendar,
    progress: impl FnMut(usize, usize),
) -> Vec<Score> {
    let refs: Vec<&Series> = series.iter().collect();
    let naive = Baseline(ModelKind::SeasonalNaive);
    let median = Baseline(ModelKind::Median7d);
    let mut all: Vec<&dyn Forecaster> = vec![&naive, &median];
    all.extend_from_slice(models);
    backtest::run(&refs, &all, hour_of(from), hour_of(to), calendar, progress)
}

/// The learned model's MAE among `scores`.
pub fn gbm_mae(scores: &[Score]) -> Option<f64> {
    scores
        .iter()
        .find(|s| s.model == ModelKind::Gbm)
        .map(|s| s.mae)
}

/// Fits a model on `series` (data before `until`) and describes it for the registry.
pub fn fit(
    series: &[Series],
    until: DateTime<Utc>,
    calendar: &Calendar,
    config: &MlConfig,
) -> Result<(Gbm, ModelMeta), MlError> {
    let refs: Vec<&Series> = series.iter().collect();
    let model = Gbm::fit(&refs, hour_of(until), calendar, &config.gbm)?;
    let meta = ModelMeta {
        version: String::new(),
        kind: ModelKind::Gbm,
        trained_at: Utc::now(),
        data_from: start_of(series.iter().map(|s| s.start).min().unwrap_or_default()),
        data_until: until,
        meters: series.len(),
        rows: model.rows,
        features: Vec::new(),
        params: config.gbm.clone(),
        code_version: env!("CARGO_PKG_VERSION").to_owned(),
        sha256: String::new(),
        backtest: Vec::new(),
    };
    Ok((model, meta))
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The new version's record, with its backtest.
    pub meta: ModelMeta,
    /// Its backtest MAE over the last `backtest_days`.
    pub mae: Option<f64>,
    /// The current model's MAE over the same days, if there was one.
    pub current_mae: Option<f64>,
    /// Whether it became current.
    pub promoted: bool,
}

/// Trains on `series` (data before `until`), registers the model, backtests it and the
/// current model on the last `config.backtest_days` (which the learner held back), and
/// promotes it per `policy`. The learning runs on a blocking thread.
pub async fn train(
    series: Arc<Vec<Series>>,
    until: DateTime<Utc>,
    calendar: &Calendar,
    config: &MlConfig,
    policy: Promote,
    models: &ModelRegistry,
) -> Result<Trained, MlError> {
    let current = match models.current().await? {
        Some(v) => Some(models.load(&v).await?.1),
        None => None,
    };
    let from = until - Duration::days(i64::from(config.backtest_days));
    let (calendar, config) = (calendar.clone(), config.clone());
    let (model, meta, scores, current_mae) = tokio::task::spawn_blocking(move || {
        let (model, meta) = fit(&series, until, &calendar, &config)?;
        let scores = score(&series, &[&model], from, until, &calendar, |_, _| {});
        let current_mae = current
            .as_ref()
            .and_then(|m| gbm_mae(&score(&series, &[m], from, until, &calendar, |_, _| {})));
        Ok::<_, MlError>((model, meta, scores, current_mae))
    })
    .await
    .map_err(|e| MlError::Stopped(e.to_string()))??;
    let mut meta = models.register(&model, meta).await?;
    meta.backtest = scores;
    models.update_meta(&meta).await?;
    let mae = gbm_mae(&meta.backtest);
    let promoted = match policy {
        Promote::Always => true,
        Promote::Never => false,
        Promote::IfBetter => match (mae, current_mae) {
            (Some(n), Some(o)) => n <= o,
            (_, None) => true,
            (None, Some(_)) => false,
        },
    };
    if promoted {
        models.promote(&meta.version).await?;
    }
    Ok(Trained {
        meta,
        mae,
        current_mae,
        promoted,
    })
}
