//! The baselines: what a forecast must beat to be worth having.
//!
//! Both give the 10th and 90th percentiles of the last 7 days at the same hour as their band.
//! Neither reads anything at or after the origin: for the second day ahead they look a day
//! further back.

use super::{Forecaster, ModelKind, Quantiles};
use crate::calendar::Calendar;
use crate::features::quantile;
use crate::series::{Hour, Series};

/// A baseline model (nothing to fit).
#[derive(Debug, Clone, Copy)]
pub struct Baseline(pub ModelKind);

/// The baseline's forecast of `target` from `origin`.
pub fn forecast(kind: ModelKind, series: &Series, origin: Hour, target: Hour) -> Quantiles {
    let first_day = (target - origin) / 24 + 1;
    let mut same_hour: Vec<f64> = (first_day..first_day + 7)
        .map(|d| series.at(target - 24 * d))
        .filter(|v| v.is_finite())
        .collect();
    let p10 = quantile(&mut same_hour, 0.1);
    let p90 = quantile(&mut same_hour, 0.9);
    let p50 = match kind {
        // Where the week before is unknown, the 7-day median stands in.
        ModelKind::SeasonalNaive => {
            let weeks = (target - origin) / 168 + 1;
            let naive = series.at(target - 168 * weeks);
            if naive.is_finite() {
                naive
            } else {
                quantile(&mut same_hour, 0.5)
            }
        }
        _ => quantile(&mut same_hour, 0.5),
    };
    Quantiles { p10, p50, p90 }.tidy()
}

impl Forecaster for Baseline {
    fn kind(&self) -> ModelKind {
        self.0
    }

    fn predict(
        &self,
        series: &[&Series],
        origin: Hour,
        hours: usize,
        _calendar: &Calendar,
    ) -> Vec<Vec<Quantiles>> {
        series
            .iter()
            .map(|s| {
                (origin..origin + hours as Hour)
                    .map(|t| forecast(self.0, s, origin, t))
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_read_the_week_before_and_the_last_seven_days() {
        let mut s = Series::new("m", None);
        for h in 0..24 * 14 {
            s.set(h, (h / 24) as f64);
        }
        let origin = 24 * 14;
        let naive = forecast(ModelKind::SeasonalNaive, &s, origin, origin + 5);
        assert_eq!(naive.p50, 7.0);
        let median = forecast(ModelKind::Median7d, &s, origin, origin + 5);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(median.p10, 7.6) && close(median.p50, 10.0) && close(median.p90, 12.4));
        // The second day ahead skips the unknown day: still seven days, one further back.
        let second = forecast(ModelKind::Median7d, &s, origin, origin + 30);
        assert_eq!((second.p10.is_finite(), second.p50), (true, 10.0));
    }
}
