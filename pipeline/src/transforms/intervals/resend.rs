//! Gaps the interval stage estimated are remembered per meter; once older than
//! `resend_after` (and still missing) the pipeline asks the meter to send them again with a
//! `resend` command on `meter.commands`, and forgets a request twice as old.

use std::collections::BTreeMap;

use meterstack_core::metrics as m;
use meterstack_core::records::Rule;
use meterstack_core::wire::command::{Command, CommandMessage};

use super::Inserted;
use crate::state::{MeterState, ts};

/// Remembers the intervals of a gap before `t` (µs) as missing.
pub fn remember_gap(missing: &mut BTreeMap<i64, bool>, ins: &Inserted, t: i64, dt: i64) {
    if let Some(Rule::Gap) = ins.hole {
        let prev = t - ins.intervals_from_prev * dt;
        for missing_t in (1..ins.intervals_from_prev).map(|i| prev + i * dt) {
            missing.entry(missing_t).or_insert(false);
        }
    }
}

/// Resend requests, at `now` (µs), for the meters' gaps older than `resend_after`.
pub(crate) fn requests(
    meters: &mut BTreeMap<String, MeterState>,
    now: i64,
    resend_after: i64,
    dt: i64,
    out: &mut Vec<(String, CommandMessage)>,
) {
    let due = now - resend_after;
    for (id, ms) in meters.iter_mut() {
        ms.missing
            .retain(|t, requested| !(*requested && *t < due - resend_after));
        let wanted: Vec<i64> = ms
            .missing
            .iter_mut()
            .filter(|(t, requested)| **t <= due && !**requested)
            .map(|(t, requested)| {
                *requested = true;
                *t
            })
            .collect();
        for run in runs(&wanted, dt) {
            let (from, to) = (run[0], run[run.len() - 1] + dt);
            metrics::counter!(m::PIPELINE_RESEND_REQUESTED).increment(run.len() as u64);
            out.push((
                id.clone(),
                CommandMessage {
                    command_id: format!("resend-{id}-{from}"),
                    issued_at: ts(now),
                    command: Command::Resend {
                        from: ts(from),
                        to: ts(to),
                    },
                },
            ));
        }
    }
}

/// Splits sorted times into runs of consecutive grid points.
fn runs(times: &[i64], dt: i64) -> Vec<&[i64]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=times.len() {
        if i == times.len() || times[i] != times[i - 1] + dt {
            if start < i {
                out.push(&times[start..i]);
            }
            start = i;
        }
    }
    out
}
