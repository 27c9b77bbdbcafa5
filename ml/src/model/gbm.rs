//! The learned global model: gradient-boosted trees (perpetual) over the features of
//! [`crate::features`], one booster per quantile, trained with quantile (pinball) loss on
//! energy relative to each meter's level and weighted by that level, so that the p50's loss is
//! the absolute error in Wh. The boosters learn the correction to the 7-day same-hour median
//! (see `anchor`), not the whole value.
//!
//! Training rows are (meter, origin, target hour) for every local midnight of the training
//! window and the next `horizon` hours, sampled down to `max_rows`. When the window is long
//! enough, its last `calibration_days` are held back: the band p10–p90 is widened or narrowed
//! around the p50 so that it covers 80 % of those days (split conformal), then kept as trained.

use perpetual::objective::Objective;
use perpetual::{Matrix, PerpetualBooster};
use serde::{Deserialize, Serialize};

use super::{Forecaster, ModelError, ModelKind, Quantiles};
use crate::calendar::Calendar;
use crate::features::{self, WIDTH};
use crate::series::{Hour, Series};

/// `[ml.gbm]`: how the model learns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbmConfig {
    /// perpetual's budget: higher learns more (and takes longer); its effect on accuracy is
    /// not monotone (docs/BENCHMARKS.md).
    pub budget: f32,
    /// At most this many boosting rounds per quantile (the budget usually stops sooner; on a
    /// small frame it may not).
    pub max_trees: usize,
    /// Memory the learner may plan for, GB (it sizes its histogram arena from this; without
    /// it, from the machine's free memory).
    pub memory_gb: f32,
    /// At most this many training rows (sampled evenly across meters and days).
    pub max_rows: usize,
    /// Hours ahead of each local midnight it trains for (inference forecasts up to 48 hours
    /// from any hour of a day, from the midnight before it).
    pub horizon: usize,
    /// Days at the end of the window held back to calibrate the band.
    pub calibration_days: usize,
    /// Threads (0: all cores).
    pub threads: usize,
    /// Seed of the sampling and the learner.
    pub seed: u64,
}

impl Default for GbmConfig {
    fn default() -> Self {
        Self {
            budget: 1.0,
            max_trees: 100,
            memory_gb: 1.0,
            max_rows: 300_000,
            horizon: 72,
            calibration_days: 14,
            threads: 0,
            seed: 1,
        }
    }
}

/// Training rows: features (column-major), targets and weights.
#[derive(Debug, Default)]
struct Rows {
    columns: Vec<Vec<f64>>,
    y: Vec<f64>,
    weight: Vec<f64>,
}

impl Rows {
    fn len(&self) -> usize {
        self.y.len()
    }

    fn matrix(&self) -> (Vec<f64>, usize) {
        (self.columns.concat(), self.len())
    }
}

/// A deterministic draw in [0, 1) from three numbers (SplitMix64).
fn draw(seed: u64, a: u64, b: i64) -> f64 {
    let mut z = seed
        ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (b as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// What a row's target is learnt relative to: the 7-day same-hour median (relative to the
/// level), else the 28-day same-hour median, else the level itself. Quantile loss moves a
/// prediction by at most the learning rate per tree, so learning the correction to a good
/// first guess — not the whole value — lets a business's 4× midday peak be reached.
fn anchor(row: &[f64; WIDTH]) -> f64 {
    [row[5], row[10]]
        .into_iter()
        .find(|v| v.is_finite())
        .unwrap_or(1.0)
}

/// The rows of `origins` (those whose targets fall before `until`), each kept with
/// probability `keep`.
fn rows(
    frame: &[&Series],
    origins: &[Hour],
    until: Hour,
    horizon: usize,
    keep: f64,
    seed: u64,
    calendar: &Calendar,
) -> Rows {
    let mut out = Rows {
        columns: vec![Vec::new(); WIDTH],
        ..Rows::default()
    };
    let mut scratch = Vec::new();
    let mut row = [0.0; WIDTH];
    for (i, s) in frame.iter().enumerate() {
        for &origin in origins {
            let Some(level) = features::level(s, origin) else {
                continue;
            };
            for target in origin..(origin + horizon as Hour).min(until) {
                let y = s.at(target);
                if !y.is_finite() || draw(seed, i as u64, target * 64 + (target - origin)) >= keep {
                    continue;
                }
                features::row(s, origin, target, level, calendar, &mut scratch, &mut row);
                for (c, v) in out.columns.iter_mut().zip(row) {
                    c.push(v);
                }
                out.y.push(y / level - anchor(&row));
                out.weight.push(level);
            }
        }
    }
    out
}

/// The fitted model.
#[derive(Serialize, Deserialize)]
pub struct Gbm {
    /// Feature names, in column order.
    pub features: Vec<String>,
    /// Boosters for p10, p50, p90.
    boosters: Vec<PerpetualBooster>,
    /// Factor on the band's distances from the p50 (from the calibration days).
    pub band_scale: f64,
    /// Rows trained on.
    pub rows: usize,
}

impl std::fmt::Debug for Gbm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gbm")
            .field("features", &self.features.len())
            .field("band_scale", &self.band_scale)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

const QUANTILES: [f64; 3] = [0.1, 0.5, 0.9];

impl Gbm {
    /// Fits on the hours of `frame` before `until`.
    pub fn fit(
        frame: &[&Series],
        until: Hour,
        calendar: &Calendar,
        config: &GbmConfig,
    ) -> Result<Self, ModelError> {
        let first = frame.iter().map(|s| s.start).min().unwrap_or(until);
        // An origin needs a week of history for its level.
        let origins = calendar.midnights(first + 7 * 24, until);
        if origins.is_empty() {
            return Err(ModelError::NoData(
                "fewer than 8 days of hourly data before the end of the window".into(),
            ));
        }
        let cal_days = if origins.len() >= 4 * config.calibration_days {
            config.calibration_days
        } else {
            0
        };
        let (train_origins, cal_origins) = origins.split_at(origins.len() - cal_days);
        let train_until = cal_origins.first().copied().unwrap_or(until);
        let candidates = frame.len() as f64 * train_origins.len() as f64 * config.horizon as f64;
        let keep = (config.max_rows as f64 / candidates.max(1.0)).min(1.0);
        let train = rows(
            frame,
            train_origins,
            train_until,
            config.horizon,
            keep,
            config.seed,
            calendar,
        );
        if train.len() < 100 {
            return Err(ModelError::NoData(format!(
                "{} training rows (meters with a week of known hours before each day)",
                train.len()
            )));
        }
        let (data, n) = train.matrix();
        let matrix = Matrix::new(&data, n, WIDTH);
        // Weights of mean 1: the learner's regularisation works on sums of weights, so their
        // scale (Wh of the meters' levels) must not be.
        let mean_weight = train.weight.iter().sum::<f64>() / n.max(1) as f64;
        let weight: Vec<f64> = train.weight.iter().map(|w| w / mean_weight).collect();
        let threads = (config.threads > 0).then_some(config.threads);
        let mut boosters = Vec::with_capacity(3);
        for q in QUANTILES {
            let mut b = PerpetualBooster::default()
                .set_objective(Objective::QuantileLoss { quantile: Some(q) })
                .set_budget(config.budget)
                .set_iteration_limit(Some(config.max_trees))
                .set_memory_limit(Some(config.memory_gb))
                .set_num_threads(threads)
                .set_seed(config.seed);
            b.fit(&matrix, &train.y, Some(&weight), None)
                .map_err(|e| ModelError::Training(e.to_string()))?;
            boosters.push(b);
        }
        let mut model = Self {
            features: features::NAMES.iter().map(|s| (*s).to_owned()).collect(),
            boosters,
            band_scale: 1.0,
            rows: n,
        };
        if !cal_origins.is_empty() {
            let keep = (config.max_rows as f64
                / 4.0
                / (frame.len() * cal_origins.len() * config.horizon).max(1) as f64)
                .min(1.0);
            let cal = rows(
                frame,
                cal_origins,
                until,
                config.horizon,
                keep,
                config.seed ^ 1,
                calendar,
            );
            model.band_scale = model.calibrate(&cal);
        }
        Ok(model)
    }

    /// The band scale that makes p10–p90 cover 80 % of `rows`.
    fn calibrate(&self, rows: &Rows) -> f64 {
        if rows.len() < 100 {
            return 1.0;
        }
        let (data, n) = rows.matrix();
        let raw = self.raw(&Matrix::new(&data, n, WIDTH));
        // For each row, the smallest scale that covers it.
        let mut needed: Vec<f64> = raw
            .iter()
            .zip(&rows.y)
            .map(|(q, y)| {
                let (lo, hi) = (q[1] - q[0], q[2] - q[1]);
                let d = y - q[1];
                let width = if d >= 0.0 { hi } else { lo };
                if d.abs() <= f64::EPSILON {
                    0.0
                } else if width <= f64::EPSILON {
                    f64::INFINITY
                } else {
                    d.abs() / width
                }
            })
            .collect();
        features::quantile(&mut needed, 0.8).clamp(0.5, 4.0)
    }

    /// The three boosters' predictions per row, relative to the level, the band around the p50.
    fn raw(&self, matrix: &Matrix<'_, f64>) -> Vec<[f64; 3]> {
        let p: Vec<Vec<f64>> = self
            .boosters
            .iter()
            .map(|b| b.predict(matrix, true))
            .collect();
        (0..matrix.rows)
            .map(|i| {
                let mid = p[1][i];
                [p[0][i].min(mid), mid, p[2][i].max(mid)]
            })
            .collect()
    }

    /// The model as JSON (its artifact).
    pub fn to_json(&self) -> Result<Vec<u8>, ModelError> {
        serde_json::to_vec(self).map_err(|e| ModelError::Artifact(e.to_string()))
    }

    /// A model from its artifact; anything that is not one is refused.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let model: Self =
            serde_json::from_slice(bytes).map_err(|e| ModelError::Artifact(e.to_string()))?;
        let names: Vec<&str> = model.features.iter().map(String::as_str).collect();
        if names != features::NAMES || model.boosters.len() != QUANTILES.len() {
            return Err(ModelError::Artifact(
                "its features or quantiles are not this version's".into(),
            ));
        }
        Ok(model)
    }
}

impl Forecaster for Gbm {
    fn kind(&self) -> ModelKind {
        ModelKind::Gbm
    }

    fn predict(
        &self,
        series: &[&Series],
        origin: Hour,
        hours: usize,
        calendar: &Calendar,
    ) -> Vec<Vec<Quantiles>> {
        let mut columns: Vec<Vec<f64>> = (0..WIDTH)
            .map(|_| Vec::with_capacity(series.len() * hours))
            .collect();
        let mut levels = Vec::with_capacity(series.len());
        let mut anchors = Vec::with_capacity(series.len() * hours);
        let mut scratch = Vec::new();
        let mut row = [0.0; WIDTH];
        for s in series {
            let level = features::level(s, origin);
            levels.push(level);
            for target in origin..origin + hours as Hour {
                features::row(
                    s,
                    origin,
                    target,
                    level.unwrap_or(1.0),
                    calendar,
                    &mut scratch,
                    &mut row,
                );
                for (c, v) in columns.iter_mut().zip(row) {
                    c.push(v);
                }
                anchors.push(anchor(&row));
            }
        }
        let data = columns.concat();
        let n = series.len() * hours;
        let raw = if n == 0 {
            Vec::new()
        } else {
            self.raw(&Matrix::new(&data, n, WIDTH))
        };
        levels
            .iter()
            .enumerate()
            .map(|(i, level)| {
                (0..hours)
                    .map(|k| match level {
                        None => Quantiles {
                            p10: f64::NAN,
                            p50: f64::NAN,
                            p90: f64::NAN,
                        },
                        Some(l) => {
                            let a = anchors[i * hours + k];
                            let q = raw[i * hours + k].map(|x| x + a);
                            let s = self.band_scale;
                            Quantiles {
                                p10: (q[1] - s * (q[1] - q[0])) * l,
                                p50: q[1] * l,
                                p90: (q[1] + s * (q[2] - q[1])) * l,
                            }
                            .tidy()
                        }
                    })
                    .collect()
            })
            .collect()
    }
}
