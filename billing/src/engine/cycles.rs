//! Billing cycles: a bill's local dates cut at each cycle start (the tariff's `billing_day`).

use chrono::{Datelike, Months, NaiveDate};

/// The part of one billing cycle a bill covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The cycle's first day.
    pub cycle_start: NaiveDate,
    /// The cycle's last day.
    pub cycle_end: NaiveDate,
    /// The first day billed.
    pub from: NaiveDate,
    /// The last day billed.
    pub to: NaiveDate,
}

impl Segment {
    /// Days billed.
    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }

    /// Days in the whole cycle.
    pub fn cycle_days(&self) -> i64 {
        (self.cycle_end - self.cycle_start).num_days() + 1
    }

    /// The share of the cycle billed (1 for a whole cycle).
    pub fn share(&self) -> f64 {
        self.days() as f64 / self.cycle_days() as f64
    }

    /// The cycle's month (0–11): the month it starts in.
    pub fn month0(&self) -> usize {
        self.cycle_start.month0() as usize
    }

    /// Whether this segment closes the year: it reaches the end of the year's last cycle (the
    /// one that starts in December), with which net metering's true-up, net billing's
    /// remaining credit and the annual minimum charge are settled.
    pub fn settles_year(&self) -> bool {
        self.cycle_start.month() == 12 && self.to == self.cycle_end
    }
}

/// The cycle that holds `day`.
pub fn cycle_of(day: NaiveDate, billing_day: u32) -> (NaiveDate, NaiveDate) {
    let this = day.with_day(billing_day).unwrap_or(day);
    let start = if day.day() >= billing_day {
        this
    } else {
        this - Months::new(1)
    };
    let end = start + Months::new(1) - chrono::Days::new(1);
    (start, end)
}

/// `from ..= to` cut into cycle segments, in order.
pub fn segments(from: NaiveDate, to: NaiveDate, billing_day: u32) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut day = from;
    while day <= to {
        let (cycle_start, cycle_end) = cycle_of(day, billing_day);
        let end = cycle_end.min(to);
        out.push(Segment {
            cycle_start,
            cycle_end,
            from: day,
            to: end,
        });
        day = end + chrono::Days::new(1);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn a_period_is_cut_at_each_cycle_start() {
        let s = segments(d("2026-01-20"), d("2026-03-05"), 15);
        let spans: Vec<_> = s
            .iter()
            .map(|s| (s.cycle_start, s.from, s.to, s.cycle_end))
            .collect();
        assert_eq!(
            spans,
            vec![
                (
                    d("2026-01-15"),
                    d("2026-01-20"),
                    d("2026-02-14"),
                    d("2026-02-14")
                ),
                (
                    d("2026-02-15"),
                    d("2026-02-15"),
                    d("2026-03-05"),
                    d("2026-03-14")
                ),
            ]
        );
        assert_eq!(s[1].days(), 19);
        assert_eq!(s[1].cycle_days(), 28);
        let month = segments(d("2026-02-01"), d("2026-02-28"), 1);
        assert_eq!(month.len(), 1);
        assert_eq!(month[0].share(), 1.0);
        assert!(segments(d("2026-12-01"), d("2026-12-31"), 1)[0].settles_year());
        assert!(!segments(d("2026-12-01"), d("2026-12-30"), 1)[0].settles_year());
    }

    proptest::proptest! {
        #[test]
        fn segments_partition_the_period(start in 0u32..2000, len in 0u32..800, billing_day in 1u32..=28) {
            let from = d("2024-01-01") + chrono::Days::new(start.into());
            let to = from + chrono::Days::new(len.into());
            let s = segments(from, to, billing_day);
            proptest::prop_assert_eq!(s.first().unwrap().from, from);
            proptest::prop_assert_eq!(s.last().unwrap().to, to);
            let days: i64 = s.iter().map(Segment::days).sum();
            proptest::prop_assert_eq!(days, i64::from(len) + 1);
            for w in s.windows(2) {
                proptest::prop_assert_eq!(w[0].to + chrono::Days::new(1), w[1].from);
                proptest::prop_assert_eq!(w[1].from, w[1].cycle_start);
                proptest::prop_assert_eq!(w[1].cycle_start.day(), billing_day);
            }
            for seg in &s {
                proptest::prop_assert!(seg.cycle_start <= seg.from && seg.to <= seg.cycle_end);
            }
        }
    }
}
