//! Energy charges and export credits of one cycle segment, under each metering rule.

use super::{Carry, Line, LineKind, Slot, line};
use crate::engine::cycles::Segment;
use crate::tariff::{EnergyTier, Tariff, TierUnit};

/// What scales a tier's limit in this segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scale {
    /// The share of the cycle billed (kWh limits are per cycle).
    pub share: f64,
    /// Days billed (daily limits).
    pub days: f64,
    /// The segment's highest 15-minute import, kW (hours-use limits).
    pub peak_kw: f64,
}

/// What the year-end settles: net metering's excess kWh, or net billing's money credit.
#[derive(Debug, Clone, Copy)]
pub(crate) enum YearEnd {
    Kwh(f64),
    Money(f64),
}

/// Upper limits of a period's tiers in this segment; the last is unlimited.
fn limits(tiers: &[EnergyTier], scale: &Scale) -> Vec<f64> {
    tiers
        .iter()
        .map(|t| match t.max {
            None => f64::INFINITY,
            Some(max) => match t.unit {
                TierUnit::Kwh => max * scale.share,
                TierUnit::KwhDaily => max * scale.days,
                TierUnit::KwhPerKw => max * scale.peak_kw,
                TierUnit::KwhPerKwDaily => max * scale.peak_kw * scale.days,
            },
        })
        .collect()
}

fn describe(what: &str, tariff: &Tariff, period: usize, tier: usize) -> String {
    if tariff.energy.len() == 1 && tariff.energy[0].len() == 1 {
        what.to_owned()
    } else {
        format!("{what}, period {}, tier {}", period + 1, tier + 1)
    }
}

/// Pushes the line of `kwh` bought in tier `k` of period `p` (none for no energy); returns its
/// amount.
fn bought_line(tariff: &Tariff, p: usize, k: usize, kwh: f64, out: &mut Vec<(Line, f64)>) -> f64 {
    if kwh <= 0.0 {
        return 0.0;
    }
    let rate = tariff.energy[p][k].rate;
    let description = describe("Energy", tariff, p, k);
    out.push((
        line(LineKind::Energy, description, kwh, "kWh", rate),
        kwh * rate,
    ));
    kwh * rate
}

/// The period each TOU-period credit moves to in the next cycle: the period in force at the
/// same times of a weekday (00, 05, 11, 17 h) — SAM's rule; a credit whose period is not in
/// force at any of those hours lapses.
fn carried_to(
    tariff: &Tariff,
    from_month0: usize,
    to_month0: usize,
    period: usize,
) -> Option<usize> {
    const HOURS: [usize; 4] = [0, 5, 11, 17];
    let s = &tariff.energy_schedules;
    HOURS
        .iter()
        .position(|&h| s.period(from_month0, h, false) == period)
        .map(|j| s.period(to_month0, HOURS[j], false))
}

/// Net metering: each period's net energy (plus the credit carried into it); tiers on the
/// segment's total import, shared out in proportion; surpluses carried as kWh.
pub(crate) fn net_metering(
    tariff: &Tariff,
    segment: &Segment,
    slots: &[Slot],
    carry: &Carry,
    new_year: bool,
    scale: &Scale,
    out: &mut Vec<(Line, f64)>,
) -> (Carry, YearEnd) {
    let periods = tariff.energy.len();
    let mut net = vec![0.0; periods];
    if !new_year && let Some(previous) = carry.cycle {
        use chrono::Datelike;
        let same_cycle = previous == segment.cycle_start;
        for (q, &kwh) in carry
            .surplus_kwh
            .iter()
            .enumerate()
            .filter(|(q, _)| *q < periods)
        {
            // Within one cycle (a bill that starts mid-cycle) a credit stays in its period.
            let to = if same_cycle {
                Some(q)
            } else {
                carried_to(tariff, previous.month0() as usize, segment.month0(), q)
            };
            if kwh > 0.0
                && let Some(p) = to
            {
                net[p] += kwh;
            }
        }
    }
    let mut month_net = 0.0;
    for s in slots {
        let p = tariff.energy_schedules.period(s.month0, s.hour, s.weekend);
        let e = s.export_kwh - s.import_kwh;
        net[p] += e;
        month_net += e;
    }
    let bought: Vec<f64> = net.iter().map(|n| (-n).max(0.0)).collect();
    let total: f64 = bought.iter().sum();
    if total > 0.0 {
        for (p, tiers) in tariff.energy.iter().enumerate() {
            if bought[p] <= 0.0 {
                continue;
            }
            let mut below = 0.0;
            for (k, ub) in limits(tiers, scale).into_iter().enumerate() {
                let slice = (total.min(ub) - below).max(0.0);
                below = ub;
                bought_line(tariff, p, k, bought[p] / total * slice, out);
            }
        }
    }
    let excess = if new_year {
        month_net.max(0.0)
    } else {
        (carry.excess_kwh + month_net).max(0.0)
    };
    let next = Carry {
        surplus_kwh: net.iter().map(|n| n.max(0.0)).collect(),
        excess_kwh: excess,
        ..Carry::default()
    };
    (next, YearEnd::Kwh(excess))
}

/// kWh of `[running, running + x]` in each tier below `limits`.
fn split(running: f64, x: f64, limits: &[f64], into: &mut [f64]) {
    let mut below = 0.0;
    for (k, &ub) in limits.iter().enumerate() {
        let overlap = (running + x).min(ub) - running.max(below);
        if overlap > 0.0 {
            into[k] += overlap;
        }
        below = ub;
    }
}

/// Net billing and buy all, sell all: imports and exports tiered in time order on their
/// running totals, each interval at its period's buy or sell price. Instantaneous net
/// billing and buy all, sell all credit exports on this bill; net billing with carry-over
/// (URDB "Net Billing Hourly", SAM option 3) applies them to later cycles' energy charges.
pub(crate) fn net_billing(
    tariff: &Tariff,
    slots: &[Slot],
    carry: &Carry,
    new_year: bool,
    scale: &Scale,
    out: &mut Vec<(Line, f64)>,
) -> (Carry, YearEnd) {
    let ubs: Vec<Vec<f64>> = tariff.energy.iter().map(|t| limits(t, scale)).collect();
    let mut bought: Vec<Vec<f64>> = tariff.energy.iter().map(|t| vec![0.0; t.len()]).collect();
    let mut sold = bought.clone();
    let (mut imported, mut exported) = (0.0, 0.0);
    for s in slots {
        let p = tariff.energy_schedules.period(s.month0, s.hour, s.weekend);
        split(imported, s.import_kwh, &ubs[p], &mut bought[p]);
        imported += s.import_kwh;
        split(exported, s.export_kwh, &ubs[p], &mut sold[p]);
        exported += s.export_kwh;
    }
    let mut gross = 0.0;
    let mut earned = 0.0;
    let carries = tariff.metering == crate::tariff::Metering::NetBillingHourly;
    for (p, tiers) in tariff.energy.iter().enumerate() {
        for (k, tier) in tiers.iter().enumerate() {
            gross += bought_line(tariff, p, k, bought[p][k], out);
            let kwh = sold[p][k];
            if kwh > 0.0 && tier.sell > 0.0 {
                earned += kwh * tier.sell;
                if !carries {
                    out.push((
                        line(
                            LineKind::ExportCredit,
                            describe("Energy exported", tariff, p, k),
                            kwh,
                            "kWh",
                            tier.sell,
                        ),
                        -kwh * tier.sell,
                    ));
                }
            }
        }
    }
    if !carries {
        return (Carry::default(), YearEnd::Money(0.0));
    }
    let available = if new_year { 0.0 } else { carry.credit };
    let applied = available.min(gross);
    if applied > 0.0 {
        out.push((
            line(
                LineKind::ExportCredit,
                "Export credit from earlier cycles".into(),
                applied,
                &tariff.currency,
                1.0,
            ),
            -applied,
        ));
    }
    let credit = earned + (available - applied);
    let next = Carry {
        credit,
        ..Carry::default()
    };
    (next, YearEnd::Money(credit))
}
