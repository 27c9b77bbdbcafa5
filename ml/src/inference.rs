//! Inference (the Fargate → DynamoDB of the AWS design): every meter's forecast of the next
//! hours from the current model, with feeder and fleet totals, upserted into the SQL store's
//! `forecasts` and `forecast_totals`.
//!
//! A forecast is made from the last local midnight at or before its time, with data before that
//! midnight only — the setting the model was trained in (day-ahead from midnight) — and covers
//! `hours` hours from the hour of its time. Totals add the meters' medians; their band adds the
//! meters' half-widths in quadrature (independent meters), so a feeder's band is narrower than
//! the sum of its meters' bands.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use meterstack_core::store::forecasts::{ForecastHour, NewForecast, Subject};
use meterstack_pipeline::Registry;

use crate::calendar::Calendar;
use crate::model::{Forecaster, Quantiles};
use crate::series::{Hour, Series, hour_of, start_of};

/// Meters forecast per model call (bounds the feature matrix).
const CHUNK: usize = 2_000;

/// The origin and the first forecast hour of a forecast made at `at`.
pub fn origin(calendar: &Calendar, at: DateTime<Utc>) -> (Hour, Hour) {
    let now = hour_of(at);
    (calendar.midnight(now), now)
}

/// Quantiles of consecutive hours from `first`, as stored.
fn hours_from(first: Hour, q: &[Quantiles]) -> Vec<ForecastHour> {
    q.iter()
        .enumerate()
        .map(|(k, q)| ForecastHour {
            ts: start_of(first + k as Hour),
            p10: q.p10,
            p50: q.p50,
            p90: q.p90,
        })
        .collect()
}

#[derive(Default)]
struct Total {
    meters: u32,
    p50: Vec<f64>,
    low: Vec<f64>,
    high: Vec<f64>,
}

impl Total {
    fn add(&mut self, q: &[Quantiles]) {
        if self.p50.is_empty() {
            self.p50 = vec![0.0; q.len()];
            self.low = vec![0.0; q.len()];
            self.high = vec![0.0; q.len()];
        }
        self.meters += 1;
        for (k, q) in q.iter().enumerate() {
            self.p50[k] += q.p50;
            self.low[k] += (q.p50 - q.p10).powi(2);
            self.high[k] += (q.p90 - q.p50).powi(2);
        }
    }

    fn hours(&self, first: Hour) -> Vec<ForecastHour> {
        (0..self.p50.len())
            .map(|k| ForecastHour {
                ts: start_of(first + k as Hour),
                p10: (self.p50[k] - self.low[k].sqrt()).max(0.0),
                p50: self.p50[k],
                p90: self.p50[k] + self.high[k].sqrt(),
            })
            .collect()
    }
}

/// Forecasts `hours` hours from `at` for every meter of `series` that has enough history,
/// with feeder (from `registry`) and fleet totals. `past` is handed each such meter's forecast
/// of the hours between the origin and `at` (today's hours so far, forecast from midnight).
#[allow(clippy::too_many_arguments)]
pub fn forecast(
    model: &dyn Forecaster,
    series: &[Series],
    registry: &Registry,
    calendar: &Calendar,
    at: DateTime<Utc>,
    hours: usize,
    mut progress: impl FnMut(usize, usize),
    mut past: impl FnMut(&Series, &[Quantiles]),
) -> Vec<NewForecast> {
    let (origin, first) = origin(calendar, at);
    let skip = (first - origin) as usize;
    let mut out = Vec::with_capacity(series.len() + 16);
    let mut feeders: BTreeMap<String, Total> = BTreeMap::new();
    let mut fleet = Total::default();
    for (done, chunk) in series.chunks(CHUNK).enumerate() {
        let refs: Vec<&Series> = chunk.iter().collect();
        let predicted = model.predict(&refs, origin, skip + hours, calendar);
        for (s, q) in chunk.iter().zip(predicted) {
            let (before, q) = q.split_at(skip);
            if q.iter().any(|q| !q.p50.is_finite()) {
                continue;
            }
            past(s, before);
            fleet.add(q);
            if let Some(feeder) = registry.get(&s.meter_id).and_then(|m| m.feeder.clone()) {
                feeders.entry(feeder).or_default().add(q);
            }
            out.push(NewForecast {
                subject: Subject::Meter(s.meter_id.clone()),
                meters: 1,
                hours: hours_from(first, q),
            });
        }
        progress(((done + 1) * CHUNK).min(series.len()), series.len());
    }
    for (name, total) in feeders {
        out.push(NewForecast {
            subject: Subject::Feeder(name),
            meters: total.meters,
            hours: total.hours(first),
        });
    }
    if fleet.meters > 0 {
        out.push(NewForecast {
            subject: Subject::Fleet,
            meters: fleet.meters,
            hours: fleet.hours(first),
        });
    }
    out
}

/// A forecast as meterstack would have made it at a past time.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOf {
    /// The model used: the newest whose training data ended by then.
    pub model_version: String,
    /// Meters summed (1 for a meter).
    pub meters: u32,
    /// The hours asked for.
    pub hours: Vec<ForecastHour>,
}

/// What meterstack would have forecast at `t` for `subject`: the newest registered model whose
/// training data ended by `t`, fed only data before the local midnight at or before `t`, for
/// `hours` hours from `from`. `from` must lie between that midnight and the model's horizon.
#[allow(clippy::too_many_arguments)]
pub async fn as_of(
    lake: &meterstack_lake::query::Lake,
    store: &meterstack_core::store::SqlStore,
    models: &crate::registry::ModelRegistry,
    registry: &Registry,
    calendar: &Calendar,
    subject: &Subject,
    t: DateTime<Utc>,
    from: DateTime<Utc>,
    hours: usize,
) -> Result<AsOf, crate::MlError> {
    use crate::MlError;
    let meta = models.newest_before(t).await?.ok_or(MlError::NoModel(t))?;
    let (_, model) = models.load(&meta.version).await?;
    let origin = calendar.midnight(hour_of(t));
    let first = hour_of(from);
    let skip = first - origin;
    if skip < 0 || skip as usize + hours > meta.params.horizon {
        return Err(MlError::Invalid(format!(
            "a forecast as of {t} starts from {} and reaches {} hours ahead: `from` and `hours` must lie in that span",
            start_of(origin),
            meta.params.horizon
        )));
    }
    let (pattern, members): (String, Option<std::collections::HashSet<String>>) = match subject {
        Subject::Meter(id) => (id.clone(), Some([id.clone()].into())),
        Subject::Feeder(f) => {
            let members: std::collections::HashSet<String> = registry
                .meters()
                .filter(|(_, m)| m.feeder.as_deref() == Some(f.as_str()))
                .map(|(id, _)| id.to_owned())
                .collect();
            ("%".into(), Some(members))
        }
        Subject::Fleet => ("%".into(), None),
    };
    let until = start_of(origin);
    let mut series = crate::source::hourly(
        lake,
        store,
        registry,
        (until - chrono::Duration::days(35), until),
        Some(&pattern),
        |_| {},
    )
    .await?;
    if let Some(members) = &members {
        series.retain(|s| members.contains(&s.meter_id));
    }
    let refs: Vec<&Series> = series.iter().collect();
    let predicted = model.predict(&refs, origin, skip as usize + hours, calendar);
    let mut total = Total::default();
    for q in &predicted {
        let q = &q[skip as usize..];
        if q.iter().all(|q| q.p50.is_finite()) {
            total.add(q);
        }
    }
    if total.meters == 0 {
        return Err(MlError::NoData(format!(
            "no meter of {subject:?} had a week of measured hours before {until}"
        )));
    }
    let hours = if matches!(subject, Subject::Meter(_)) {
        hours_from(first, &predicted[0][skip as usize..])
    } else {
        total.hours(first)
    };
    Ok(AsOf {
        model_version: meta.version,
        meters: total.meters,
        hours,
    })
}
