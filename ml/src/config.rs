//! `[ml]`: the calendar, the learner, the training window and the promotion policy.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::calendar::CalendarConfig;
use crate::deviation::DeviationConfig;
use crate::model::gbm::GbmConfig;

/// When a newly trained model becomes current.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promote {
    /// When its backtest MAE is no worse than the current model's (or there is none).
    IfBetter,
    /// Always.
    Always,
    /// Never: an operator promotes (`meterstack ml models promote`).
    Never,
}

impl std::str::FromStr for Promote {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "if_better" => Ok(Self::IfBetter),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "unknown promotion policy {other:?}: if_better, always or never"
            )),
        }
    }
}

/// Section `[ml]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MlConfig {
    /// Days of history a model trains on (before its cut-off).
    pub train_days: u32,
    /// Days at the end of the training window a new model is backtested on against the
    /// current one (within the learner's held-back calibration days, so it has not learnt
    /// them).
    pub backtest_days: u32,
    /// When a new model becomes current.
    pub promote: Promote,
    /// Hours each forecast covers, from the hour it is made.
    pub forecast_hours: usize,
    /// How often the `ml` role looks for a new ETL run (then forecasts) and a due retraining.
    #[serde(with = "meterstack_core::duration")]
    pub interval: Duration,
    /// The `ml` role retrains when the current model's data ends this long before today's
    /// local midnight.
    #[serde(with = "meterstack_core::duration")]
    pub retrain_after: Duration,
    /// Time zone and holidays.
    pub calendar: CalendarConfig,
    /// The learner.
    pub gbm: GbmConfig,
    /// Alerts on consumption outside the forecast band.
    pub deviation: DeviationConfig,
}

impl Default for MlConfig {
    fn default() -> Self {
        Self {
            train_days: 365,
            backtest_days: 7,
            promote: Promote::IfBetter,
            forecast_hours: 48,
            interval: Duration::from_secs(300),
            retrain_after: Duration::from_secs(86_400),
            calendar: CalendarConfig::default(),
            gbm: GbmConfig::default(),
            deviation: DeviationConfig::default(),
        }
    }
}

impl MlConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        crate::calendar::Calendar::new(&self.calendar)?;
        self.deviation.validate()?;
        if self.interval.is_zero() {
            return Err("ml.interval must be positive".into());
        }
        if self.train_days < 14 {
            return Err("ml.train_days must be at least 14".into());
        }
        if self.backtest_days == 0 || self.backtest_days as usize > self.gbm.calibration_days {
            return Err("ml.backtest_days must be 1 … ml.gbm.calibration_days".into());
        }
        if self.forecast_hours == 0 || self.forecast_hours + 23 > self.gbm.horizon {
            return Err(
                "ml.forecast_hours must be 1 … ml.gbm.horizon - 23 (a forecast starts from the midnight before it)"
                    .into(),
            );
        }
        let g = &self.gbm;
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !(positive(g.budget) && positive(g.band_budget) && positive(g.memory_gb))
            || g.band_max_trees == 0
            || g.max_rows < 1000
            || g.band_rows < 1000
            || g.horizon == 0
            || g.max_trees == 0
        {
            return Err("ml.gbm needs a positive budget, band_budget and memory_gb, max_trees and band_max_trees ≥ 1, max_rows and band_rows ≥ 1000 and horizon ≥ 1".into());
        }
        Ok(())
    }
}
