//! Whether a placed reading is new to its meter: a duplicate, a conflicting register for a time
//! already measured (the meter's clock is off), behind what the windows still accept (late, or
//! resent because the pipeline asked for it), or new.

use std::collections::BTreeMap;

use meterstack_core::metrics as m;
use meterstack_core::records::Rule;

use crate::transforms::intervals::Track;

/// What a reading placed at `t` is, against what its meter holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// New: it goes into the meter's track.
    New,
    /// The same reading arrived again.
    Duplicate,
    /// A different register for a time already measured.
    Conflicting {
        /// The register held for that time, Wh.
        held_wh: f64,
    },
    /// Older than the track's anchor or the allowed lateness: passed on with this rule
    /// ([`Rule::Late`], or [`Rule::Resent`] when the pipeline asked for it), windows not
    /// restated.
    Behind(Rule),
}

/// Judges a reading of `import_wh` placed at `t` (µs) against `track`; a resent interval is
/// struck off `missing`.
pub fn admit(
    track: &Track,
    missing: &mut BTreeMap<i64, bool>,
    t: i64,
    import_wh: f64,
    lateness: i64,
) -> Admission {
    if let Some(held) = track.point(t) {
        return if held.import_wh == import_wh {
            Admission::Duplicate
        } else {
            Admission::Conflicting {
                held_wh: held.import_wh,
            }
        };
    }
    let behind = track.first_ts().is_some_and(|a| t <= a)
        || track.last_ts().is_some_and(|n| t < n - lateness);
    if !behind {
        return Admission::New;
    }
    Admission::Behind(match missing.remove(&t) {
        Some(true) => {
            metrics::counter!(m::PIPELINE_RESEND_RECOVERED).increment(1);
            Rule::Resent
        }
        _ => Rule::Late,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transforms::intervals::{Point, SpanRules};

    #[test]
    fn duplicates_conflicts_late_and_resent_readings_are_told_apart() {
        const DT: i64 = 900_000_000;
        let rules = SpanRules {
            dt_us: DT,
            capacity_wh: 1e9,
            max_interval_wh: 1e6,
            reset_max_wh: 10.0,
            exchanged_on: None,
            outage_min_missing: 4,
            outage_max_share: 0.1,
            feeder_out: false,
        };
        let mut track = Track::default();
        for k in 0..10 {
            let point = Point {
                import_wh: 1000.0 + k as f64 * 100.0,
                export_wh: 0.0,
                power_w: None,
            };
            track.insert(k * DT, point, &rules);
        }
        let mut missing = BTreeMap::from([(2 * DT, true)]);
        let lateness = 4 * DT;
        assert_eq!(
            admit(&track, &mut missing, 5 * DT, 1500.0, lateness),
            Admission::Duplicate
        );
        assert_eq!(
            admit(&track, &mut missing, 5 * DT, 1501.0, lateness),
            Admission::Conflicting { held_wh: 1500.0 }
        );
        assert_eq!(
            admit(&track, &mut missing, 10 * DT, 2000.0, lateness),
            Admission::New
        );
        // Within the lateness: new (out of order); beyond it: late, or resent when asked for.
        assert_eq!(
            admit(&track, &mut missing, 2 * DT + 1, 1200.0, lateness),
            Admission::Behind(Rule::Late)
        );
        assert_eq!(
            admit(&track, &mut missing, 2 * DT, 1200.0, lateness),
            Admission::Duplicate
        );
        track.prune(8 * DT);
        assert_eq!(
            admit(&track, &mut missing, 2 * DT, 1200.0, lateness),
            Admission::Behind(Rule::Resent)
        );
        assert!(missing.is_empty());
    }
}
