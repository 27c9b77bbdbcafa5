//! Forecasting models behind one interface: fitted on a training frame, they predict the
//! p10/p50/p90 of each hour's energy from a forecast origin, reading only hours before it.
//!
//! - [`baseline`]: the two every result is compared with — the weekly seasonal naive and the
//!   median of the last 7 days at the same hour.
//! - [`gbm`]: the learned global model, gradient-boosted trees (perpetual) with quantile loss
//!   on the features of [`crate::features`].

pub mod baseline;
pub mod gbm;

use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use crate::series::{Hour, Series};

/// One hour's forecast: energy quantiles, Wh.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
}

impl Quantiles {
    /// The band widened to hold the median (p10 ≤ p50 ≤ p90), nothing below zero; a band of
    /// just the median where p10 or p90 is unknown. The median is never moved.
    pub fn tidy(self) -> Self {
        let p50 = self.p50.max(0.0);
        if !(self.p10.is_finite() && self.p90.is_finite()) {
            return Self {
                p10: p50,
                p50,
                p90: p50,
            };
        }
        Self {
            p10: self.p10.min(p50).max(0.0),
            p50,
            p90: self.p90.max(p50),
        }
    }
}

/// The models meterstack knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// The same hour a week earlier.
    SeasonalNaive,
    /// The median of the last 7 days at the same hour.
    #[serde(rename = "median_7d")]
    Median7d,
    /// Gradient-boosted quantile trees over the features.
    Gbm,
}

impl ModelKind {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::SeasonalNaive => "seasonal_naive",
            Self::Median7d => "median_7d",
            Self::Gbm => "gbm",
        }
    }
}

/// Why a model could not be fitted or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Too little history to learn from.
    #[error("not enough history to train on: {0}")]
    NoData(String),
    /// The learner failed.
    #[error("training failed: {0}")]
    Training(String),
    /// A stored model could not be read.
    #[error("damaged model artifact: {0}")]
    Artifact(String),
}

/// A forecasting model.
pub trait Forecaster: Send + Sync {
    /// Which model it is.
    fn kind(&self) -> ModelKind;

    /// Forecasts hours `origin .. origin + hours` of each series from what was known before
    /// `origin`; a series without enough history gets `NaN` quantiles.
    fn predict(
        &self,
        series: &[&Series],
        origin: Hour,
        hours: usize,
        calendar: &Calendar,
    ) -> Vec<Vec<Quantiles>>;
}
