//! Demand charges of one cycle segment: the highest 15-minute import (kW) in each TOU demand
//! period, and in the whole segment for flat demand, priced by tier.

use super::{Line, LineKind, Slot, line};
use crate::engine::cycles::Segment;
use crate::tariff::{DemandTier, Tariff};

/// Lines for a peak of `kw` over `tiers`.
fn tiered(kind: LineKind, what: String, kw: f64, tiers: &[DemandTier], out: &mut Vec<(Line, f64)>) {
    let mut below = 0.0;
    for (k, tier) in tiers.iter().enumerate() {
        let ub = tier.max.unwrap_or(f64::INFINITY);
        let slice = (kw.min(ub) - below).max(0.0);
        below = ub;
        if slice > 0.0 && tier.rate != 0.0 {
            let description = if tiers.len() == 1 {
                what.clone()
            } else {
                format!("{what}, tier {}", k + 1)
            };
            out.push((
                line(kind, description, slice, "kW", tier.rate),
                slice * tier.rate,
            ));
        }
    }
}

/// TOU and flat demand charges; `peak_kw` is the segment's highest import.
pub(crate) fn charges(
    tariff: &Tariff,
    segment: &Segment,
    slots: &[Slot],
    peak_kw: f64,
    out: &mut Vec<(Line, f64)>,
) {
    if let Some(schedules) = &tariff.demand_schedules {
        let mut peaks = vec![0.0f64; tariff.demand.len()];
        for s in slots {
            let q = schedules.period(s.month0, s.hour, s.weekend);
            peaks[q] = peaks[q].max(s.import_kw);
        }
        for (q, tiers) in tariff.demand.iter().enumerate() {
            let what = if tariff.demand.len() == 1 {
                "Demand".to_owned()
            } else {
                format!("Demand, period {}", q + 1)
            };
            tiered(LineKind::Demand, what, peaks[q], tiers, out);
        }
    }
    if let Some(months) = &tariff.flat_demand_months {
        let tiers = &tariff.flat_demand[months[segment.month0()] as usize];
        tiered(
            LineKind::FlatDemand,
            "Maximum demand".into(),
            peak_kw,
            tiers,
            out,
        );
    }
}
