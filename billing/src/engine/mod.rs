//! The bill engine: pure functions from a tariff, a meter's 15-minute intervals and local
//! dates to a bill with line items. No IO; [`crate::source`] reads the intervals.
//!
//! The arithmetic follows NREL SAM's `utilityrate5` (PySAM), which the tests compare against
//! to the cent, generalized from calendar months to billing cycles and partial cycles
//! (docs/ARCHITECTURE.md, "Billing", lists every convention and where it departs from SAM):
//! - a bill's dates are cut into cycle segments ([`cycles`]); each segment is billed on its
//!   own and hands its credits to the next ([`Carry`]);
//! - energy ([`energy`]): under net metering each TOU period's energy is netted over the
//!   segment, tiers apply to the segment's total and are shared out to periods in proportion;
//!   under net billing and buy all, sell all, imports and exports are tiered in time order on
//!   their running totals, each interval at its own period's prices;
//! - demand ([`demand`]): the highest 15-minute import (kW) of each TOU demand period, and of
//!   the whole segment for flat demand, priced by tier;
//! - fixed and minimum charges, the year-end settlement, taxes ([`bill`]);
//! - amounts are exact until the end; [`round`] rounds the total and the lines.

pub mod cycles;
pub mod demand;
pub mod energy;
pub mod round;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::tariff::{Metering, Per, Tariff};
use cycles::Segment;

/// One interval of a meter, from the trusted zone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Its start.
    pub start: DateTime<Utc>,
    /// Energy imported, Wh.
    pub import_wh: f64,
    /// Energy exported, Wh.
    pub export_wh: f64,
    /// Estimated by the pipeline rather than measured.
    pub estimated: bool,
}

/// What one cycle hands to the next: net metering's kWh credits, net billing's money
/// credits, the year's running figures for the year-end settlement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Carry {
    /// The cycle these credits come from (its first day); none at the start.
    pub cycle: Option<NaiveDate>,
    /// Net metering: surplus kWh of each energy period of that cycle.
    pub surplus_kwh: Vec<f64>,
    /// Net metering: the year's excess energy so far (kWh), paid at the year end.
    pub excess_kwh: f64,
    /// Net billing with carry-over: credit (money) not yet used.
    pub credit: f64,
    /// Charges of the year so far that count toward an annual minimum.
    pub year_charges: f64,
}

/// What a line of a bill is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// Energy bought.
    Energy,
    /// Energy sold, or a credit for it (negative).
    ExportCredit,
    /// TOU demand.
    Demand,
    /// Flat (monthly maximum) demand.
    FlatDemand,
    /// A fixed charge.
    Fixed,
    /// The top-up to a minimum charge.
    Minimum,
    /// The year-end payout of credits left (negative).
    TrueUp,
    /// A tax.
    Tax,
}

/// One line of a bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// What it is for.
    pub kind: LineKind,
    /// For people.
    pub description: String,
    /// How much (kWh, kW, days, cycles, or the amount taxed).
    pub quantity: f64,
    /// The quantity's unit.
    pub unit: String,
    /// Price per unit (a tax: its fraction).
    pub rate: f64,
    /// The amount, rounded (see [`round`]).
    pub amount: f64,
}

/// A bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bill {
    /// The tariff's id.
    pub tariff_id: String,
    /// First local date billed.
    pub from: NaiveDate,
    /// Last local date billed.
    pub to: NaiveDate,
    /// ISO 4217 code.
    pub currency: String,
    /// The sum of the lines.
    pub total: f64,
    /// The line items.
    pub lines: Vec<Line>,
    /// The share of the period's intervals the pipeline estimated.
    pub estimated_share: f64,
    /// What the next cycle starts from.
    pub carry: Carry,
}

/// Why a bill cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BillError {
    /// `from` after `to`.
    #[error("`from` ({from}) is after `to` ({to})")]
    Dates {
        /// First date.
        from: NaiveDate,
        /// Last date.
        to: NaiveDate,
    },
    /// The period is not (all) under this tariff version.
    #[error("tariff {id} applies from {from}{}, not to every day of {first} … {last}", .to.map(|t| format!(" to {t}")).unwrap_or_default())]
    NotEffective {
        /// Tariff id.
        id: String,
        /// Its first date.
        from: NaiveDate,
        /// Its last date.
        to: Option<NaiveDate>,
        /// The bill's first date.
        first: NaiveDate,
        /// The bill's last date.
        last: NaiveDate,
    },
    /// Intervals are missing: the bill would be partial.
    #[error(
        "{missing} of the {expected} intervals of {from} … {to} are missing (first at {first}); a bill is not made from partial data"
    )]
    Missing {
        /// How many.
        missing: usize,
        /// How many there should be.
        expected: usize,
        /// First date.
        from: NaiveDate,
        /// Last date.
        to: NaiveDate,
        /// The first missing interval's start.
        first: DateTime<Utc>,
    },
    /// An interval is not on the grid, doubled, or not a number.
    #[error(
        "interval at {0} is off the {1}-minute grid, given twice, or not a finite non-negative energy"
    )]
    BadInterval(DateTime<Utc>, i64),
}

/// The UTC instant of a local date's midnight (the first instant of the day where midnight
/// falls in a DST gap).
pub fn local_midnight(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    (0..4)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + Duration::hours(h)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

/// The local facts of one interval the tariff looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub import_kwh: f64,
    pub export_kwh: f64,
    /// Import power averaged over the interval, kW.
    pub import_kw: f64,
    pub month0: usize,
    pub hour: usize,
    pub weekend: bool,
}

/// The local facts of every interval of a bill's dates and their cycle segments, computed
/// once and shared by every meter billed over the same dates, zone and billing day.
#[derive(Debug, Clone)]
pub struct Grid {
    from: NaiveDate,
    to: NaiveDate,
    start: DateTime<Utc>,
    step_us: i64,
    hours: f64,
    local: Vec<(u8, u8, bool)>,
    segments: Vec<(Segment, std::ops::Range<usize>)>,
}

impl Grid {
    /// The grid of `from ..= to` in `tz`, intervals `step` long, cycles starting on
    /// `billing_day`.
    pub fn new(
        tz: Tz,
        from: NaiveDate,
        to: NaiveDate,
        step: Duration,
        billing_day: u32,
    ) -> Result<Self, BillError> {
        if from > to {
            return Err(BillError::Dates { from, to });
        }
        let start = local_midnight(tz, from);
        let step_us = step.num_microseconds().unwrap_or(1).max(1);
        let slot_of =
            |t: DateTime<Utc>| ((t - start).num_microseconds().unwrap_or(0) / step_us) as usize;
        let end = slot_of(local_midnight(tz, to + chrono::Days::new(1)));
        let local = (0..end)
            .map(|i| {
                let t = (start + Duration::microseconds(i as i64 * step_us)).with_timezone(&tz);
                let weekend = matches!(t.weekday(), Weekday::Sat | Weekday::Sun);
                (t.month0() as u8, t.hour() as u8, weekend)
            })
            .collect();
        let mut next = 0;
        let segments = cycles::segments(from, to, billing_day)
            .into_iter()
            .map(|s| {
                let end = slot_of(local_midnight(tz, s.to + chrono::Days::new(1)));
                let range = next..end;
                next = end;
                (s, range)
            })
            .collect();
        Ok(Self {
            from,
            to,
            start,
            step_us,
            hours: step_us as f64 / 3.6e9,
            local,
            segments,
        })
    }

    /// The first instant of the grid and the first after it.
    pub fn span(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let end = self.start + Duration::microseconds(self.local.len() as i64 * self.step_us);
        (self.start, end)
    }

    /// `intervals` on the grid: every slot filled exactly once, or why not.
    fn place(&self, intervals: &[Interval]) -> Result<Vec<Interval>, BillError> {
        let expected = self.local.len();
        let (start, end) = self.span();
        let mut slots: Vec<Option<Interval>> = vec![None; expected];
        for i in intervals {
            if i.start < start || i.start >= end {
                continue;
            }
            let offset = (i.start - start).num_microseconds().unwrap_or(-1);
            let finite = |x: f64| x.is_finite() && x >= 0.0;
            let at = (offset / self.step_us) as usize;
            if offset % self.step_us != 0
                || !finite(i.import_wh)
                || !finite(i.export_wh)
                || slots[at].replace(*i).is_some()
            {
                return Err(BillError::BadInterval(i.start, self.step_us / 60_000_000));
            }
        }
        if let Some(first) = slots.iter().position(Option::is_none) {
            return Err(BillError::Missing {
                missing: slots.iter().filter(|s| s.is_none()).count(),
                expected,
                from: self.from,
                to: self.to,
                first: start + Duration::microseconds(first as i64 * self.step_us),
            });
        }
        Ok(slots.into_iter().flatten().collect())
    }
}

/// Bills `from ..= to` (local dates in `tz`) from `intervals` (each `step` long, in any
/// order), starting from `carry` (the previous cycle's; `Carry::default()` at the start of a
/// year or of the meter's history).
pub fn bill(
    tariff: &Tariff,
    tz: Tz,
    from: NaiveDate,
    to: NaiveDate,
    intervals: &[Interval],
    step: Duration,
    carry: Carry,
) -> Result<Bill, BillError> {
    bill_on(
        &Grid::new(tz, from, to, step, tariff.billing_day)?,
        tariff,
        intervals,
        carry,
    )
}

/// [`bill`] on a grid made for the tariff's billing day.
pub fn bill_on(
    grid: &Grid,
    tariff: &Tariff,
    intervals: &[Interval],
    carry: Carry,
) -> Result<Bill, BillError> {
    let (from, to) = (grid.from, grid.to);
    if from < tariff.effective_from || tariff.effective_to.is_some_and(|t| to > t) {
        return Err(BillError::NotEffective {
            id: tariff.id.clone(),
            from: tariff.effective_from,
            to: tariff.effective_to,
            first: from,
            last: to,
        });
    }
    let placed = grid.place(intervals)?;
    let estimated = placed.iter().filter(|i| i.estimated).count();
    let mut exact: Vec<(Line, f64)> = Vec::new();
    let mut carry = carry;
    for (segment, range) in &grid.segments {
        let slots: Vec<Slot> = range
            .clone()
            .map(|k| {
                let (i, (month0, hour, weekend)) = (&placed[k], grid.local[k]);
                Slot {
                    import_kwh: i.import_wh / 1000.0,
                    export_kwh: i.export_wh / 1000.0,
                    import_kw: i.import_wh / 1000.0 / grid.hours,
                    month0: month0 as usize,
                    hour: hour as usize,
                    weekend,
                }
            })
            .collect();
        carry = cycle(tariff, segment, &slots, carry, &mut exact);
    }
    taxes(tariff, &mut exact);
    let amounts: Vec<f64> = exact.iter().map(|(_, x)| *x).collect();
    let (total, units) = round::allocate(&amounts, tariff.decimals);
    let lines = exact
        .into_iter()
        .zip(units)
        .map(|((mut line, _), u)| {
            line.amount = round::amount(u, tariff.decimals);
            line
        })
        .collect();
    let expected = placed.len();
    Ok(Bill {
        tariff_id: tariff.id.clone(),
        from,
        to,
        currency: tariff.currency.clone(),
        total: round::amount(total, tariff.decimals),
        lines,
        estimated_share: if expected == 0 {
            0.0
        } else {
            estimated as f64 / expected as f64
        },
        carry,
    })
}

fn line(kind: LineKind, description: String, quantity: f64, unit: &str, rate: f64) -> Line {
    Line {
        kind,
        description,
        quantity,
        unit: unit.to_owned(),
        rate,
        amount: 0.0,
    }
}

/// One cycle segment: energy, demand, fixed, minimum, year end. Pushes its lines with exact
/// amounts and returns the carry for the next.
fn cycle(
    tariff: &Tariff,
    segment: &Segment,
    slots: &[Slot],
    carry: Carry,
    out: &mut Vec<(Line, f64)>,
) -> Carry {
    let first = out.len();
    let peak_kw = slots.iter().map(|s| s.import_kw).fold(0.0, f64::max);
    let scale = energy::Scale {
        share: segment.share(),
        days: segment.days() as f64,
        peak_kw,
    };
    let new_year = segment.cycle_start.month() == 1 && carry.cycle != Some(segment.cycle_start);
    let (mut next, credits) = match tariff.metering {
        Metering::NetMetering => {
            energy::net_metering(tariff, segment, slots, &carry, new_year, &scale, out)
        }
        _ => energy::net_billing(tariff, slots, &carry, new_year, &scale, out),
    };
    demand::charges(tariff, segment, slots, peak_kw, out);
    let days = segment.days() as f64;
    let share = segment.share();
    for f in &tariff.fixed {
        let (quantity, unit, rate) = match f.per {
            Per::Month => (share, "cycles", f.amount),
            Per::Day => (days, "days", f.amount),
            Per::Year => (share, "cycles", f.amount / 12.0),
        };
        out.push((
            line(LineKind::Fixed, "Fixed charge".into(), quantity, unit, rate),
            quantity * rate,
        ));
    }
    // The minimum is judged on what the cycle charges before sales (buy all, sell all) and
    // before the year-end payout.
    let base: f64 = out[first..]
        .iter()
        .filter(|(l, _)| {
            !(tariff.metering == Metering::BuyAllSellAll && l.kind == LineKind::ExportCredit)
        })
        .map(|(_, x)| x)
        .sum();
    let base = base.max(0.0);
    let mut top_up = 0.0;
    for m in tariff.minimum.iter().filter(|m| m.per != Per::Year) {
        let floor = match m.per {
            Per::Day => m.amount * days,
            _ => m.amount * share,
        };
        top_up += (floor - base).max(0.0);
    }
    next.year_charges = if new_year {
        base
    } else {
        carry.year_charges + base
    };
    if segment.settles_year() {
        for m in tariff.minimum.iter().filter(|m| m.per == Per::Year) {
            top_up += (m.amount - next.year_charges).max(0.0);
        }
    }
    if top_up > 0.0 {
        out.push((
            line(
                LineKind::Minimum,
                "Minimum charge".into(),
                1.0,
                "cycles",
                top_up,
            ),
            top_up,
        ));
    }
    if segment.settles_year() {
        let (quantity, unit, rate) = match credits {
            energy::YearEnd::Kwh(kwh) => (kwh, "kWh", tariff.yearend_sell_rate),
            energy::YearEnd::Money(money) => (money, tariff.currency.as_str(), 1.0),
        };
        if quantity * rate > 0.0 {
            out.push((
                line(
                    LineKind::TrueUp,
                    "Year-end payout of credits".into(),
                    quantity,
                    unit,
                    rate,
                ),
                -quantity * rate,
            ));
        }
        next.surplus_kwh.clear();
        next.excess_kwh = 0.0;
        next.credit = 0.0;
    }
    next.cycle = Some(segment.cycle_start);
    next
}

/// Each tax on the charges before taxes (not below zero).
fn taxes(tariff: &Tariff, out: &mut Vec<(Line, f64)>) {
    let base = out.iter().map(|(_, x)| x).sum::<f64>().max(0.0);
    for t in &tariff.taxes {
        let rate = t.percent / 100.0;
        out.push((
            line(LineKind::Tax, t.name.clone(), base, "amount", rate),
            base * rate,
        ));
    }
}

#[cfg(test)]
mod tests;
