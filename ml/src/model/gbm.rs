//! The learned global model: gradient-boosted trees (perpetual) over the features of
//! [`crate::features`], one booster per quantile and day ahead (the direct multi-horizon
//! strategy: the first day's hours, which have yesterday's lags, do not share trees with the
//! later days', which do not), trained with quantile (pinball) loss on
//! energy relative to each meter's level and weighted by that level, so that the p50's loss is
//! the absolute error in Wh. The boosters learn the correction to the 7-day same-hour median
//! (see `anchors`), not the whole value.
//!
//! Training rows are (meter, origin, target hour) for every local midnight of the training
//! window and the next `horizon` hours, sampled down to `max_rows` per day ahead. When the
//! window is long enough, its last `calibration_days` are held back: each day ahead's band
//! p10–p90 is widened or narrowed around the p50 so that it covers 80 % of those days (split
//! conformal), then kept as trained.

use std::ops::Range;

use perpetual::objective::Objective;
use perpetual::{Matrix, PerpetualBooster};
use serde::{Deserialize, Serialize};

use super::{Forecaster, ModelError, ModelKind, Quantiles};
use crate::calendar::Calendar;
use crate::features::{self, Origin, WIDTH};
use crate::profiles::Profiles;
use crate::series::{Hour, Series};

/// `[ml.gbm]`: how the model learns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbmConfig {
    /// perpetual's budget: higher learns more (and takes longer); its effect on accuracy is
    /// not monotone (docs/BENCHMARKS.md).
    pub budget: f32,
    /// At most this many trees per booster. With days held back, every booster grows this
    /// many and is cut where it does best on them; without, perpetual's budget stops it.
    pub max_trees: usize,
    /// Memory the learner may plan for, GB (it sizes its histogram arena from this; without
    /// it, from the machine's free memory).
    pub memory_gb: f32,
    /// At most this many training rows per day ahead (sampled evenly across meters and days).
    pub max_rows: usize,
    /// Hours ahead of each local midnight it trains for (inference forecasts up to 48 hours
    /// from any hour of a day, from the midnight before it).
    pub horizon: usize,
    /// Days at the end of the window held back to calibrate the band.
    pub calibration_days: usize,
    /// Threads (0: all cores).
    pub threads: usize,
    /// Load-profile clusters (k-means over the shapes of the meters' days) given to the
    /// model as a feature; 0 leaves it out.
    pub clusters: usize,
    /// Seed of the sampling and the learner.
    pub seed: u64,
}

impl Default for GbmConfig {
    fn default() -> Self {
        Self {
            budget: 1.0,
            max_trees: 40,
            memory_gb: 1.0,
            max_rows: 150_000,
            horizon: 72,
            calibration_days: 14,
            threads: 0,
            clusters: 6,
            seed: 1,
        }
    }
}

/// Training rows: features (column-major), targets relative to the level, each quantile's
/// anchor, weights.
#[derive(Debug, Default)]
struct Rows {
    columns: Vec<Vec<f64>>,
    y: Vec<f64>,
    anchors: Vec<[f64; 3]>,
    weight: Vec<f64>,
}

impl Rows {
    fn len(&self) -> usize {
        self.y.len()
    }

    fn matrix(&self) -> (Vec<f64>, usize) {
        (self.columns.concat(), self.len())
    }

    /// What quantile `q`'s booster learns: the target less its anchor.
    fn targets(&self, q: usize) -> Vec<f64> {
        self.y
            .iter()
            .zip(&self.anchors)
            .map(|(y, a)| y - a[q])
            .collect()
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

/// What each quantile's booster learns relative to (relative to the level): for the p50 the
/// 7-day same-hour median, else the 28-day same-hour median, else the level itself; for the
/// p10 and p90 the 7 days' same-hour p10 and p90, else the p50's anchor. Quantile loss moves a
/// prediction by at most the learning rate per tree, so learning the correction to a good
/// first guess — not the whole value — lets a business's 4× midday peak be reached in a few
/// dozen trees.
fn anchors(row: &[f64; WIDTH]) -> [f64; 3] {
    let mid = [row[5], row[10]]
        .into_iter()
        .find(|v| v.is_finite())
        .unwrap_or(1.0);
    let or_mid = |v: f64| if v.is_finite() { v } else { mid };
    [or_mid(row[6]), mid, or_mid(row[7])]
}

/// The rows of `origins` for the hours `ahead` of each (those whose targets fall before
/// `until`), each kept with probability `keep`.
#[allow(clippy::too_many_arguments)]
fn rows(
    frame: &[&Series],
    profiles: &Profiles,
    origins: &[Hour],
    until: Hour,
    ahead: Range<Hour>,
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
            let Some(at) = Origin::of(s, origin, profiles) else {
                continue;
            };
            for target in origin + ahead.start..(origin + ahead.end).min(until) {
                let y = s.at(target);
                if !y.is_finite() || draw(seed, i as u64, target * 64 + (target - origin)) >= keep {
                    continue;
                }
                features::row(s, &at, target, calendar, &mut scratch, &mut row);
                for (c, v) in out.columns.iter_mut().zip(row) {
                    c.push(v);
                }
                out.y.push(y / at.level);
                out.anchors.push(anchors(&row));
                out.weight.push(at.level);
            }
        }
    }
    out
}

/// Keeps the first trees of `booster` — as many as make its pinball loss at quantile `q` on
/// the held-back `targets` (weighted like training by `weights`) smallest. Boosting on noisy hourly energy
/// overfits after a few dozen trees, and where perpetual's own stopping lands varies from
/// one sample to the next.
fn cut_where_best(
    booster: &mut PerpetualBooster,
    q: f64,
    matrix: &Matrix<'_, f64>,
    targets: &[f64],
    weights: &[f64],
) {
    let per_tree: Vec<Vec<f64>> = booster
        .get_prediction_trees()
        .iter()
        .map(|t| t.predict(matrix, true, &f64::NAN))
        .collect();
    // The prediction with every tree, then tree by tree removed from the end.
    let mut prediction = booster.predict(matrix, true);
    let loss = |p: &[f64]| -> f64 {
        p.iter()
            .zip(targets)
            .zip(weights)
            .map(|((p, y), w)| {
                let d = y - p;
                w * if d >= 0.0 { q * d } else { (q - 1.0) * d }
            })
            .sum()
    };
    let mut best = (loss(&prediction), per_tree.len());
    for (k, tree) in per_tree.iter().enumerate().rev() {
        for (p, t) in prediction.iter_mut().zip(tree) {
            *p -= t;
        }
        let l = loss(&prediction);
        if l < best.0 {
            best = (l, k);
        }
    }
    booster.trees.truncate(best.1);
}

/// The boosters of one day ahead.
#[derive(Serialize, Deserialize)]
struct Stage {
    /// Boosters for p10, p50, p90.
    boosters: Vec<PerpetualBooster>,
    /// Factor on the band's distances from the p50 (from the calibration days).
    band_scale: f64,
}

impl Stage {
    /// The three quantiles per row of `matrix` (whose anchors are `anchors`), relative to
    /// the level, the band around the p50.
    fn raw(&self, matrix: &Matrix<'_, f64>, anchors: &[[f64; 3]]) -> Vec<[f64; 3]> {
        let p: Vec<Vec<f64>> = self
            .boosters
            .iter()
            .map(|b| b.predict(matrix, true))
            .collect();
        anchors
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mid = p[1][i] + a[1];
                [(p[0][i] + a[0]).min(mid), mid, (p[2][i] + a[2]).max(mid)]
            })
            .collect()
    }

    /// The band scale that makes p10–p90 cover 80 % of `rows` (whose features are `matrix`).
    fn calibrate(&self, matrix: &Matrix<'_, f64>, rows: &Rows) -> f64 {
        let raw = self.raw(matrix, &rows.anchors);
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
}

/// The fitted model.
#[derive(Serialize, Deserialize)]
pub struct Gbm {
    /// Feature names, in column order.
    pub features: Vec<String>,
    /// One per day ahead: hours 0–23 after the origin, 24–47, …
    stages: Vec<Stage>,
    /// The load-profile clusters of the `profile_cluster` feature.
    profiles: Profiles,
    /// Rows trained on, all days ahead.
    pub rows: usize,
}

impl std::fmt::Debug for Gbm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gbm")
            .field("features", &self.features.len())
            .field("band_scales", &self.band_scales())
            .field("clusters", &self.profiles.len())
            .field(
                "trees",
                &self
                    .stages
                    .iter()
                    .map(|s| {
                        s.boosters
                            .iter()
                            .map(|b| b.get_prediction_trees().len())
                            .collect::<Vec<_>>()
                    })
                    .collect::<Vec<_>>(),
            )
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

const QUANTILES: [f64; 3] = [0.1, 0.5, 0.9];

/// Hours in one stage (day ahead).
const STAGE_HOURS: usize = 24;

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
        let threads = (config.threads > 0).then_some(config.threads);
        let mut model = Self {
            features: features::NAMES.iter().map(|s| (*s).to_owned()).collect(),
            stages: Vec::new(),
            profiles: Profiles::fit(frame, train_until, config.clusters)?,
            rows: 0,
        };
        for first_hour in (0..config.horizon).step_by(STAGE_HOURS) {
            let ahead = first_hour as Hour..config.horizon.min(first_hour + STAGE_HOURS) as Hour;
            let width = (ahead.end - ahead.start) as f64;
            let candidates = frame.len() as f64 * train_origins.len() as f64 * width;
            let keep = (config.max_rows as f64 / candidates.max(1.0)).min(1.0);
            let seed = config.seed ^ ((first_hour as u64) << 32);
            let train = rows(
                frame,
                &model.profiles,
                train_origins,
                train_until,
                ahead.clone(),
                keep,
                seed,
                calendar,
            );
            if train.len() < 100 {
                return Err(ModelError::NoData(format!(
                    "{} training rows for hours {}–{} ahead (meters with a week of known hours before each day)",
                    train.len(),
                    ahead.start,
                    ahead.end - 1
                )));
            }
            // The held-back days' rows: where each booster stops, and the band's calibration.
            let validation = (!cal_origins.is_empty()).then(|| {
                let keep = (config.max_rows as f64
                    / 4.0
                    / (frame.len() as f64 * cal_origins.len() as f64 * width).max(1.0))
                .min(1.0);
                rows(
                    frame,
                    &model.profiles,
                    cal_origins,
                    until,
                    ahead.clone(),
                    keep,
                    seed ^ 1,
                    calendar,
                )
            });
            let validation = validation.filter(|v| v.len() >= 100);
            let held = validation.as_ref().map(Rows::matrix);
            let held = held.as_ref().map(|(data, n)| Matrix::new(data, *n, WIDTH));
            let (data, n) = train.matrix();
            let matrix = Matrix::new(&data, n, WIDTH);
            // Weights of mean 1: the learner's regularisation works on sums of weights, so
            // their scale (Wh of the meters' levels) must not be.
            let mean_weight = train.weight.iter().sum::<f64>() / n.max(1) as f64;
            let weight: Vec<f64> = train.weight.iter().map(|w| w / mean_weight).collect();
            let mut boosters = Vec::with_capacity(QUANTILES.len());
            for (j, q) in QUANTILES.into_iter().enumerate() {
                let mut b = PerpetualBooster::default()
                    .set_objective(Objective::QuantileLoss { quantile: Some(q) })
                    .set_budget(config.budget)
                    .set_iteration_limit(Some(config.max_trees))
                    .set_memory_limit(Some(config.memory_gb))
                    .set_num_threads(threads)
                    .set_seed(config.seed);
                // With days held back, every booster grows to `max_trees` and is then cut
                // where it does best on them; without, perpetual's own stopping decides.
                if validation.is_some() {
                    b = b.set_stopping_rounds(Some(config.max_trees));
                }
                b.fit(&matrix, &train.targets(j), Some(&weight), None)
                    .map_err(|e| ModelError::Training(e.to_string()))?;
                if let (Some(v), Some(m)) = (&validation, &held) {
                    cut_where_best(&mut b, q, m, &v.targets(j), &v.weight);
                }
                boosters.push(b);
            }
            let mut stage = Stage {
                boosters,
                band_scale: 1.0,
            };
            if let (Some(v), Some(m)) = (&validation, &held) {
                stage.band_scale = stage.calibrate(m, v);
            }
            model.rows += n;
            model.stages.push(stage);
        }
        Ok(model)
    }

    /// Each day ahead's factor on the band's distances from the p50.
    pub fn band_scales(&self) -> Vec<f64> {
        self.stages.iter().map(|s| s.band_scale).collect()
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
        if names != features::NAMES
            || !model.profiles.is_valid()
            || model.stages.is_empty()
            || model
                .stages
                .iter()
                .any(|s| s.boosters.len() != QUANTILES.len())
        {
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
        let nan = Quantiles {
            p10: f64::NAN,
            p50: f64::NAN,
            p90: f64::NAN,
        };
        let origins: Vec<Option<Origin>> = series
            .iter()
            .map(|s| Origin::of(s, origin, &self.profiles))
            .collect();
        let mut out = vec![vec![nan; hours]; series.len()];
        let mut scratch = Vec::new();
        let mut row = [0.0; WIDTH];
        // Each day ahead by its own stage (the last stage for hours beyond the trained ones).
        for (d, first_hour) in (0..hours).step_by(STAGE_HOURS).enumerate() {
            let stage = &self.stages[d.min(self.stages.len() - 1)];
            let ahead = first_hour..hours.min(first_hour + STAGE_HOURS);
            let mut columns: Vec<Vec<f64>> = (0..WIDTH)
                .map(|_| Vec::with_capacity(series.len() * ahead.len()))
                .collect();
            let mut at = Vec::with_capacity(series.len() * ahead.len());
            let mut rows_anchors = Vec::with_capacity(series.len() * ahead.len());
            for (i, (s, o)) in series.iter().zip(&origins).enumerate() {
                let Some(o) = o else { continue };
                for k in ahead.clone() {
                    let target = origin + k as Hour;
                    features::row(s, o, target, calendar, &mut scratch, &mut row);
                    for (c, v) in columns.iter_mut().zip(row) {
                        c.push(v);
                    }
                    at.push((i, k, o.level));
                    rows_anchors.push(anchors(&row));
                }
            }
            if at.is_empty() {
                continue;
            }
            let data = columns.concat();
            let raw = stage.raw(&Matrix::new(&data, at.len(), WIDTH), &rows_anchors);
            let s = stage.band_scale;
            for ((i, k, level), q) in at.into_iter().zip(raw) {
                out[i][k] = Quantiles {
                    p10: (q[1] - s * (q[1] - q[0])) * level,
                    p50: q[1] * level,
                    p90: (q[1] + s * (q[2] - q[1])) * level,
                }
                .tidy();
            }
        }
        out
    }
}
