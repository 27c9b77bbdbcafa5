//! Checks a labels file against the readings that were actually received: every labelled
//! fault must be visible in the data the way its label says. Used by the simulator's tests,
//! by the integration test that reads the lake, and by anyone who doubts a labels file.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};

use crate::faults::{FaultType, Label};
use crate::meter::NOMINAL_V;
use crate::offline::Received;

/// One meter's received readings by timestamp (several when duplicated).
type ByTs<'a> = BTreeMap<DateTime<Utc>, Vec<&'a Received>>;

/// Checks `labels` against `received` (readings of a run of interval `dt` that covered
/// `[first, last]`). Returns one message per label that the data contradicts.
pub fn check(
    labels: &[Label],
    received: &[Received],
    dt: TimeDelta,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
) -> Vec<String> {
    let mut by_meter: HashMap<&str, ByTs<'_>> = HashMap::new();
    for r in received {
        by_meter
            .entry(r.0.meter_id.as_str())
            .or_default()
            .entry(r.0.ts)
            .or_default()
            .push(r);
    }
    let empty = ByTs::new();
    let mut errors = Vec::new();
    for label in labels {
        let meter = label.meter.as_deref().unwrap_or_default();
        let data = by_meter.get(meter).unwrap_or(&empty);
        let at = |ts: DateTime<Utc>| data.get(&ts).and_then(|v| v.first().copied());
        let window: Vec<DateTime<Utc>> = {
            let mut v = Vec::new();
            let mut t = label.start;
            while t < label.end && t <= last {
                v.push(t);
                t += dt;
            }
            v
        };
        let in_run = label.start >= first && label.start <= last;
        if !in_run {
            errors.push(format!("{label:?}: starts outside the run"));
            continue;
        }
        let param = |name: &str| {
            label
                .params
                .get(name)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(f64::NAN)
        };
        let mut fail = |what: String| {
            errors.push(format!(
                "{} {} at {}: {what}",
                label.kind.name(),
                meter,
                label.start
            ))
        };
        match label.kind {
            FaultType::Gap | FaultType::MeterOutage => {
                let present: Vec<_> = window.iter().filter(|t| data.contains_key(t)).collect();
                if !present.is_empty() {
                    fail(format!("readings present at {present:?}"));
                }
            }
            FaultType::FeederOutage => {
                let members: Vec<&str> = label.params["meters"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
                    .unwrap_or_default();
                if members.is_empty() {
                    fail("no meters named".into());
                }
                for m in members {
                    let d = by_meter.get(m).unwrap_or(&empty);
                    if let Some(t) = window.iter().find(|t| d.contains_key(t)) {
                        fail(format!("meter {m} has a reading at {t}"));
                    }
                }
            }
            FaultType::Duplicate => {
                let n = data.get(&label.start).map_or(0, Vec::len);
                if n < 2 {
                    fail(format!("{n} copies"));
                }
            }
            FaultType::OutOfOrder => {
                let k = param("after_readings") as i32;
                match (at(label.start), at(label.start + dt * k)) {
                    (Some(r), Some(next)) if r.1 >= next.1 => {}
                    (Some(r), Some(next)) => fail(format!(
                        "received {} before the reading {k} later ({})",
                        r.1, next.1
                    )),
                    _ => fail("reading or its successor missing".into()),
                }
            }
            FaultType::Late => {
                let delay = TimeDelta::seconds(param("delay_s") as i64);
                let sent_after = label.start + delay;
                let marker = sent_after
                    - TimeDelta::seconds(
                        sent_after.timestamp().rem_euclid(dt.num_seconds().max(1)),
                    );
                match (at(label.start), at(marker)) {
                    (Some(r), Some(m)) if r.1 >= m.1 => {}
                    (Some(r), Some(m)) => fail(format!(
                        "received {} before the reading of {marker} ({})",
                        r.1, m.1
                    )),
                    _ => fail("reading or marker missing".into()),
                }
            }
            FaultType::ClockSkew => {
                let skew = TimeDelta::seconds(param("skew_s") as i64);
                for t in &window {
                    if data.contains_key(t) {
                        fail(format!("a reading stamped on the grid at {t}"));
                    }
                    if !data.contains_key(&(*t + skew)) {
                        fail(format!("no reading stamped {}", *t + skew));
                    }
                }
            }
            FaultType::RegisterRollover | FaultType::MeterExchange | FaultType::RegisterReset => {
                // The last reading before and the first from `start` on (another fault may
                // hide the one at `start`).
                let before = data
                    .range(..label.start)
                    .next_back()
                    .and_then(|(_, v)| v.first());
                let after = data
                    .range(label.start..)
                    .next()
                    .and_then(|(_, v)| v.first());
                let floor = match label.kind {
                    FaultType::RegisterRollover => param("after_wh"),
                    FaultType::MeterExchange => param("new_import_wh"),
                    _ => 0.0,
                };
                match (before, after) {
                    (Some(b), Some(a))
                        if a.0.import_wh < b.0.import_wh && a.0.import_wh >= floor => {}
                    (Some(b), Some(a)) => fail(format!(
                        "register {} → {} (floor {floor})",
                        b.0.import_wh, a.0.import_wh
                    )),
                    _ => fail("no readings on both sides".into()),
                }
            }
            FaultType::Spike => match at(label.start) {
                Some(r) if r.0.power_w.unwrap_or(0.0) > param("rated_w") => {}
                other => fail(format!("power {:?}", other.map(|r| r.0.power_w))),
            },
            FaultType::FrozenRegister => {
                let frozen = param("import_wh");
                for t in &window {
                    match at(*t) {
                        Some(r) if r.0.import_wh == frozen => {}
                        Some(r) => fail(format!(
                            "register {} at {t}, frozen at {frozen}",
                            r.0.import_wh
                        )),
                        None => fail(format!("no reading at {t}")),
                    }
                }
            }
            FaultType::ReverseFlow => {
                let mut last_export = None;
                for t in &window {
                    match at(*t) {
                        Some(r) if r.0.power_w.unwrap_or(0.0) < 0.0 => {
                            if last_export.is_some_and(|e| r.0.export_wh.unwrap_or(0.0) <= e) {
                                fail(format!("export register did not grow at {t}"));
                            }
                            last_export = r.0.export_wh;
                        }
                        other => fail(format!("power {:?} at {t}", other.map(|r| r.0.power_w))),
                    }
                }
            }
            FaultType::VoltageSag | FaultType::VoltageSwell => {
                for t in &window {
                    let v = at(*t).and_then(|r| r.0.voltage_v);
                    let ok = v.is_some_and(|v| {
                        if label.kind == FaultType::VoltageSag {
                            v < 0.9 * NOMINAL_V
                        } else {
                            v > 1.1 * NOMINAL_V
                        }
                    });
                    if !ok {
                        fail(format!("voltage {v:?} at {t}"));
                    }
                }
            }
            FaultType::Bypass => {
                // The register grows slower than over the day before (when it was read then).
                let end = label.end.min(last);
                let before = growth_per_hour(data, label.start - TimeDelta::days(1), label.start);
                let during = growth_per_hour(data, label.start, end);
                if let (Some(b), Some(d)) = (before, during)
                    && b > 50.0
                    && d > b * 0.9
                {
                    fail(format!("{d:.0} Wh/h measured, {b:.0} Wh/h the day before"));
                }
            }
            FaultType::ApplianceLeftOn => {
                // The median power stays above what the appliance alone draws (readings that
                // export are left out: solar power may offset it by day; a skewed clock moves
                // timestamps off the grid).
                let extra = param("extra_w");
                let mut powers: Vec<f64> = data
                    .range(label.start..label.end)
                    .filter_map(|(_, v)| v.first().and_then(|r| r.0.power_w))
                    .filter(|p| *p >= 0.0)
                    .collect();
                powers.sort_by(f64::total_cmp);
                if let Some(median) = powers.get(powers.len() / 2)
                    && powers.len() >= 4
                    && *median < extra * 0.9
                {
                    fail(format!("median power {median} W, appliance {extra} W"));
                }
            }
            FaultType::ConnectionDrop => {
                if let Some(t) = window.iter().find(|t| !data.contains_key(t)) {
                    fail(format!("no reading at {t}: the meter did not backfill"));
                }
                // The backlog and the reading at `end` leave in one message when they fit.
                let fits = window.len() < crate::MAX_READINGS_PER_MESSAGE;
                if let (true, Some(r), Some(after)) = (fits, at(label.start), at(label.end))
                    && r.1 < after.1
                {
                    fail(format!(
                        "received {} before the reconnect ({})",
                        r.1, after.1
                    ));
                }
            }
        }
    }
    errors
}

/// How fast the import register grew between its readings at `from` and `to`, Wh per hour
/// (`None` without both readings, or if it did not grow monotonically in between).
fn growth_per_hour(data: &ByTs<'_>, from: DateTime<Utc>, to: DateTime<Utc>) -> Option<f64> {
    let span: Vec<f64> = data
        .range(from..=to)
        .filter_map(|(_, v)| v.first().map(|r| r.0.import_wh))
        .collect();
    let (first, last) = (*span.first()?, *span.last()?);
    let hours = (to - from).num_seconds() as f64 / 3600.0;
    (span.windows(2).all(|w| w[1] >= w[0])
        && hours > 0.0
        && data.contains_key(&from)
        && data.contains_key(&to))
    .then(|| (last - first) / hours)
}
