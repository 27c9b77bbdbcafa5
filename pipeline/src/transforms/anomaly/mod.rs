//! Anomaly detection: the alert lifecycle (at most one open alert per subject and type,
//! auto-resolution) and the per-meter consumption baseline (here); a meter's rules on each
//! reading ([`meter`]); silence and feeder-outage inference every minute ([`silence`]).

pub mod meter;
pub mod silence;

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::config;
use meterstack_core::records::{Alert, AlertEvent, AlertType};

/// An open alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Open {
    /// Its id.
    pub id: String,
    /// When the condition began, µs.
    pub start: i64,
}

/// The open alerts of one subject (a meter or a feeder).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Alerts {
    open: BTreeMap<AlertType, Open>,
}

/// Who an alert is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The meter, for meter alerts.
    pub meter: Option<&'a str>,
    /// The feeder, when known.
    pub feeder: Option<&'a str>,
}

fn ts(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// One lifecycle event, counted.
#[allow(clippy::too_many_arguments)]
fn event(
    event: AlertEvent,
    kind: AlertType,
    alert_id: String,
    subject: Subject<'_>,
    start: i64,
    end: Option<i64>,
    now: i64,
    evidence: serde_json::Value,
) -> Alert {
    metrics::counter!(meterstack_core::metrics::PIPELINE_ALERTS, "type" => kind.name(), "event" => event.name()).increment(1);
    Alert {
        alert_id,
        event,
        kind,
        severity: kind.severity(),
        meter_id: subject.meter.map(str::to_owned),
        feeder: subject.feeder.map(str::to_owned),
        start: ts(start),
        end: end.map(ts),
        at: ts(now),
        evidence,
    }
}

impl Alerts {
    /// Whether an alert of `kind` is open.
    pub fn is_open(&self, kind: AlertType) -> bool {
        self.open.contains_key(&kind)
    }

    /// The open alert of `kind`.
    pub fn get(&self, kind: AlertType) -> Option<&Open> {
        self.open.get(&kind)
    }

    /// Opens an alert of `kind` unless one is open; returns whether it opened.
    pub fn open(
        &mut self,
        kind: AlertType,
        subject: Subject<'_>,
        start: i64,
        now: i64,
        evidence: serde_json::Value,
        out: &mut Vec<Alert>,
    ) -> bool {
        if self.open.contains_key(&kind) {
            return false;
        }
        let who = match (subject.meter, subject.feeder) {
            (Some(m), _) => m.to_owned(),
            (None, Some(f)) => format!("feeder-{f}"),
            (None, None) => "fleet".to_owned(),
        };
        let id = kind.alert_id(&who, ts(start));
        self.open.insert(
            kind,
            Open {
                id: id.clone(),
                start,
            },
        );
        out.push(event(
            AlertEvent::Opened,
            kind,
            id,
            subject,
            start,
            None,
            now,
            evidence,
        ));
        true
    }

    /// Resolves the open alert of `kind`, if any (and if it resolves by itself).
    pub fn resolve(
        &mut self,
        kind: AlertType,
        subject: Subject<'_>,
        end: i64,
        now: i64,
        evidence: serde_json::Value,
        out: &mut Vec<Alert>,
    ) {
        if !kind.auto_resolves() {
            return;
        }
        let Some(open) = self.open.remove(&kind) else {
            return;
        };
        let end = Some(end.max(open.start));
        out.push(event(
            AlertEvent::Resolved,
            kind,
            open.id,
            subject,
            open.start,
            end,
            now,
            evidence,
        ));
    }

    /// Opens (`on`) or resolves (`!on`) an alert of `kind`.
    #[allow(clippy::too_many_arguments)]
    pub fn set(
        &mut self,
        kind: AlertType,
        on: bool,
        subject: Subject<'_>,
        at: i64,
        now: i64,
        evidence: serde_json::Value,
        out: &mut Vec<Alert>,
    ) {
        if on {
            self.open(kind, subject, at, now, evidence, out);
        } else {
            self.resolve(kind, subject, at, now, evidence, out);
        }
    }
}

/// A meter's consumption per hour of week, learned online: an exponentially weighted mean and
/// mean absolute deviation per bucket, updated with values clipped to the current band so
/// that an anomaly cannot teach the baseline that it is normal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    buckets: Vec<(f32, f32, u16)>,
}

/// The judgement of one observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judgement {
    /// Not enough history yet.
    Learning,
    /// Within the band.
    Normal,
    /// Outside: the mean and the allowed deviation.
    Outside {
        /// The bucket's mean, Wh.
        mean: f64,
        /// The band's half-width, Wh.
        band: f64,
    },
}

impl Baseline {
    /// The bucket (hour of week, UTC) of an interval starting at `start_us`.
    pub fn bucket(start_us: i64) -> usize {
        let t = ts(start_us);
        t.weekday().num_days_from_monday() as usize * 24 + t.hour() as usize
    }

    /// Judges `energy_wh` for the bucket of `start_us`, then learns from it.
    pub fn observe(
        &mut self,
        start_us: i64,
        energy_wh: f64,
        config: &config::Baseline,
    ) -> Judgement {
        if self.buckets.is_empty() {
            self.buckets = vec![(0.0, 0.0, 0); 168];
        }
        let (mean, dev, n) = &mut self.buckets[Self::bucket(start_us)];
        let (m, d) = (f64::from(*mean), f64::from(*dev));
        let band = config.threshold * d.max(0.1 * m).max(5.0);
        let judgement = if u32::from(*n) < config.min_samples {
            Judgement::Learning
        } else if (energy_wh - m).abs() > band {
            Judgement::Outside { mean: m, band }
        } else {
            Judgement::Normal
        };
        let x = if *n == 0 {
            energy_wh
        } else {
            energy_wh.clamp(m - band, m + band)
        };
        let a = if *n == 0 { 1.0 } else { config.alpha };
        let new_mean = m + a * (x - m);
        let new_dev = if *n == 0 {
            0.0
        } else {
            d + a * ((x - m).abs() - d)
        };
        *mean = new_mean as f32;
        *dev = new_dev as f32;
        *n = n.saturating_add(1);
        judgement
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_open_alert_per_type_and_resolution_closes_it() {
        let mut a = Alerts::default();
        let who = Subject {
            meter: Some("m-1"),
            feeder: Some("f-1"),
        };
        let mut out = Vec::new();
        assert!(a.open(
            AlertType::VoltageSag,
            who,
            10,
            10,
            serde_json::json!({}),
            &mut out
        ));
        assert!(!a.open(
            AlertType::VoltageSag,
            who,
            20,
            20,
            serde_json::json!({}),
            &mut out
        ));
        a.resolve(
            AlertType::VoltageSag,
            who,
            30,
            30,
            serde_json::json!({}),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].alert_id, out[1].alert_id);
        assert_eq!(out[1].event, AlertEvent::Resolved);
        // A reset waits for an operator.
        a.open(
            AlertType::RegisterReset,
            who,
            40,
            40,
            serde_json::json!({}),
            &mut out,
        );
        a.resolve(
            AlertType::RegisterReset,
            who,
            50,
            50,
            serde_json::json!({}),
            &mut out,
        );
        assert!(a.is_open(AlertType::RegisterReset));
    }

    #[test]
    fn the_baseline_learns_each_hour_of_week_and_flags_what_is_far_outside() {
        let config = config::Baseline::default();
        let mut b = Baseline::default();
        let week = 7 * 86_400_000_000_i64;
        let hour = 3_600_000_000_i64;
        for w in 0..10 {
            // Mondays 03:00 use ~100 Wh, Mondays 18:00 ~600 Wh.
            let j = b.observe(w * week + 3 * hour, 100.0 + (w % 3) as f64 * 5.0, &config);
            assert!(w < 8 || j == Judgement::Normal, "{w}: {j:?}");
            b.observe(w * week + 18 * hour, 600.0 + (w % 2) as f64 * 20.0, &config);
        }
        // 600 Wh at 03:00 is far outside that hour's normal, though normal at 18:00.
        assert!(matches!(
            b.observe(10 * week + 3 * hour, 600.0, &config),
            Judgement::Outside { .. }
        ));
        assert_eq!(
            b.observe(10 * week + 18 * hour, 610.0, &config),
            Judgement::Normal
        );
    }
}
