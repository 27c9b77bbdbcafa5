//! Completeness: each feeder's received intervals per UTC day, emitted to `aggregates`
//! (`feeder_completeness`) and the gauge `meterstack_pipeline_completeness_ratio{feeder}` once
//! the day and the allowed lateness have passed.

use std::collections::BTreeMap;

use meterstack_core::metrics as m;
use meterstack_core::records::{Aggregate, FeederCompleteness};

use crate::registry::Registry;
use crate::state::ts;

/// Counts an interval starting at `start` as received for `feeder`'s completeness.
pub fn count_received(
    received: &mut BTreeMap<String, BTreeMap<i64, u64>>,
    feeder: Option<&str>,
    start: i64,
) {
    if let Some(f) = feeder {
        let day = start.div_euclid(86_400_000_000) * 86_400_000_000;
        *received
            .entry(f.to_owned())
            .or_default()
            .entry(day)
            .or_default() += 1;
    }
}

/// Emits the completeness of every day that closed by `now` (µs): the day plus `lateness`.
pub fn close_days(
    received: &mut BTreeMap<String, BTreeMap<i64, u64>>,
    registry: &Registry,
    now: i64,
    dt: i64,
    lateness: i64,
    out: &mut Vec<Aggregate>,
) {
    let day = 86_400_000_000_i64;
    let intervals_per_day = (day / dt) as u64;
    for (feeder, days) in received.iter_mut() {
        let closed: Vec<i64> = days
            .keys()
            .copied()
            .filter(|d| d + day + lateness <= now)
            .collect();
        for d in closed {
            let got = days.remove(&d).unwrap_or(0);
            let expected = registry.feeder_size(feeder) as u64 * intervals_per_day;
            let ratio = if expected == 0 {
                0.0
            } else {
                got as f64 / expected as f64
            };
            metrics::gauge!(m::PIPELINE_COMPLETENESS, "feeder" => feeder.clone()).set(ratio);
            out.push(Aggregate::FeederCompleteness(FeederCompleteness {
                feeder: feeder.clone(),
                day: ts(d).date_naive(),
                expected_intervals: expected,
                received_intervals: got,
                completeness: ratio,
            }));
        }
    }
}
