#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;

const DT: i64 = 900_000_000;

fn rules() -> SpanRules {
    SpanRules {
        dt_us: DT,
        capacity_wh: 100_000.0,
        max_interval_wh: 1000.0,
        reset_max_wh: 2000.0,
        exchanged_on: None,
        outage_min_missing: 3,
        outage_max_share: 0.5,
        feeder_out: false,
    }
}

fn point(import_wh: f64) -> Point {
    Point {
        import_wh,
        export_wh: 0.0,
        power_w: Some(400.0),
    }
}

#[test]
fn register_steps_are_told_apart() {
    let r = rules();
    let s = |a: f64, b: f64, k: i64| step(&point(a), 0, &point(b), k * DT, &r);
    assert_eq!(s(100.0, 250.0, 1), (Step::Normal, 150.0));
    // 99,950 → 40 over one interval: 90 Wh around the capacity.
    assert_eq!(s(99_950.0, 40.0, 1), (Step::Rollover, 90.0));
    // A drop to near zero that no rated current explains is a reset.
    assert_eq!(s(50_000.0, 30.0, 1).0, Step::Reset);
    // A small drop from a high value is negative consumption.
    assert_eq!(s(50_000.0, 49_990.0, 1).0, Step::Negative);
    let exchanged = SpanRules {
        exchanged_on: DateTime::from_timestamp_micros(DT).map(|t| t.date_naive()),
        ..rules()
    };
    assert_eq!(
        step(&point(50_000.0), 0, &point(30.0), DT, &exchanged).0,
        Step::Exchange
    );
}

#[test]
fn a_hole_with_moving_registers_is_a_gap_and_a_flat_one_an_outage() {
    let r = rules();
    let (_, gap) = span(&point(0.0), 0, &point(500.0), 5 * DT, &r);
    assert_eq!(gap.len(), 5);
    assert!(
        gap.iter()
            .all(|(_, i)| i.rule == Some(Rule::Gap) && i.energy_wh == 100.0)
    );
    // 400 W for 5 intervals predicts 500 Wh; 90 Wh moved: no supply for 4 intervals.
    let (_, outage) = span(&point(0.0), 0, &point(90.0), 5 * DT, &r);
    assert!(
        outage[..4]
            .iter()
            .all(|(_, i)| i.energy_wh == 0.0 && i.rule == Some(Rule::Outage))
    );
    assert_eq!(outage[4].1.energy_wh, 90.0);
    assert_eq!(outage[4].1.quality, Quality::Measured);
}

#[test]
fn an_out_of_order_reading_restates_the_hole_it_fills() {
    let r = rules();
    let mut t = Track::default();
    t.insert(0, point(0.0), &r);
    t.insert(2 * DT, point(200.0), &r);
    assert_eq!(t.intervals()[&DT].quality, Quality::Estimated);
    let ins = t.insert(DT, point(120.0), &r);
    assert_eq!(ins.changes.len(), 2);
    assert_eq!(t.intervals()[&DT].energy_wh, 120.0);
    assert_eq!(t.intervals()[&(2 * DT)].energy_wh, 80.0);
    assert!(
        t.intervals()
            .values()
            .all(|i| i.quality == Quality::Measured)
    );
    t.prune(2 * DT);
    assert_eq!(t.first_ts(), Some(DT));
    assert_eq!(t.intervals().len(), 1);
}

proptest! {
    /// For any arrival order, duplicates, gaps and rollovers, the intervals between the first
    /// and the last reading sum to the register difference (unwrapped).
    #[test]
    fn interval_energy_sums_to_the_register_difference(
        start in 0.0..100_000.0_f64,
        use_wh in prop::collection::vec(0.0..400.0_f64, 2..60),
        keep in prop::collection::vec(any::<bool>(), 60),
        dup in prop::collection::vec(any::<bool>(), 60),
        power in prop::collection::vec(prop::option::of(0.0..3000.0_f64), 61),
        order in any::<u64>(),
    ) {
        let r = rules();
        // Registers: cumulative, modulo the capacity (rounded to 0.1 Wh like a real register).
        let mut unwrapped = vec![start];
        for u in &use_wh {
            unwrapped.push(unwrapped.last().unwrap() + (u * 10.0).round() / 10.0);
        }
        let n = unwrapped.len();
        let mut arrivals: Vec<usize> = (0..n)
            .filter(|&i| i == 0 || i == n - 1 || keep[i % keep.len()])
            .collect();
        let dups: Vec<usize> = arrivals.iter().copied().filter(|&i| dup[i % dup.len()]).collect();
        arrivals.extend(dups);
        // A deterministic shuffle from `order`.
        let mut state = order | 1;
        for i in (1..arrivals.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            arrivals.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut track = Track::default();
        for i in arrivals {
            let ts = i as i64 * DT;
            if track.contains(ts) {
                continue;
            }
            let p = Point {
                import_wh: unwrapped[i] % r.capacity_wh,
                export_wh: 0.0,
                power_w: power[i],
            };
            let (before, after) = track.check(ts, &p, &r);
            prop_assert!(before != Some(Step::Negative) && after != Some(Step::Negative));
            track.insert(ts, p, &r);
        }
        let total: f64 = track.intervals().values().map(|i| i.energy_wh).sum();
        let expected = unwrapped[n - 1] - unwrapped[0];
        prop_assert!((total - expected).abs() < 1e-6, "{total} vs {expected}");
        // The intervals partition (first, last]: one per grid step.
        prop_assert_eq!(track.intervals().len(), n - 1);
    }
}
