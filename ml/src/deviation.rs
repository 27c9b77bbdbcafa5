//! Forecast-based anomalies: hours where a meter's actual consumption stays outside its
//! forecast's p10–p90 band raise `consumption_forecast_deviation` alerts.
//!
//! Pure: [`runs`] finds the stretches of hours outside the band on one side; [`decide`] turns
//! one meter's stretches and its active alert (if any) into lifecycle events. The `ml` role
//! applies them after each forecast to the hours since the forecast's origin (the last local
//! midnight: the band of those hours was forecast from data before it), and `meterstack eval`
//! scores them against the simulator's bypass and appliance-left-on faults.
//!
//! A household away for an evening drops below its band for a few hours and a busy evening
//! rises above it; a bypass lowers every hour, day and night, and an appliance left on raises
//! the night. So a stretch below the band must last longer than one above, and either must
//! differ from the forecast median by a share and an amount of energy. A home away on holiday
//! draws its flat standby power, while a bypass scales down a home still lived in: a stretch
//! below the band must also vary from hour to hour about as much as its forecast does. And a
//! home back from holiday, or busier than usual, rises above its band by varying amounts, while
//! an appliance left on adds a steady load: an hour counts as above the band only when it also
//! exceeds the median by a step.

use chrono::{DateTime, Utc};
use meterstack_core::records::{Alert, AlertEvent, AlertType};
use serde::{Deserialize, Serialize};

use crate::model::Quantiles;
use crate::series::{Hour, Series, start_of};

/// `[ml.deviation]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviationConfig {
    /// Raise the alerts at all.
    pub enabled: bool,
    /// Hours above the band a stretch needs before it opens an alert.
    pub min_hours_over: usize,
    /// Hours below the band a stretch needs before it opens an alert.
    pub min_hours_under: usize,
    /// In-band hours a stretch below the band may hold and go on (one above the band must be
    /// unbroken: a busy day at home is above it in bursts, an appliance left on steadily).
    pub bridge_hours: usize,
    /// An hour counts as above the band only if it also exceeds the median by this much, Wh.
    pub min_step_wh: f64,
    /// The stretch's energy differs from its forecast median by at least this share of it…
    pub min_share: f64,
    /// …and by at least this much, Wh.
    pub min_wh: f64,
    /// A stretch below the band must vary hour to hour at least this share as much as the
    /// forecast median does (coefficients of variation): a lived-in home, not one away.
    pub min_variation: f64,
}

impl Default for DeviationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_hours_over: 7,
            min_hours_under: 14,
            bridge_hours: 1,
            min_step_wh: 500.0,
            min_share: 0.4,
            min_wh: 1500.0,
            min_variation: 0.7,
        }
    }
}

impl DeviationConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_hours_over == 0 || self.min_hours_under == 0 {
            return Err(
                "ml.deviation.min_hours_over and min_hours_under must be at least 1".into(),
            );
        }
        let amounts = [
            self.min_share,
            self.min_variation,
            self.min_wh,
            self.min_step_wh,
        ];
        if !amounts.iter().all(|x| x.is_finite() && *x >= 0.0) {
            return Err(
                "ml.deviation.min_share, min_wh, min_step_wh and min_variation must be \
                 non-negative numbers"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Which side of the band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Above p90.
    Over,
    /// Below p10.
    Under,
}

impl Direction {
    /// Its name in the alert's evidence.
    pub fn name(self) -> &'static str {
        match self {
            Self::Over => "over",
            Self::Under => "under",
        }
    }

    /// The side an alert's evidence names.
    pub fn of(evidence: &serde_json::Value) -> Option<Self> {
        match evidence["direction"].as_str()? {
            "over" => Some(Self::Over),
            "under" => Some(Self::Under),
            _ => None,
        }
    }
}

/// A stretch of hours outside the band on one side.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Which side.
    pub direction: Direction,
    /// Its first hour.
    pub start: Hour,
    /// The hour after its last hour outside the band.
    pub end: Hour,
    /// Hours outside the band.
    pub hours: usize,
    /// Energy measured over `start..end`, Wh.
    pub actual_wh: f64,
    /// The forecast median over `start..end`, Wh.
    pub expected_wh: f64,
    /// The coefficient of variation of the measured hours over that of the forecast median.
    pub variation: f64,
    /// It reaches the newest known hour: it may go on.
    pub ongoing: bool,
    /// Long and large enough to raise an alert.
    pub qualifies: bool,
}

/// The stretches outside the band among `actual` (hours from `start`; `NaN` unknown) against
/// `band` (the same hours). An unknown hour ends a stretch; unknown hours after the newest
/// known one do not (the data has not arrived yet). `week_before` holds the same hours seven
/// days earlier (`NaN` unknown): a stretch qualifies only if it also differs from them as it
/// must from the forecast, when they are all known (a shop closed on Sundays is below a band
/// drawn mostly from weekdays, but not below last Sunday).
pub fn runs(
    start: Hour,
    actual: &[f64],
    band: &[Quantiles],
    week_before: &[f64],
    config: &DeviationConfig,
) -> Vec<Run> {
    let known = |i: usize| actual[i].is_finite() && band[i].p50.is_finite();
    let known_end = known_len(actual, band);
    let side = |i: usize| {
        let (a, q) = (actual[i], band[i]);
        if a > q.p90 && a - q.p50 >= config.min_step_wh {
            Some(Direction::Over)
        } else if a < q.p10 {
            Some(Direction::Under)
        } else {
            None
        }
    };
    let finish = |direction: Direction, first: usize, last: usize, hours: usize, ongoing: bool| {
        let actual_wh: f64 = actual[first..=last].iter().sum();
        let expected_wh: f64 = band[first..=last].iter().map(|q| q.p50).sum();
        let week: Option<f64> = week_before
            .get(first..=last)
            .filter(|w| w.iter().all(|x| x.is_finite()))
            .map(|w| w.iter().sum());
        let departs = |usual: f64| {
            let by = match direction {
                Direction::Over => actual_wh - usual,
                Direction::Under => usual - actual_wh,
            };
            by >= config.min_share * usual && by >= config.min_wh
        };
        let median: Vec<f64> = band[first..=last].iter().map(|q| q.p50).collect();
        // A flat forecast cannot tell a home away from one lived in.
        let variation = match cv(&median) {
            m if m > 0.0 => cv(&actual[first..=last]) / m,
            _ => 1.0,
        };
        let (min_hours, lived_in) = match direction {
            Direction::Over => (config.min_hours_over, true),
            Direction::Under => (config.min_hours_under, variation >= config.min_variation),
        };
        Run {
            direction,
            start: start + first as Hour,
            end: start + last as Hour + 1,
            hours,
            actual_wh,
            expected_wh,
            variation,
            ongoing,
            qualifies: lived_in
                && hours >= min_hours
                && departs(expected_wh)
                && week.is_none_or(departs),
        }
    };
    let mut out = Vec::new();
    // The open stretch: direction, first and last hour outside, hours outside.
    let mut open: Option<(Direction, usize, usize, usize)> = None;
    for i in 0..known_end {
        let here = known(i).then(|| side(i));
        match (open, here) {
            (Some((d, first, _, hours)), Some(Some(s))) if s == d => {
                open = Some((d, first, i, hours + 1));
            }
            (Some((Direction::Under, first, last, hours)), Some(None))
                if i - last <= config.bridge_hours =>
            {
                let d = Direction::Under;
                open = Some((d, first, last, hours));
            }
            (current, here) => {
                if let Some((d, first, last, hours)) = current {
                    out.push(finish(d, first, last, hours, false));
                }
                open = match here {
                    Some(Some(d)) => Some((d, i, i, 1)),
                    _ => None,
                };
            }
        }
    }
    if let Some((d, first, last, hours)) = open {
        out.push(finish(d, first, last, hours, true));
    }
    out
}

/// The coefficient of variation of `a` (0 for a mean of 0).
fn cv(a: &[f64]) -> f64 {
    let n = a.len() as f64;
    let mean = a.iter().sum::<f64>() / n;
    let var = a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    if mean > 0.0 { var.sqrt() / mean } else { 0.0 }
}

/// The number of hours up to and including the newest one with a measurement and a forecast.
fn known_len(actual: &[f64], band: &[Quantiles]) -> usize {
    let n = actual.len().min(band.len());
    (0..n)
        .rev()
        .find(|&i| actual[i].is_finite() && band[i].p50.is_finite())
        .map_or(0, |i| i + 1)
}

/// [`runs`] then [`decide`]: the events of the meter of `series` whose hours from `start`
/// were forecast as `band`, against its measurements then and the same hours a week before.
pub fn check(
    who: Subject<'_>,
    series: &Series,
    start: Hour,
    band: &[Quantiles],
    active: Option<&Active>,
    config: &DeviationConfig,
) -> Vec<Alert> {
    let hours_from = |from: Hour| -> Vec<f64> {
        (0..band.len())
            .map(|k| series.at(from + k as Hour))
            .collect()
    };
    let (actual, week_before) = (hours_from(start), hours_from(start - 7 * 24));
    let found = runs(start, &actual, band, &week_before, config);
    let known_end = start + known_len(&actual, band) as Hour;
    decide(who, start, known_end, &found, active, config)
}

/// A meter's active deviation alert, as the alert store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Active {
    /// Its id.
    pub alert_id: String,
    /// When its stretch began.
    pub start: DateTime<Utc>,
    /// Its side, from its evidence.
    pub direction: Option<Direction>,
}

impl Active {
    /// The active alert `alert_id`, begun at `start`, with `evidence`.
    pub fn new(alert_id: &str, start: DateTime<Utc>, evidence: &serde_json::Value) -> Self {
        Self {
            alert_id: alert_id.to_owned(),
            start,
            direction: Direction::of(evidence),
        }
    }

    /// The alert `opened` begins.
    pub fn opened(opened: &Alert) -> Self {
        Self::new(&opened.alert_id, opened.start, &opened.evidence)
    }
}

/// Who and when, for [`decide`].
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The meter.
    pub meter_id: &'a str,
    /// Its feeder, if known.
    pub feeder: Option<&'a str>,
    /// The model whose forecast the band is.
    pub model_version: &'a str,
    /// Now.
    pub at: DateTime<Utc>,
}

const KIND: AlertType = AlertType::ConsumptionForecastDeviation;

fn event(
    who: Subject<'_>,
    event: AlertEvent,
    alert_id: String,
    start: DateTime<Utc>,
    end: Option<Hour>,
    evidence: serde_json::Value,
) -> Alert {
    Alert {
        alert_id,
        event,
        kind: KIND,
        severity: KIND.severity(),
        meter_id: Some(who.meter_id.to_owned()),
        feeder: who.feeder.map(str::to_owned),
        start,
        end: end.map(start_of),
        at: who.at,
        evidence,
    }
}

fn evidence(run: &Run, who: Subject<'_>) -> serde_json::Value {
    serde_json::json!({
        "direction": run.direction.name(),
        "hours_outside_band": run.hours,
        "actual_wh": run.actual_wh.round(),
        "forecast_p50_wh": run.expected_wh.round(),
        "variation": (run.variation * 100.0).round() / 100.0,
        "model_version": who.model_version,
    })
}

/// The lifecycle events of one meter's deviation alerts, from its stretches over the hours
/// `window_start .. known_end` (see [`runs`]) and its active alert. Applying them again changes
/// nothing (the alert ids are stable). An alert opened before the window goes on while a
/// stretch of its side starts at the window's first hour, and resolves when the window's
/// known hours show none.
pub fn decide(
    who: Subject<'_>,
    window_start: Hour,
    known_end: Hour,
    runs: &[Run],
    active: Option<&Active>,
    config: &DeviationConfig,
) -> Vec<Alert> {
    let mut out = Vec::new();
    let mut active = active.cloned();
    let mut matched = false;
    for run in runs {
        let id = KIND.alert_id(who.meter_id, start_of(run.start));
        if let Some(a) = &active {
            let continues = a.start < start_of(window_start)
                && run.start == window_start
                && a.direction == Some(run.direction);
            if continues || a.alert_id == id {
                matched = true;
                if !run.ongoing {
                    out.push(event(
                        who,
                        AlertEvent::Resolved,
                        a.alert_id.clone(),
                        a.start,
                        Some(run.end),
                        evidence(run, who),
                    ));
                    active = None;
                }
                continue;
            }
        }
        if !run.qualifies {
            continue;
        }
        if let Some(a) = active.take() {
            // A new stretch: the older alert's is over.
            out.push(event(
                who,
                AlertEvent::Resolved,
                a.alert_id,
                a.start,
                Some(run.start),
                serde_json::json!({}),
            ));
        }
        let ev = evidence(run, who);
        out.push(event(
            who,
            AlertEvent::Opened,
            id.clone(),
            start_of(run.start),
            None,
            ev.clone(),
        ));
        if run.ongoing {
            active = out.last().map(Active::opened);
            matched = true;
        } else {
            out.push(event(
                who,
                AlertEvent::Resolved,
                id,
                start_of(run.start),
                Some(run.end),
                ev,
            ));
        }
    }
    // An active alert no stretch of the window continues is over once enough hours are known.
    if let Some(a) = active
        && !matched
        && known_end - window_start > config.bridge_hours as Hour
    {
        let end = window_start.max(crate::series::hour_of(a.start));
        out.push(event(
            who,
            AlertEvent::Resolved,
            a.alert_id,
            a.start,
            Some(end),
            serde_json::json!({}),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A band whose median rises by the hour of the day and falls back (a daily shape).
    fn band(n: usize) -> Vec<Quantiles> {
        (0..n)
            .map(|h| {
                let p50 = 400.0 + 10.0 * (h % 24) as f64;
                Quantiles {
                    p10: p50 - 200.0,
                    p50,
                    p90: p50 + 300.0,
                }
            })
            .collect()
    }

    fn who() -> Subject<'static> {
        Subject {
            meter_id: "m1",
            feeder: Some("f1"),
            model_version: "v1",
            at: start_of(1000),
        }
    }

    #[test]
    fn an_appliance_left_on_opens_then_resolves_once() {
        let config = DeviationConfig::default();
        // Hours 3..9 at 2.4 kWh, then normal.
        let mut actual: Vec<f64> = band(14).iter().map(|q| q.p50).collect();
        for a in &mut actual[3..10] {
            *a = 2400.0;
        }
        let found = runs(100, &actual, &band(14), &[], &config);
        assert_eq!(found.len(), 1, "{found:?}");
        let r = &found[0];
        assert_eq!(
            (r.direction, r.start, r.end, r.hours, r.ongoing, r.qualifies),
            (Direction::Over, 103, 110, 7, false, true)
        );
        // An hour back in band breaks a stretch above it: two short ones.
        let mut broken = actual.clone();
        broken[6] = band(14)[6].p50;
        let split = runs(100, &broken, &band(14), &[], &config);
        assert_eq!(split.len(), 2, "{split:?}");
        assert!(split.iter().all(|r| !r.qualifies));
        let events = decide(who(), 100, 114, &found, None, &config);
        let kinds: Vec<_> = events.iter().map(|e| e.event).collect();
        assert_eq!(kinds, [AlertEvent::Opened, AlertEvent::Resolved]);
        assert_eq!(events[0].alert_id, events[1].alert_id);
        assert_eq!(events[1].end, Some(start_of(110)));
        assert_eq!(events[0].evidence["direction"], "over");

        // Still going at the newest known hour (unknown hours after it do not end it).
        actual.truncate(10);
        actual.extend([f64::NAN; 4]);
        assert!(actual[..10].iter().all(|a| a.is_finite()));
        let found = runs(100, &actual, &band(14), &[], &config);
        assert!(found[0].ongoing && found[0].qualifies);
        let events = decide(who(), 100, 110, &found, None, &config);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, AlertEvent::Opened);
    }

    #[test]
    fn short_or_small_stretches_raise_nothing() {
        let config = DeviationConfig::default();
        // Above the band, but by less than a step: a busy day.
        let b = band(24);
        let busy: Vec<f64> = b.iter().map(|q| q.p90 + 100.0).collect();
        assert!(runs(0, &busy, &b, &[], &config).is_empty());
        // Three hours above the band: an evening, not a fault.
        let mut actual: Vec<f64> = band(24).iter().map(|q| q.p50).collect();
        for a in &mut actual[18..21] {
            *a = 2000.0;
        }
        // Ten hours below: an evening and night away.
        for a in &mut actual[0..10] {
            *a = 150.0;
        }
        let found = runs(0, &actual, &band(24), &[], &config);
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|r| !r.qualifies), "{found:?}");
        assert!(decide(who(), 0, 24, &found, None, &config).is_empty());
        // A bypass: all day at a third of the usual shape.
        let b = band(24);
        let actual: Vec<f64> = b.iter().map(|q| q.p50 / 3.0).collect();
        let found = runs(0, &actual, &b, &[], &config);
        assert_eq!(found.len(), 1);
        assert!(found[0].qualifies && found[0].ongoing, "{found:?}");
        assert_eq!(found[0].direction, Direction::Under);
        // A home away: as low, but flat standby, without the day's shape.
        let found = runs(0, &[150.0; 24], &b, &[], &config);
        assert_eq!(found.len(), 1);
        assert!(!found[0].qualifies, "{found:?}");
        // As low as the same hours a week before (a shop closed on Sundays): not a bypass.
        let last_week: Vec<f64> = actual.iter().map(|a| a * 1.1).collect();
        let found = runs(0, &actual, &b, &last_week, &config);
        assert_eq!(found.len(), 1);
        assert!(!found[0].qualifies, "{found:?}");
    }

    #[test]
    fn an_alert_from_before_the_window_goes_on_and_then_resolves() {
        let config = DeviationConfig::default();
        let active = Active {
            alert_id: KIND.alert_id("m1", start_of(80)),
            start: start_of(80),
            direction: Some(Direction::Under),
        };
        // The new day starts below the band again: still the same alert, even when short.
        let mut actual = vec![100.0; 3];
        actual.extend([f64::NAN; 21]);
        let found = runs(100, &actual, &band(24), &[], &config);
        assert!(!found[0].qualifies);
        assert!(decide(who(), 100, 103, &found, Some(&active), &config).is_empty());
        // It ends at hour 5.
        let mut actual = vec![100.0; 5];
        actual.extend([400.0; 5]);
        let found = runs(100, &actual, &band(10), &[], &config);
        let events = decide(who(), 100, 110, &found, Some(&active), &config);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (&events[0].alert_id, events[0].event, events[0].end),
            (&active.alert_id, AlertEvent::Resolved, Some(start_of(105)))
        );
        // A day in band resolves it at the window's start; one known hour is not enough.
        let calm = vec![400.0; 10];
        let events = decide(
            who(),
            100,
            110,
            &runs(100, &calm, &band(10), &[], &config),
            Some(&active),
            &config,
        );
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].end, Some(start_of(100)));
        assert!(decide(who(), 100, 101, &[], Some(&active), &config).is_empty());
    }

    #[test]
    fn unknown_hours_end_a_stretch_and_bands_without_a_forecast_are_unknown() {
        let config = DeviationConfig::default();
        let mut actual = vec![2400.0; 10];
        actual[5] = f64::NAN;
        let found = runs(0, &actual, &band(10), &[], &config);
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].end, found[0].ongoing), (5, false));
        let mut b = band(10);
        b[2].p50 = f64::NAN;
        let found = runs(0, &[2400.0; 10], &b, &[], &config);
        assert_eq!(found.iter().map(|r| r.hours).collect::<Vec<_>>(), [2, 7]);
    }
}
