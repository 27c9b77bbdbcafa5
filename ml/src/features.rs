//! Features of one forecast hour, known at the forecast's origin: only hours before the origin
//! are read, so a model can never see the future it forecasts.
//!
//! The exception is the outdoor temperature (optional, `NaN` without a series): at the target
//! hour it is a weather forecast, which is known at the origin.
//!
//! Energies are divided by the meter's level (its mean hour over the 7 days before the origin),
//! so that one global model serves a flat and a villa alike; the model predicts the target hour
//! as a multiple of the level, and training weights each row by the level so that its loss is
//! the absolute error in Wh.

use meterstack_core::store::meters::MeterClass;

use crate::calendar::LocalHour;
use crate::profiles::Profiles;
use crate::series::{Hour, Series};

/// The feature names, in column order (stored with each model).
pub const NAMES: [&str; 25] = [
    "lag_1d",
    "lag_2d",
    "lag_7d",
    "lag_14d",
    "same_hour_7d_mean",
    "same_hour_7d_median",
    "same_hour_7d_p10",
    "same_hour_7d_p90",
    "same_hour_3h_7d_median",
    "same_weekday_4w_median",
    "same_hour_28d_median",
    "last_day_mean",
    "last_day_max",
    "last_28d_mean",
    "last_7d_low",
    "log_level",
    "hour",
    "weekday",
    "holiday",
    "weekend_or_holiday",
    "horizon",
    "class",
    "temperature",
    "temperature_vs_7d",
    "profile_cluster",
];

/// Number of features.
pub const WIDTH: usize = NAMES.len();

/// The meter's level at `origin`: its mean hour over the 7 days before, Wh (`None` when it
/// has fewer than 3 days of known hours or used nothing).
pub fn level(series: &Series, origin: Hour) -> Option<f64> {
    let (sum, n) = (origin - 168..origin)
        .map(|h| series.at(h))
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n >= 72 && sum > 0.0).then(|| sum / n as f64)
}

/// The median, or a quantile, of finite values (sorts `v`).
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// The mean of `v` (`NaN` when empty).
fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn class_code(class: Option<MeterClass>) -> f64 {
    match class {
        None => f64::NAN,
        Some(MeterClass::Household) => 0.0,
        Some(MeterClass::Prosumer) => 1.0,
        Some(MeterClass::Commercial) => 2.0,
    }
}

/// What a meter's rows share at one origin: computed once per meter and origin, not per
/// forecast hour.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Origin {
    /// The origin: the first hour not known.
    pub hour: Hour,
    /// The meter's [`level`] there, Wh.
    pub level: f64,
    /// The features that depend on the origin only (`last_day_mean` … `log_level`, `class`,
    /// `profile_cluster`), energies relative to the level.
    shared: [(usize, f64); 7],
}

impl Origin {
    /// `series`' origin `hour`: `None` when it has no [`level`] there.
    pub fn of(series: &Series, hour: Hour, profiles: &Profiles) -> Option<Self> {
        let level = level(series, hour)?;
        let mut scratch = Vec::with_capacity(672);
        known(series, hour, hour - 24..hour, &mut scratch);
        let (day_mean, day_max) = (
            mean(&scratch),
            scratch.iter().copied().fold(f64::NAN, f64::max),
        );
        known(series, hour, hour - 672..hour, &mut scratch);
        let month_mean = mean(&scratch);
        known(series, hour, hour - 168..hour, &mut scratch);
        let week_low = quantile(&mut scratch, 0.05);
        Some(Self {
            hour,
            level,
            shared: [
                (11, day_mean / level),
                (12, day_max / level),
                (13, month_mean / level),
                (14, week_low / level),
                (15, level.ln()),
                (21, class_code(series.class)),
                (24, profiles.cluster(series, hour)),
            ],
        })
    }
}

/// Values of `series` at `hours` that are known before `origin`.
fn known(series: &Series, origin: Hour, hours: impl Iterator<Item = Hour>, out: &mut Vec<f64>) {
    out.clear();
    out.extend(
        hours
            .filter(|h| *h < origin)
            .map(|h| series.at(h))
            .filter(|v| v.is_finite()),
    );
}

/// Writes the features of hour `target` (whose local facts are `local`) forecast at `start`
/// (`target >= start.hour`) into `row`, energies divided by the level. `scratch` is reused
/// between calls.
pub fn row(
    series: &Series,
    start: &Origin,
    target: Hour,
    local: LocalHour,
    scratch: &mut Vec<f64>,
    row: &mut [f64; WIDTH],
) {
    let (origin, level) = (start.hour, start.level);
    let at = |h: Hour| {
        if h < origin {
            series.at(h) / level
        } else {
            f64::NAN
        }
    };
    // The same hour on earlier days, newest first, beginning with the newest day known.
    let first_day = (target - origin) / 24 + 1;
    let same_hour = |days: i64| (first_day..first_day + days).map(move |d| target - 24 * d);

    row[0] = at(target - 24);
    row[1] = at(target - 48);
    row[2] = at(target - 168);
    row[3] = at(target - 336);
    known(series, origin, same_hour(7), scratch);
    row[4] = mean(scratch) / level;
    row[5] = quantile(scratch, 0.5) / level;
    row[6] = quantile(scratch, 0.1) / level;
    row[7] = quantile(scratch, 0.9) / level;
    known(
        series,
        origin,
        same_hour(7).flat_map(|h| [h - 1, h, h + 1]),
        scratch,
    );
    row[8] = quantile(scratch, 0.5) / level;
    let first_week = (target - origin) / 168 + 1;
    known(
        series,
        origin,
        (first_week..first_week + 4).map(|w| target - 168 * w),
        scratch,
    );
    row[9] = quantile(scratch, 0.5) / level;
    known(series, origin, same_hour(28), scratch);
    row[10] = quantile(scratch, 0.5) / level;
    for (i, v) in start.shared {
        row[i] = v;
    }
    row[16] = f64::from(local.hour);
    row[17] = f64::from(local.weekday);
    row[18] = f64::from(u8::from(local.holiday));
    row[19] = f64::from(u8::from(local.holiday || local.weekday >= 5));
    row[20] = (target - origin + 1) as f64;
    // How much warmer or colder the target hour is than the days the same-hour features saw.
    let t = series.temperature_at(target);
    row[22] = t;
    scratch.clear();
    scratch.extend(
        same_hour(7)
            .map(|h| series.temperature_at(h))
            .filter(|v| v.is_finite()),
    );
    row[23] = t - mean(scratch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::{Calendar, CalendarConfig};

    #[test]
    fn features_read_nothing_at_or_after_the_origin() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Series::new("m", None);
        for h in 0..24 * 40 {
            s.set(h, 100.0 + (h % 24) as f64);
        }
        let origin = 24 * 30;
        let mut spiked = s.clone();
        for h in origin..s.end() {
            spiked.set(h, 1.0e9);
        }
        let profiles = Profiles::default();
        let at = Origin::of(&s, origin, &profiles).unwrap_or_else(|| panic!("no level"));
        let spiked_at =
            Origin::of(&spiked, origin, &profiles).unwrap_or_else(|| panic!("no level"));
        // (Its shared features are compared bit for bit in every row below.)
        assert_eq!(at.level, spiked_at.level);
        let mut scratch = Vec::new();
        let mut before = [0.0; WIDTH];
        let mut after = [0.0; WIDTH];
        for target in origin..origin + 48 {
            let local = cal.local(target);
            row(&s, &at, target, local, &mut scratch, &mut before);
            row(&spiked, &spiked_at, target, local, &mut scratch, &mut after);
            for (i, (a, b)) in before.iter().zip(&after).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits(),
                    "{} moved for target {target}",
                    NAMES[i]
                );
            }
        }
        // The second day ahead has no lag of one day.
        row(
            &s,
            &at,
            origin + 30,
            cal.local(origin + 30),
            &mut scratch,
            &mut before,
        );
        assert!(before[0].is_nan());
        assert!((before[1] * at.level - (100.0 + 6.0)).abs() < 1e-9);
    }

    #[test]
    fn temperature_features_read_the_target_hour_against_the_week_before() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let mut s = Series::new("m", None);
        let mut t = Series::new("*", None);
        for h in 0..24 * 40 {
            s.set(h, 100.0);
            // 5 °C, a cold snap of 0 °C from the origin on.
            t.set(h, if h >= 24 * 30 { 0.0 } else { 5.0 });
        }
        let origin = 24 * 30;
        let mut scratch = Vec::new();
        let mut r = [0.0; WIDTH];
        let at = Origin::of(&s, origin, &Profiles::default()).unwrap_or_else(|| panic!("no level"));
        let local = cal.local(origin + 5);
        row(&s, &at, origin + 5, local, &mut scratch, &mut r);
        assert!(r[22].is_nan() && r[23].is_nan(), "no series: unknown");
        s.temperature = Some(std::sync::Arc::new(t));
        row(&s, &at, origin + 5, local, &mut scratch, &mut r);
        assert_eq!((r[22], r[23]), (0.0, -5.0));
    }
}
