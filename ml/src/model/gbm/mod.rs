//! The learned global model: gradient-boosted trees (perpetual) over the features of
//! [`crate::features`], one booster per quantile and stage (the direct multi-horizon
//! strategy: the first day's hours, which have yesterday's lags, do not share trees with the
//! later hours, which do not), trained with quantile (pinball) loss on energy relative to each
//! meter's level and weighted by that level, so that the p50's loss is the absolute error in
//! Wh. The boosters learn the correction to the 7-day same-hour median (see `anchors`), not
//! the whole value. The p10 and p90 boosters learn from a subsample with larger steps
//! (`band_rows`, `band_budget`): they cost the most time per row, and the held-back days
//! calibrate the band's width anyway.
//!
//! Training rows are (meter, origin, target hour) for every local midnight of the training
//! window and the next `horizon` hours, sampled down to `max_rows` per stage. When the
//! window is long enough, its last `calibration_days` are held back: every booster is cut to
//! the trees that do best on them, and each stage's band p10–p90 is widened or narrowed
//! around the p50 so that it covers 80 % of those days (split conformal).
//!
//! Prediction runs on the boosters' trees copied into flat arrays (`Flat`), rows in parallel.

mod flat;

use std::ops::Range;

use perpetual::objective::Objective;
use perpetual::{Matrix, PerpetualBooster};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Forecaster, ModelError, ModelKind, Quantiles};
use crate::calendar::{Calendar, LocalHour};
use crate::features::{self, Origin, WIDTH};
use crate::profiles::Profiles;
use crate::series::{Hour, Series};
use flat::Flat;

/// `[ml.gbm]`: how the model learns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbmConfig {
    /// perpetual's budget: higher learns more (and takes longer); its effect on accuracy is
    /// not monotone (docs/BENCHMARKS.md).
    pub budget: f32,
    /// At most this many trees per p50 booster. With days held back, every booster grows its
    /// maximum and is cut where it does best on them; without, perpetual's budget stops it.
    pub max_trees: usize,
    /// Memory the learner may plan for, GB (it sizes its histogram arena from this; without
    /// it, from the machine's free memory).
    pub memory_gb: f32,
    /// At most this many training rows per stage (sampled evenly across meters and days; the
    /// second stage's 48 hours share them).
    pub max_rows: usize,
    /// At most this many of a stage's rows (a seeded draw) for its p10 and p90 boosters:
    /// the band's width is calibrated on the held-back days anyway, and these two boosters
    /// cost the most time per row.
    pub band_rows: usize,
    /// The p10 and p90 boosters' budget: lower takes larger steps, so that they reach their
    /// best in fewer trees (the p50, whose accuracy is the MAE, keeps `budget`).
    pub band_budget: f32,
    /// At most this many trees per p10 and p90 booster (grown, then cut like the p50's).
    pub band_max_trees: usize,
    /// Hours ahead of each local midnight it trains for (inference forecasts up to 48 hours
    /// from any hour of a day, from the midnight before it).
    pub horizon: usize,
    /// Days at the end of the window held back to calibrate the band.
    pub calibration_days: usize,
    /// Threads of training (0: all cores).
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
            band_rows: 50_000,
            band_budget: 0.5,
            band_max_trees: 20,
            horizon: 72,
            calibration_days: 14,
            threads: 0,
            clusters: 6,
            seed: 1,
        }
    }
}

/// Training rows: features, targets relative to the level, weights (the levels).
#[derive(Debug, Default)]
struct Rows {
    x: Vec<[f64; WIDTH]>,
    y: Vec<f64>,
    weight: Vec<f64>,
}

impl Rows {
    fn len(&self) -> usize {
        self.y.len()
    }

    /// Appends `other`'s rows.
    fn append(&mut self, other: Self) {
        self.x.extend(other.x);
        self.y.extend(other.y);
        self.weight.extend(other.weight);
    }

    /// The features column by column, as the learner reads them.
    fn columns(&self) -> Vec<f64> {
        (0..WIDTH)
            .flat_map(|c| self.x.iter().map(move |r| r[c]))
            .collect()
    }

    /// What quantile `q`'s booster learns: the target less its anchor.
    fn targets(&self, q: usize) -> Vec<f64> {
        self.y
            .iter()
            .zip(&self.x)
            .map(|(y, r)| y - anchors(r)[q])
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
/// `until`), each kept with probability `keep`; the meters in parallel.
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
    // The local facts of each origin's target hours, shared by every meter.
    let locals: Vec<Vec<LocalHour>> = origins
        .iter()
        .map(|o| ahead.clone().map(|k| calendar.local(o + k)).collect())
        .collect();
    let parts: Vec<Rows> = frame
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let mut out = Rows::default();
            let mut scratch = Vec::new();
            let mut row = [0.0; WIDTH];
            for (&origin, locals) in origins.iter().zip(&locals) {
                // Computed at the origin's first kept row: most origins keep none.
                let mut at = None;
                for (target, &local) in
                    (origin + ahead.start..(origin + ahead.end).min(until)).zip(locals)
                {
                    let y = s.at(target);
                    if !y.is_finite()
                        || draw(seed, i as u64, target * 64 + (target - origin)) >= keep
                    {
                        continue;
                    }
                    let Some(at) = at.get_or_insert_with(|| Origin::of(s, origin, profiles)) else {
                        break;
                    };
                    features::row(s, at, target, local, &mut scratch, &mut row);
                    out.x.push(row);
                    out.y.push(y / at.level);
                    out.weight.push(at.level);
                }
            }
            out
        })
        .collect();
    let mut out = Rows::default();
    for part in parts {
        out.append(part);
    }
    out
}

/// Keeps the first trees of `booster` — as many as make its pinball loss at quantile `q` on
/// the held-back rows `x` and `targets` (weighted like training by `weights`) smallest.
/// Boosting on noisy hourly energy overfits after a few dozen trees, and where perpetual's own
/// stopping lands varies from one sample to the next.
fn cut_where_best(
    booster: &mut PerpetualBooster,
    q: f64,
    x: &[[f64; WIDTH]],
    targets: &[f64],
    weights: &[f64],
) -> Result<(), ModelError> {
    let flat = Flat::of(booster)?;
    let per_tree: Vec<Vec<f64>> = (0..flat.roots.len())
        .map(|t| x.par_iter().map(|r| flat.tree(t, r)).collect())
        .collect();
    // The prediction with every tree, then tree by tree removed from the end.
    let mut prediction: Vec<f64> = x.par_iter().map(|r| flat.predict(r)).collect();
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
    Ok(())
}

/// The boosters of one stage.
#[derive(Serialize, Deserialize)]
struct Stage {
    /// Boosters for p10, p50, p90.
    boosters: Vec<PerpetualBooster>,
    /// Factor on the band's distances from the p50 (from the calibration days).
    band_scale: f64,
    /// The boosters as they predict.
    #[serde(skip)]
    flat: Vec<Flat>,
}

impl Stage {
    fn new(boosters: Vec<PerpetualBooster>) -> Result<Self, ModelError> {
        let mut stage = Self {
            boosters,
            band_scale: 1.0,
            flat: Vec::new(),
        };
        stage.compile()?;
        Ok(stage)
    }

    /// Builds the boosters' flat form (after training, or loading an artifact).
    fn compile(&mut self) -> Result<(), ModelError> {
        if self.boosters.len() != QUANTILES.len() || !self.band_scale.is_finite() {
            return Err(ModelError::Artifact(
                "its quantiles are not this version's".into(),
            ));
        }
        self.flat = self
            .boosters
            .iter()
            .map(Flat::of)
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    /// The three quantiles of `row`, relative to the level, the band around the p50.
    fn quantiles(&self, row: &[f64; WIDTH]) -> [f64; 3] {
        let a = anchors(row);
        let p = |j: usize| self.flat[j].predict(row) + a[j];
        let mid = p(1);
        [p(0).min(mid), mid, p(2).max(mid)]
    }

    /// The band scale that makes p10–p90 cover 80 % of `rows`.
    fn calibrate(&self, rows: &Rows) -> f64 {
        let raw: Vec<[f64; 3]> = rows.x.par_iter().map(|r| self.quantiles(r)).collect();
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
    /// One per stage: hours 0–23 after the origin, then the hours after them.
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

/// Hours of the first stage (the first day ahead).
const STAGE_HOURS: usize = 24;

impl Gbm {
    /// Fits on the hours of `frame` before `until`, on `config.threads` threads.
    pub fn fit(
        frame: &[&Series],
        until: Hour,
        calendar: &Calendar,
        config: &GbmConfig,
    ) -> Result<Self, ModelError> {
        if config.threads == 0 {
            return Self::fit_here(frame, until, calendar, config);
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .build()
            .map_err(|e| ModelError::Training(format!("threads: {e}")))?
            .install(|| Self::fit_here(frame, until, calendar, config))
    }

    /// [`Self::fit`] on the current rayon pool.
    fn fit_here(
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
        // Two stages: the first day, which has yesterday's lags, and the days after it.
        let stages = [
            0..STAGE_HOURS.min(config.horizon),
            STAGE_HOURS..config.horizon,
        ];
        for ahead in stages {
            if ahead.is_empty() {
                break;
            }
            let first_hour = ahead.start;
            let ahead = ahead.start as Hour..ahead.end as Hour;
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
            let data = train.columns();
            let n = train.len();
            let matrix = Matrix::new(&data, n, WIDTH);
            // The band's boosters learn from a seeded draw of the rows (a stride would keep
            // the same hours of every day when the rows are not sampled).
            let share = config.band_rows as f64 / n.max(1) as f64;
            let mut band = Rows::default();
            for (i, r) in train.x.iter().enumerate() {
                if draw(seed ^ 2, i as u64, 0) < share {
                    band.x.push(*r);
                    band.y.push(train.y[i]);
                    band.weight.push(train.weight[i]);
                }
            }
            let band_data = band.columns();
            let band_matrix = Matrix::new(&band_data, band.len(), WIDTH);
            let mut boosters = Vec::with_capacity(QUANTILES.len());
            for (j, q) in QUANTILES.into_iter().enumerate() {
                let (rows, matrix, budget, trees) = if j == 1 {
                    (&train, &matrix, config.budget, config.max_trees)
                } else {
                    (
                        &band,
                        &band_matrix,
                        config.band_budget,
                        config.band_max_trees,
                    )
                };
                // Weights of mean 1: the learner's regularisation works on sums of weights,
                // so their scale (Wh of the meters' levels) must not be.
                let mean_weight = rows.weight.iter().sum::<f64>() / rows.len().max(1) as f64;
                let weight: Vec<f64> = rows.weight.iter().map(|w| w / mean_weight).collect();
                let mut b = PerpetualBooster::default()
                    .set_objective(Objective::QuantileLoss { quantile: Some(q) })
                    .set_budget(budget)
                    .set_iteration_limit(Some(trees))
                    .set_memory_limit(Some(config.memory_gb))
                    .set_num_threads(threads)
                    .set_seed(config.seed);
                // With days held back, every booster grows to its maximum and is then cut
                // where it does best on them; without, perpetual's own stopping decides.
                if validation.is_some() {
                    b = b.set_stopping_rounds(Some(trees));
                }
                let started = std::time::Instant::now();
                b.fit(matrix, &rows.targets(j), Some(&weight), None)
                    .map_err(|e| ModelError::Training(e.to_string()))?;
                if let Some(v) = &validation {
                    cut_where_best(&mut b, q, &v.x, &v.targets(j), &v.weight)?;
                }
                tracing::debug!(
                    hours = ?ahead,
                    quantile = q,
                    rows = rows.len(),
                    trees = b.get_prediction_trees().len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "booster trained"
                );
                boosters.push(b);
            }
            let mut stage = Stage::new(boosters)?;
            if let Some(v) = &validation {
                stage.band_scale = stage.calibrate(v);
            }
            model.rows += n;
            model.stages.push(stage);
        }
        Ok(model)
    }

    /// Each stage's factor on the band's distances from the p50.
    pub fn band_scales(&self) -> Vec<f64> {
        self.stages.iter().map(|s| s.band_scale).collect()
    }

    /// The model as JSON (its artifact).
    pub fn to_json(&self) -> Result<Vec<u8>, ModelError> {
        serde_json::to_vec(self).map_err(|e| ModelError::Artifact(e.to_string()))
    }

    /// A model from its artifact; anything that is not one is refused.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ModelError> {
        let mut model: Self =
            serde_json::from_slice(bytes).map_err(|e| ModelError::Artifact(e.to_string()))?;
        let names: Vec<&str> = model.features.iter().map(String::as_str).collect();
        if names != features::NAMES || !model.profiles.is_valid() || model.stages.is_empty() {
            return Err(ModelError::Artifact(
                "its features are not this version's".into(),
            ));
        }
        for stage in &mut model.stages {
            stage.compile()?;
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
        let locals: Vec<LocalHour> = (0..hours)
            .map(|k| calendar.local(origin + k as Hour))
            .collect();
        // Meters in parallel; the first day by the first stage, the hours after it by the last.
        series
            .par_iter()
            .map(|s| {
                let Some(o) = Origin::of(s, origin, &self.profiles) else {
                    return vec![nan; hours];
                };
                let mut scratch = Vec::new();
                let mut row = [0.0; WIDTH];
                locals
                    .iter()
                    .enumerate()
                    .map(|(k, &local)| {
                        features::row(s, &o, origin + k as Hour, local, &mut scratch, &mut row);
                        let stage = &self.stages[(k / STAGE_HOURS).min(self.stages.len() - 1)];
                        let (q, scale) = (stage.quantiles(&row), stage.band_scale);
                        Quantiles {
                            p10: (q[1] - scale * (q[1] - q[0])) * o.level,
                            p50: q[1] * o.level,
                            p90: (q[1] + scale * (q[2] - q[1])) * o.level,
                        }
                        .tidy()
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
