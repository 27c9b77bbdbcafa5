//! Rounding a bill. Every charge is computed exactly (in `f64`); the total is the exact sum
//! rounded half away from zero to the tariff's `decimals`; each line's amount is rounded so
//! that the lines add up to the total exactly (the largest remainders take the residue, ties
//! to the earlier line). So the total is never off by the accumulated rounding of its lines,
//! and no line is more than one unit of the last digit from its exact amount.

/// `x` rounded half away from zero to `decimals` digits, in units of the last digit.
pub fn units(x: f64, decimals: u32) -> i64 {
    let scale = 10f64.powi(decimals as i32);
    // The tiny nudge keeps a product such as 2.675 (stored as 2.67499999…) on the side it was
    // meant to be; it is far below a unit of any amount billed.
    let scaled = x * scale;
    (scaled + scaled.signum() * 1e-7).round() as i64
}

/// Rounds `exact` amounts to units so that they sum to `units(sum of exact)`.
pub fn allocate(exact: &[f64], decimals: u32) -> (i64, Vec<i64>) {
    let scale = 10f64.powi(decimals as i32);
    let total = units(exact.iter().sum(), decimals);
    let mut floors: Vec<i64> = exact.iter().map(|x| (x * scale).floor() as i64).collect();
    let residue = total - floors.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..exact.len()).collect();
    let remainder = |i: usize| exact[i] * scale - floors[i] as f64;
    order.sort_by(|&a, &b| remainder(b).total_cmp(&remainder(a)).then(a.cmp(&b)));
    // Floors sum to at most the exact sum, so the residue is 0 … the number of lines.
    for &i in order.iter().take(residue.max(0) as usize) {
        floors[i] += 1;
    }
    (total, floors)
}

/// Units back to an amount.
pub fn amount(units: i64, decimals: u32) -> f64 {
    units as f64 / 10f64.powi(decimals as i32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn halves_round_away_from_zero() {
        assert_eq!(units(2.675, 2), 268);
        assert_eq!(units(-2.675, 2), -268);
        assert_eq!(units(0.004999, 2), 0);
        assert_eq!(units(10.0, 0), 10);
    }

    #[test]
    fn lines_add_up_to_the_rounded_total() {
        let (total, lines) = allocate(&[1.004, 1.004, 1.004], 2);
        assert_eq!(total, 301);
        assert_eq!(lines, vec![101, 100, 100]);
    }

    proptest! {
        #[test]
        fn allocation_sums_to_the_total_and_stays_within_a_unit(
            exact in proptest::collection::vec(-500.0f64..5000.0, 1..40),
            decimals in 0u32..=4,
        ) {
            let (total, lines) = allocate(&exact, decimals);
            prop_assert_eq!(lines.iter().sum::<i64>(), total);
            prop_assert_eq!(total, units(exact.iter().sum(), decimals));
            let scale = 10f64.powi(decimals as i32);
            for (x, u) in exact.iter().zip(&lines) {
                prop_assert!((x * scale - *u as f64).abs() < 1.0 + 1e-6);
            }
        }
    }
}
