//! Backtests: a day-ahead forecast from every local midnight of a window, each from what was
//! known before it, scored against what the meters then measured.
//!
//! Every model is scored on the same hours (those with a measurement and a forecast from every
//! model), so the ratios compare like with like.

use serde::{Deserialize, Serialize};

use crate::calendar::Calendar;
use crate::model::{Forecaster, ModelKind, Quantiles};
use crate::series::{Hour, Series};

/// One model's scores over a backtest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The model.
    pub model: ModelKind,
    /// Hours scored.
    pub hours: u64,
    /// Mean absolute error of the p50, Wh.
    pub mae: f64,
    /// Root mean squared error of the p50, Wh.
    pub rmse: f64,
    /// Mean absolute scaled error: each error over its meter's in-sample weekly naive error.
    pub mase: f64,
    /// MAE over the weekly seasonal naive's.
    pub mae_vs_seasonal_naive: f64,
    /// MAE over the 7-day median's.
    pub mae_vs_median_7d: f64,
    /// Mean pinball loss over p10, p50 and p90, Wh.
    pub pinball: f64,
    /// Share of hours inside p10–p90.
    pub coverage: f64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    abs: f64,
    sq: f64,
    scaled: f64,
    pinball: f64,
    inside: u64,
    n: u64,
}

fn pinball(q: f64, y: f64, p: f64) -> f64 {
    if y >= p {
        q * (y - p)
    } else {
        (1.0 - q) * (p - y)
    }
}

/// Each meter's in-sample scale: the mean absolute change from a week earlier over the hours
/// before `until` (`None` without any).
fn naive_scale(s: &Series, until: Hour) -> Option<f64> {
    let (sum, n) = (s.start + 168..until.min(s.end()))
        .map(|h| (s.at(h) - s.at(h - 168)).abs())
        .filter(|d| d.is_finite())
        .fold((0.0, 0u64), |(a, n), d| (a + d, n + 1));
    (n > 0 && sum > 0.0).then(|| sum / n as f64)
}

/// Backtests `models` (which must include both baselines for the ratios) on day-ahead
/// forecasts from every local midnight in `[from, to)`; `progress` is told each origin done.
pub fn run(
    frame: &[&Series],
    models: &[&dyn Forecaster],
    from: Hour,
    to: Hour,
    calendar: &Calendar,
    mut progress: impl FnMut(usize, usize),
) -> Vec<Score> {
    let scales: Vec<Option<f64>> = frame.iter().map(|s| naive_scale(s, from)).collect();
    let mut sums = vec![Sums::default(); models.len()];
    let origins = calendar.midnights(from, to);
    for (done, &origin) in origins.iter().enumerate() {
        let hours = (calendar
            .midnights(origin + 1, origin + 48)
            .first()
            .copied()
            .unwrap_or(origin + 24)
            - origin) as usize;
        let forecasts: Vec<Vec<Vec<Quantiles>>> = models
            .iter()
            .map(|m| m.predict(frame, origin, hours, calendar))
            .collect();
        for (i, s) in frame.iter().enumerate() {
            for k in 0..hours {
                let y = s.at(origin + k as Hour);
                if !y.is_finite() || forecasts.iter().any(|f| !f[i][k].p50.is_finite()) {
                    continue;
                }
                for (m, f) in forecasts.iter().enumerate() {
                    let q = f[i][k];
                    let e = q.p50 - y;
                    let sum = &mut sums[m];
                    sum.abs += e.abs();
                    sum.sq += e * e;
                    sum.scaled += scales[i].map_or(0.0, |sc| e.abs() / sc);
                    sum.pinball +=
                        (pinball(0.1, y, q.p10) + pinball(0.5, y, q.p50) + pinball(0.9, y, q.p90))
                            / 3.0;
                    sum.inside += u64::from(q.p10 <= y && y <= q.p90);
                    sum.n += 1;
                }
            }
        }
        progress(done + 1, origins.len());
    }
    let mae = |kind: ModelKind| {
        models
            .iter()
            .position(|m| m.kind() == kind)
            .map_or(f64::NAN, |i| sums[i].abs / sums[i].n.max(1) as f64)
    };
    let (naive, median) = (mae(ModelKind::SeasonalNaive), mae(ModelKind::Median7d));
    models
        .iter()
        .zip(&sums)
        .map(|(m, s)| {
            let n = s.n.max(1) as f64;
            let mae = s.abs / n;
            Score {
                model: m.kind(),
                hours: s.n,
                mae,
                rmse: (s.sq / n).sqrt(),
                mase: s.scaled / n,
                mae_vs_seasonal_naive: mae / naive,
                mae_vs_median_7d: mae / median,
                pinball: s.pinball / n,
                coverage: s.inside as f64 / n,
            }
        })
        .collect()
}
