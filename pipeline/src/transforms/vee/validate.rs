//! One reading through validation: placed on the grid (or its clock judged off), its values
//! checked, admitted against what its meter holds; and the records validation emits — the
//! clean reading with its flag, or the rejected one with its rule.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use meterstack_core::Reading;
use meterstack_core::metrics as m;
use meterstack_core::records::{CleanReading, RejectedReading, Rule};
use meterstack_core::wire::Rejection;

use super::{Admission, Placement, admit, flag, in_range, place};
use crate::config::Rules;
use crate::state::ts;
use crate::transforms::intervals::{Point, Track};

/// What validation made of a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Not used: the rule, the time it was judged at (µs) and why.
    Reject {
        /// The rule.
        rule: Rule,
        /// The reading's time, µs, where known.
        ts: Option<i64>,
        /// Why, for people.
        detail: String,
    },
    /// Behind what the windows accept (its rule is in `fired`): passed on, windows untouched.
    Behind {
        /// Its time on the grid, µs.
        t: i64,
    },
    /// New: it goes to the interval stage.
    New {
        /// Its time on the grid, µs.
        t: i64,
        /// Its registers.
        point: Point,
    },
}

/// Validates `r`, received at `received` (µs), for a meter of rated power `rated_w` holding
/// `track`; rules that fire are added to `fired`.
#[allow(clippy::too_many_arguments)]
pub fn validate(
    r: &Reading,
    received: i64,
    dt: i64,
    rules: &Rules,
    rated_w: f64,
    track: &Track,
    missing: &mut BTreeMap<i64, bool>,
    lateness: i64,
    fired: &mut Vec<Rule>,
) -> Verdict {
    let reported = r.ts.timestamp_micros();
    let t = match place(reported, received, dt, rules) {
        Placement::OnGrid(t) => t,
        Placement::Corrected(t) => {
            fired.push(Rule::ClockSkew);
            t
        }
        Placement::Unplaceable => {
            return Verdict::Reject {
                rule: Rule::ClockSkew,
                ts: Some(reported),
                detail: format!(
                    "timestamp {} is off the {}-minute grid and its arrival at {} does not tell the true time",
                    r.ts,
                    dt / 60_000_000,
                    ts(received)
                ),
            };
        }
    };
    if !in_range(r.voltage_v, r.power_w, rated_w, rules) {
        fired.push(Rule::Range);
    }
    let point = Point {
        import_wh: r.import_wh,
        export_wh: r.export_wh.unwrap_or(0.0),
        power_w: r.power_w,
    };
    match admit(track, missing, t, point.import_wh, lateness) {
        Admission::New => Verdict::New { t, point },
        Admission::Duplicate => Verdict::Reject {
            rule: Rule::Duplicate,
            ts: Some(t),
            detail: "the same reading arrived again".to_owned(),
        },
        // Two different registers for one time: the meter's clock is off.
        Admission::Conflicting { held_wh } => Verdict::Reject {
            rule: Rule::ClockSkew,
            ts: Some(t),
            detail: format!(
                "a different reading for {}, already measured (import {} Wh, held {held_wh} Wh)",
                ts(t),
                point.import_wh,
            ),
        },
        Admission::Behind(rule) => {
            fired.push(rule);
            Verdict::Behind { t }
        }
    }
}

/// The clean record of `r` at grid time `t` with the rules that fired, counted.
pub fn clean(r: &Reading, t: i64, received: i64, fired: &[Rule]) -> CleanReading {
    let reported = r.ts.timestamp_micros();
    let (quality, rule) = flag(fired);
    let also = fired.iter().copied().filter(|r| Some(*r) != rule).collect();
    metrics::counter!(m::PIPELINE_READINGS, "quality" => quality.name(), "rule" => rule.map_or("none", Rule::name)).increment(1);
    CleanReading {
        meter_id: r.meter_id.to_string(),
        ts: ts(t),
        reported_ts: (reported != t).then(|| ts(reported)),
        import_wh: r.import_wh,
        export_wh: r.export_wh,
        power_w: r.power_w,
        voltage_v: r.voltage_v,
        current_a: r.current_a,
        seq: r.seq,
        received_at: ts(received),
        quality,
        rule,
        also,
    }
}

/// The rejected record of `r` under `rule`, counted.
pub fn rejected(
    r: &Reading,
    received: i64,
    rule: Rule,
    at: Option<i64>,
    detail: String,
) -> RejectedReading {
    metrics::counter!(m::PIPELINE_READINGS, "quality" => "rejected", "rule" => rule.name())
        .increment(1);
    RejectedReading {
        meter_id: Some(r.meter_id.to_string()),
        ts: at.map(ts),
        received_at: ts(received),
        rule,
        reason: None,
        detail,
        reading: serde_json::to_value(r).ok(),
    }
}

/// The rejected record of a message of `meter_id` received at `received` (or of one reading
/// of it) that the decoder refused, counted; a refused reading keeps the message's text.
pub fn undecodable(
    meter_id: Option<String>,
    received: DateTime<Utc>,
    message: &[u8],
    rejection: Rejection,
) -> RejectedReading {
    metrics::counter!(m::PIPELINE_READINGS, "quality" => "rejected", "rule" => Rule::Schema.name())
        .increment(1);
    let reading = rejection.index.map(|_| {
        let text = String::from_utf8_lossy(message)
            .chars()
            .take(1024)
            .collect();
        serde_json::Value::String(text)
    });
    RejectedReading {
        meter_id,
        ts: None,
        received_at: received,
        rule: Rule::Schema,
        reason: Some(rejection.reason.code().to_owned()),
        detail: rejection.detail,
        reading,
    }
}
