//! Register → interval energy: one meter's cumulative registers become energy per interval of
//! the grid, whatever order the readings arrive in.
//!
//! The track holds the readings of the open region (from an anchor, the newest finalized
//! reading, to the newest) and the intervals between them. Inserting a reading recomputes the
//! one or two spans it touches, so the intervals always partition `(anchor, newest]` and, for
//! each span between consecutive readings, sum to the register difference (unwrapped across a
//! rollover): **energy is conserved**. A span longer than one interval is a hole: its energy is
//! spread evenly (a gap, estimated) or, when the registers hardly moved while the surrounding
//! power says they should have, put in its last interval (an outage: no supply, no energy).
//!
//! The same code computes intervals in the stream (`Processor`) and, later, in the lake's ETL.

pub mod resend;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate};
use serde::{Deserialize, Serialize};

use meterstack_core::records::{Quality, Rule};

use crate::config::Rules;

/// One reading's registers and power.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Import register, Wh.
    pub import_wh: f64,
    /// Export register, Wh (0 when the meter has none).
    pub export_wh: f64,
    /// Reported power, W.
    pub power_w: Option<f64>,
}

/// One interval's energy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// Imported energy, Wh.
    pub energy_wh: f64,
    /// Exported energy, Wh.
    pub export_wh: f64,
    /// Measured or estimated.
    pub quality: Quality,
    /// Why it is estimated (or a note on a measured interval, such as a rollover).
    pub rule: Option<Rule>,
}

/// How the import register moved between two readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Forward.
    Normal,
    /// Past its capacity and around.
    Rollover,
    /// The meter was exchanged (registry date), registers restarted.
    Exchange,
    /// Dropped to near zero without an exchange.
    Reset,
    /// Backwards, none of the above: the reading cannot be right.
    Negative,
}

/// What the span computation needs to know about the meter.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRules {
    /// The interval, µs.
    pub dt_us: i64,
    /// Import register modulus, Wh.
    pub capacity_wh: f64,
    /// The most energy one interval can plausibly hold (rated power × interval × margin), Wh.
    pub max_interval_wh: f64,
    /// A drop to at most this is a reset.
    pub reset_max_wh: f64,
    /// The registry's exchange date.
    pub exchanged_on: Option<NaiveDate>,
    /// Holes of at least this many missing intervals may be outages…
    pub outage_min_missing: u32,
    /// …when the registers moved by at most this share of what the power predicts.
    pub outage_max_share: f64,
    /// The meter's feeder is out (holes are feeder outages rather than meter outages).
    pub feeder_out: bool,
}

impl SpanRules {
    /// The span rules of a meter under `rules`, of rated power `rated_w`, on a grid of `dt_us`.
    pub fn new(
        rules: &Rules,
        dt_us: i64,
        rated_w: f64,
        exchanged_on: Option<NaiveDate>,
        feeder_out: bool,
    ) -> Self {
        Self {
            dt_us,
            capacity_wh: rules.register_capacity_wh,
            max_interval_wh: rated_w * (dt_us as f64 / 3.6e9) * 3.0,
            reset_max_wh: rules.reset_max_wh,
            exchanged_on,
            outage_min_missing: rules.outage_min_missing,
            outage_max_share: rules.outage_max_share,
            feeder_out,
        }
    }
}

/// The energy between two readings `k` intervals apart, and how the register got there.
pub fn step(
    prev: &Point,
    prev_ts: i64,
    cur: &Point,
    cur_ts: i64,
    rules: &SpanRules,
) -> (Step, f64) {
    let delta = cur.import_wh - prev.import_wh;
    if delta >= 0.0 {
        return (Step::Normal, delta);
    }
    let date = |us: i64| DateTime::from_timestamp_micros(us).map(|t| t.date_naive());
    if let (Some(ex), Some(a), Some(b)) = (rules.exchanged_on, date(prev_ts), date(cur_ts))
        && a <= ex
        && ex <= b
    {
        return (Step::Exchange, restart_energy(cur, prev_ts, cur_ts));
    }
    let k = ((cur_ts - prev_ts) / rules.dt_us.max(1)).max(1) as f64;
    let unwrapped = cur.import_wh + rules.capacity_wh - prev.import_wh;
    if unwrapped >= 0.0 && unwrapped <= rules.max_interval_wh * k {
        return (Step::Rollover, unwrapped);
    }
    if cur.import_wh <= rules.reset_max_wh {
        return (Step::Reset, restart_energy(cur, prev_ts, cur_ts));
    }
    (Step::Negative, 0.0)
}

/// Energy since registers restarted: what the reported power predicts, at most the register.
fn restart_energy(cur: &Point, prev_ts: i64, cur_ts: i64) -> f64 {
    let hours = (cur_ts - prev_ts) as f64 / 3.6e9;
    match cur.power_w {
        Some(p) if p.is_finite() => (p.max(0.0) * hours).min(cur.import_wh).round(),
        _ => cur.import_wh,
    }
}

/// The intervals of the span `(a_ts, b_ts]`, in order.
pub fn span(
    a: &Point,
    a_ts: i64,
    b: &Point,
    b_ts: i64,
    rules: &SpanRules,
) -> (Step, Vec<(i64, Interval)>) {
    let dt = rules.dt_us.max(1);
    let k = ((b_ts - a_ts) / dt).max(1);
    let (step, energy) = step(a, a_ts, b, b_ts, rules);
    let restarted = matches!(step, Step::Exchange | Step::Reset);
    let export = if b.export_wh >= a.export_wh && !restarted {
        b.export_wh - a.export_wh
    } else {
        b.export_wh.max(0.0)
    };
    let step_rule = match step {
        Step::Normal | Step::Negative => None,
        Step::Rollover => Some(Rule::RegisterRollover),
        Step::Exchange => Some(Rule::MeterExchange),
        Step::Reset => Some(Rule::RegisterReset),
    };
    let step_quality = if restarted {
        Quality::Estimated
    } else {
        Quality::Measured
    };
    if k == 1 {
        let interval = Interval {
            energy_wh: energy,
            export_wh: export,
            quality: step_quality,
            rule: step_rule,
        };
        return (step, vec![(b_ts, interval)]);
    }
    let missing = (k - 1) as u32;
    // The reading after the hole reports the power of its own interval, which may follow a
    // restoration: what is left once that interval's share is taken out is compared with
    // what the lower of the two reported powers predicts for the missing intervals (one end
    // may catch a kettle or an oven; a household's load between such moments is far lower).
    let hours = |n: i64| (n * dt) as f64 / 3.6e9;
    let moved = (energy + export).max(0.0);
    let last_share = b.power_w.map_or(0.0, |p| p.abs() * hours(1)).min(moved);
    let expected = [a.power_w, b.power_w]
        .into_iter()
        .flatten()
        .map(f64::abs)
        .reduce(f64::min)
        .map_or(0.0, |p| p * hours(k - 1));
    let outage = missing >= rules.outage_min_missing
        && expected >= 20.0
        && moved - last_share <= rules.outage_max_share * expected;
    let mut out = Vec::with_capacity(k as usize);
    if outage {
        let rule = Some(if rules.feeder_out {
            Rule::FeederOutage
        } else {
            Rule::Outage
        });
        for i in 1..k {
            let zero = Interval {
                energy_wh: 0.0,
                export_wh: 0.0,
                quality: Quality::Estimated,
                rule,
            };
            out.push((a_ts + i * dt, zero));
        }
        let last = Interval {
            energy_wh: energy,
            export_wh: export,
            quality: step_quality,
            rule: step_rule.or(rule),
        };
        out.push((b_ts, last));
        return (step, out);
    }
    let (part, export_part) = (energy / k as f64, export / k as f64);
    let (mut given, mut export_given) = (0.0, 0.0);
    for i in 1..=k {
        let (e, x) = if i == k {
            (energy - given, export - export_given)
        } else {
            (part, export_part)
        };
        given += e;
        export_given += x;
        let interval = Interval {
            energy_wh: e,
            export_wh: x,
            quality: Quality::Estimated,
            rule: Some(step_rule.unwrap_or(Rule::Gap)),
        };
        out.push((a_ts + i * dt, interval));
    }
    (step, out)
}

/// An interval whose value changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Its end, µs.
    pub end: i64,
    /// What it was (absent if new).
    pub old: Option<Interval>,
    /// What it is.
    pub new: Interval,
}

/// The outcome of inserting a reading.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inserted {
    /// How the register moved from the previous reading (absent for the first).
    pub step: Option<Step>,
    /// Intervals from the previous reading.
    pub intervals_from_prev: i64,
    /// Energy from the previous reading, Wh.
    pub energy_from_prev: f64,
    /// Export energy from the previous reading, Wh.
    pub export_from_prev: f64,
    /// The rule of the span from the previous reading when it is a hole (gap or outage).
    pub hole: Option<Rule>,
    /// The intervals that changed.
    pub changes: Vec<Change>,
}

/// One meter's readings in the open region and their intervals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Track {
    points: BTreeMap<i64, Point>,
    intervals: BTreeMap<i64, Interval>,
}

impl Track {
    /// Whether a reading at `ts` is held.
    pub fn contains(&self, ts: i64) -> bool {
        self.points.contains_key(&ts)
    }

    /// The reading at `ts`.
    pub fn point(&self, ts: i64) -> Option<&Point> {
        self.points.get(&ts)
    }

    /// The oldest held reading's time (the anchor).
    pub fn first_ts(&self) -> Option<i64> {
        self.points.keys().next().copied()
    }

    /// The newest reading's time.
    pub fn last_ts(&self) -> Option<i64> {
        self.points.keys().next_back().copied()
    }

    /// The newest reading before `ts`.
    pub fn before(&self, ts: i64) -> Option<(i64, &Point)> {
        self.points.range(..ts).next_back().map(|(t, p)| (*t, p))
    }

    /// The intervals held, by end time.
    pub fn intervals(&self) -> &BTreeMap<i64, Interval> {
        &self.intervals
    }

    /// How the register would move from its neighbours if `point` were inserted at `ts`
    /// (Negative on either side means the reading cannot be right).
    pub fn check(&self, ts: i64, point: &Point, rules: &SpanRules) -> (Option<Step>, Option<Step>) {
        let prev = self.points.range(..ts).next_back();
        let next = self.points.range(ts + 1..).next();
        (
            prev.map(|(t, p)| step(p, *t, point, ts, rules).0),
            next.map(|(t, n)| step(point, ts, n, *t, rules).0),
        )
    }

    /// The interval stage for a new reading at `ts`, received at `received` (µs): refused (with
    /// why) when the import register would step backwards from a neighbour, otherwise inserted,
    /// with whether it is the newest; `out_of_order` or `backfill` go to `fired`.
    pub fn place(
        &mut self,
        ts: i64,
        point: Point,
        received: i64,
        rules: &SpanRules,
        fired: &mut Vec<Rule>,
    ) -> Result<(Inserted, bool), String> {
        let neighbour = match self.check(ts, &point, rules) {
            (Some(Step::Negative), _) => Some("previous"),
            (_, Some(Step::Negative)) => Some("next"),
            _ => None,
        };
        if let Some(neighbour) = neighbour {
            return Err(format!(
                "import register {} Wh is below the {neighbour} reading's without a rollover, reset or exchange",
                point.import_wh
            ));
        }
        let newest = self.last_ts();
        let in_order = newest.is_none_or(|n| ts > n);
        if !in_order {
            fired.push(Rule::OutOfOrder);
        } else if newest.is_some() && received - ts >= 2 * rules.dt_us {
            fired.push(Rule::Backfill);
        }
        Ok((self.insert(ts, point, rules), in_order))
    }

    /// Inserts the reading at `ts` (not already held) and recomputes the spans it touches.
    pub fn insert(&mut self, ts: i64, point: Point, rules: &SpanRules) -> Inserted {
        let prev = self.points.range(..ts).next_back().map(|(t, p)| (*t, *p));
        let next = self.points.range(ts + 1..).next().map(|(t, p)| (*t, *p));
        self.points.insert(ts, point);
        let mut out = Inserted::default();
        if let Some((pt, p)) = prev {
            let (step, intervals) = span(&p, pt, &point, ts, rules);
            out.step = Some(step);
            out.intervals_from_prev = (ts - pt) / rules.dt_us.max(1);
            out.energy_from_prev = intervals.iter().map(|(_, i)| i.energy_wh).sum();
            out.export_from_prev = intervals.iter().map(|(_, i)| i.export_wh).sum();
            if intervals.len() > 1 {
                out.hole = intervals.first().and_then(|(_, i)| i.rule);
            }
            self.apply(intervals, &mut out.changes);
        }
        if let Some((nt, n)) = next {
            let (_, intervals) = span(&point, ts, &n, nt, rules);
            self.apply(intervals, &mut out.changes);
        }
        out
    }

    fn apply(&mut self, intervals: Vec<(i64, Interval)>, changes: &mut Vec<Change>) {
        for (end, new) in intervals {
            let old = self.intervals.insert(end, new);
            if old != Some(new) {
                changes.push(Change { end, old, new });
            }
        }
    }

    /// Finalizes everything before `before`: the newest reading before it becomes the anchor;
    /// older readings and the intervals up to the anchor are dropped.
    pub fn prune(&mut self, before: i64) {
        let Some(anchor) = self.points.range(..before).next_back().map(|(t, _)| *t) else {
            return;
        };
        self.points = self.points.split_off(&anchor);
        self.intervals = self.intervals.split_off(&(anchor + 1));
    }
}

#[cfg(test)]
mod tests;
