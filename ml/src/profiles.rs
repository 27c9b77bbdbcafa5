//! Load-profile clusters (linfa k-means): meters grouped by the shape of their day, a feature
//! that tells the global model which kind of day a meter lives (an evening peak, a working
//! day, a midday dip under solar) beyond its registry class.
//!
//! A meter's shape at an origin is its mean energy at each of the 24 hours after a local
//! midnight over the 28 days before the origin, divided by its mean hour: it reads nothing at
//! or after the origin. The clusters are fitted once, on every training meter's shape at the
//! end of the training window, and stored with the model.

use linfa::DatasetBase;
use linfa::traits::Fit;
use linfa_clustering::KMeans;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::model::ModelError;
use crate::series::{Hour, Series};

/// Hours of a shape.
const HOURS: usize = 24;

/// Days a shape averages.
const DAYS: i64 = 28;

/// `series`' shape before `origin` (a local midnight), each hour of the day relative to its
/// mean hour; `None` with fewer than 7 known days' worth of hours, a zero mean, or an hour of
/// the day never known.
pub fn shape(series: &Series, origin: Hour) -> Option<[f64; HOURS]> {
    let mut sum = [0.0; HOURS];
    let mut n = [0usize; HOURS];
    for (k, h) in (origin - DAYS * 24..origin).enumerate() {
        let v = series.at(h);
        if v.is_finite() {
            sum[k % HOURS] += v;
            n[k % HOURS] += 1;
        }
    }
    let known: usize = n.iter().sum();
    if known < 7 * HOURS || n.contains(&0) {
        return None;
    }
    let mut out = [0.0; HOURS];
    for ((o, s), c) in out.iter_mut().zip(sum).zip(n) {
        *o = s / c as f64;
    }
    let mean = out.iter().sum::<f64>() / HOURS as f64;
    if mean <= 0.0 {
        return None;
    }
    for o in &mut out {
        *o /= mean;
    }
    Some(out)
}

/// The fitted clusters: their centres.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profiles {
    centroids: Vec<Vec<f64>>,
}

impl Profiles {
    /// `k` clusters of the shapes of `frame` at `origin` (fewer when there are fewer
    /// meters with a shape); none when `k` is 0 or no meter has one.
    pub fn fit(frame: &[&Series], origin: Hour, k: usize) -> Result<Self, ModelError> {
        let shapes: Vec<[f64; HOURS]> = frame.iter().filter_map(|s| shape(s, origin)).collect();
        let k = k.min(shapes.len());
        if k == 0 {
            return Ok(Self::default());
        }
        let data = Array2::from_shape_vec((shapes.len(), HOURS), shapes.concat())
            .map_err(|e| ModelError::Training(format!("load-profile shapes: {e}")))?;
        // linfa's default generator is seeded: the same frame gives the same clusters.
        let model = KMeans::params(k)
            .max_n_iterations(100)
            .fit(&DatasetBase::from(data))
            .map_err(|e| ModelError::Training(format!("load-profile clusters: {e}")))?;
        Ok(Self {
            centroids: model
                .centroids()
                .rows()
                .into_iter()
                .map(|r| r.to_vec())
                .collect(),
        })
    }

    /// How many clusters.
    pub fn len(&self) -> usize {
        self.centroids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.centroids.is_empty()
    }

    /// The cluster of `series` at `origin` (its nearest centre), `NaN` without a shape or
    /// clusters.
    pub fn cluster(&self, series: &Series, origin: Hour) -> f64 {
        let Some(shape) = shape(series, origin) else {
            return f64::NAN;
        };
        let distance = |c: &Vec<f64>| -> f64 {
            c.iter()
                .zip(shape)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
        };
        self.centroids
            .iter()
            .enumerate()
            .min_by(|a, b| distance(a.1).total_cmp(&distance(b.1)))
            .map_or(f64::NAN, |(i, _)| i as f64)
    }

    /// Whether every centre has 24 finite hours (a stored model is checked with it).
    pub fn is_valid(&self) -> bool {
        self.centroids
            .iter()
            .all(|c| c.len() == HOURS && c.iter().all(|v| v.is_finite()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A meter with an evening peak (`evening`) or a working-day hump.
    fn meter(id: &str, evening: bool, scale: f64) -> Series {
        let mut s = Series::new(id, None);
        for h in 0..24 * 40 {
            let hour = h % 24;
            let v = match (evening, hour) {
                (true, 17..=21) => 4.0,
                (false, 8..=17) => 4.0,
                _ => 1.0,
            };
            s.set(h, v * scale);
        }
        s
    }

    #[test]
    fn meters_of_one_shape_share_a_cluster_whatever_their_size() {
        let frame: Vec<Series> = (0..10)
            .map(|i| meter(&format!("m{i}"), i % 2 == 0, 1.0 + i as f64))
            .collect();
        let refs: Vec<&Series> = frame.iter().collect();
        let origin = 24 * 35;
        let p = Profiles::fit(&refs, origin, 2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.len(), 2);
        assert!(p.is_valid());
        let evening = p.cluster(&frame[0], origin);
        let day = p.cluster(&frame[1], origin);
        assert_ne!(evening, day);
        for (i, s) in frame.iter().enumerate() {
            let want = if i % 2 == 0 { evening } else { day };
            assert_eq!(p.cluster(s, origin), want, "{}", s.meter_id);
        }
    }

    #[test]
    fn a_shape_reads_nothing_at_or_after_the_origin_and_needs_a_week() {
        let s = meter("m", true, 2.0);
        let origin = 24 * 35;
        let before = shape(&s, origin);
        let mut spiked = s.clone();
        for h in origin..s.end() {
            spiked.set(h, 1.0e9);
        }
        assert_eq!(shape(&spiked, origin), before);
        assert!(shape(&s, 24 * 6).is_none(), "six days are too few");
        let p = Profiles::fit(&[&s], 24 * 6, 3).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.is_empty() && p.cluster(&s, origin).is_nan());
    }
}
