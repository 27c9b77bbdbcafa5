//! Validation of single readings (the V of VEE): where a reading sits on the interval grid,
//! whether its values are possible, and which rule decides its quality flag.

pub mod admit;
pub mod validate;

pub use admit::{Admission, admit};
pub use validate::{Verdict, clean, rejected, undecodable, validate};

use crate::config::Rules;
use meterstack_core::records::{Quality, Rule};

/// Where a reading belongs on the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// On the grid (within `align_tolerance`), not ahead of its arrival.
    OnGrid(i64),
    /// The clock is off; the reading was moved to the grid point just before its arrival.
    Corrected(i64),
    /// The clock is off and the arrival does not tell the true time.
    Unplaceable,
}

/// Places a reading stamped `ts_us` and received at `received_us` on a grid of `dt_us`.
pub fn place(ts_us: i64, received_us: i64, dt_us: i64, rules: &Rules) -> Placement {
    let tol = rules.align_tolerance.as_micros() as i64;
    let receive_tol = rules.receive_tolerance.as_micros() as i64;
    let off = ts_us.rem_euclid(dt_us);
    let grid = if off <= tol {
        Some(ts_us - off)
    } else if dt_us - off <= tol {
        Some(ts_us + dt_us - off)
    } else {
        None
    };
    match grid {
        Some(g) if g <= received_us + receive_tol => Placement::OnGrid(g),
        _ => {
            let g = received_us.div_euclid(dt_us) * dt_us;
            if received_us - g <= receive_tol {
                Placement::Corrected(g)
            } else {
                Placement::Unplaceable
            }
        }
    }
}

/// Whether the reading's voltage and power are values a meter of `rated_w` can report.
pub fn in_range(voltage_v: Option<f64>, power_w: Option<f64>, rated_w: f64, rules: &Rules) -> bool {
    let nominal = rules.nominal_voltage_v;
    let v_ok = voltage_v.is_none_or(|v| {
        v.is_finite()
            && (nominal * (1.0 - rules.voltage_range)..=nominal * (1.0 + rules.voltage_range))
                .contains(&v)
    });
    let p_ok = power_w.is_none_or(|p| p.is_finite() && p.abs() <= rated_w * 4.0);
    v_ok && p_ok
}

/// Picks the flag of a reading from the rules that fired: the most serious wins.
pub fn flag(fired: &[Rule]) -> (Quality, Option<Rule>) {
    const SUSPECT: [Rule; 4] = [
        Rule::Range,
        Rule::ClockSkew,
        Rule::Spike,
        Rule::FrozenRegister,
    ];
    const NOTES: [Rule; 8] = [
        Rule::RegisterReset,
        Rule::MeterExchange,
        Rule::RegisterRollover,
        Rule::Late,
        Rule::Resent,
        Rule::OutOfOrder,
        Rule::Backfill,
        Rule::Gap,
    ];
    if let Some(r) = SUSPECT.iter().find(|r| fired.contains(r)) {
        return (Quality::Suspect, Some(*r));
    }
    (
        Quality::Measured,
        NOTES.iter().find(|r| fired.contains(r)).copied(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DT: i64 = 900_000_000;

    #[test]
    fn readings_are_placed_on_the_grid_or_corrected_from_their_arrival() {
        let r = Rules::default();
        let t = 1_000 * DT;
        assert_eq!(place(t, t + 200_000, DT, &r), Placement::OnGrid(t));
        assert_eq!(
            place(t + 2_000_000, t + 2_200_000, DT, &r),
            Placement::OnGrid(t)
        );
        // A clock 301 s slow: moved to the grid point before its arrival.
        assert_eq!(
            place(t - 301_000_000, t + 200_000, DT, &r),
            Placement::Corrected(t)
        );
        // An hour ahead and on the grid: still skewed, since it lies ahead of its arrival.
        assert_eq!(
            place(t + 4 * DT, t + 200_000, DT, &r),
            Placement::Corrected(t)
        );
        // Skewed and arriving mid-interval: nothing tells the true time.
        assert_eq!(
            place(t - 301_000_000, t + 400_000_000, DT, &r),
            Placement::Unplaceable
        );
        // Late but on the grid: placed where it says.
        assert_eq!(place(t, t + 5 * DT, DT, &r), Placement::OnGrid(t));
    }

    #[test]
    fn the_most_serious_rule_sets_the_flag() {
        assert_eq!(flag(&[]), (Quality::Measured, None));
        assert_eq!(
            flag(&[Rule::OutOfOrder, Rule::Spike]),
            (Quality::Suspect, Some(Rule::Spike))
        );
        assert_eq!(
            flag(&[Rule::Backfill, Rule::RegisterRollover]),
            (Quality::Measured, Some(Rule::RegisterRollover))
        );
    }
}
