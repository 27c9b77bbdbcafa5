#![allow(clippy::unwrap_used)]

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::tariff::Document;

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

fn tariff(urdb: serde_json::Value, extra: serde_json::Value) -> Tariff {
    let mut doc = json!({"id": "T", "effective_from": "2020-01-01", "urdb": urdb});
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    serde_json::from_value::<Document>(doc)
        .unwrap()
        .tariff()
        .unwrap()
}

fn flat(rate: f64) -> serde_json::Value {
    json!({"energyratestructure": [[{"rate": rate}]]})
}

/// Every 15 minutes from local midnight of `from` to the end of `to`, `wh(i)` imported.
fn series(tz: Tz, from: &str, to: &str, wh: impl Fn(usize) -> (f64, f64)) -> Vec<Interval> {
    let start = local_midnight(tz, d(from));
    let end = local_midnight(tz, d(to) + chrono::Days::new(1));
    let n = ((end - start).num_minutes() / 15) as usize;
    (0..n)
        .map(|i| {
            let (import_wh, export_wh) = wh(i);
            Interval {
                start: start + Duration::minutes(15 * i as i64),
                import_wh,
                export_wh,
                estimated: i % 10 == 0,
            }
        })
        .collect()
}

fn run(t: &Tariff, tz: Tz, from: &str, to: &str, iv: &[Interval]) -> Bill {
    bill(
        t,
        tz,
        d(from),
        d(to),
        iv,
        Duration::minutes(15),
        Carry::default(),
    )
    .unwrap()
}

fn amount(b: &Bill, kind: LineKind) -> f64 {
    b.lines
        .iter()
        .filter(|l| l.kind == kind)
        .map(|l| l.amount)
        .sum()
}

#[test]
fn a_flat_rate_bills_each_kwh_plus_the_fixed_charge_and_counts_estimates() {
    let mut urdb = flat(0.1);
    urdb["fixedchargefirstmeter"] = json!(5.0);
    urdb["fixedchargeunits"] = json!("$/month");
    let t = tariff(urdb, json!({}));
    let iv = series(chrono_tz::UTC, "2021-03-01", "2021-03-31", |_| (250.0, 0.0));
    let b = run(&t, chrono_tz::UTC, "2021-03-01", "2021-03-31", &iv);
    // 31 days × 96 × 0.25 kWh = 744 kWh.
    assert_eq!(b.total, 74.4 + 5.0);
    assert_eq!(amount(&b, LineKind::Energy), 74.4);
    assert_eq!(b.estimated_share, 298.0 / 2976.0);
    assert_eq!(b.lines.iter().map(|l| l.amount).sum::<f64>(), b.total);
}

#[test]
fn a_dst_day_bills_its_own_hours() {
    let tz: Tz = "America/Denver".parse().unwrap();
    let t = tariff(flat(0.2), json!({}));
    // 2021-03-14 has 23 hours, 2021-11-07 has 25.
    let spring = series(tz, "2021-03-14", "2021-03-14", |_| (1000.0, 0.0));
    assert_eq!(spring.len(), 92);
    assert_eq!(run(&t, tz, "2021-03-14", "2021-03-14", &spring).total, 18.4);
    let fall = series(tz, "2021-11-07", "2021-11-07", |_| (1000.0, 0.0));
    assert_eq!(fall.len(), 100);
    assert_eq!(run(&t, tz, "2021-11-07", "2021-11-07", &fall).total, 20.0);
}

#[test]
fn tou_periods_follow_local_time_and_weekends() {
    let tz: Tz = "America/Denver".parse().unwrap();
    // Peak 16–20 h local on weekdays at 0.30, else 0.10.
    let mut weekday = [[0u8; 24]; 12];
    for m in &mut weekday {
        m[16..20].fill(1);
    }
    let urdb = json!({
        "energyratestructure": [[{"rate": 0.1}], [{"rate": 0.3}]],
        "energyweekdayschedule": weekday,
        "energyweekendschedule": vec![vec![0u8; 24]; 12],
    });
    let t = tariff(urdb, json!({}));
    // Friday 2021-07-02 and Saturday 2021-07-03: 1 kWh in each local hour.
    let iv = series(tz, "2021-07-02", "2021-07-03", |_| (250.0, 0.0));
    let b = run(&t, tz, "2021-07-02", "2021-07-03", &iv);
    let peak: f64 = b
        .lines
        .iter()
        .filter(|l| l.rate == 0.3)
        .map(|l| l.quantity)
        .sum();
    assert!((peak - 4.0).abs() < 1e-9, "{:?}", b.lines);
    assert_eq!(b.total, 5.6);
}

#[test]
fn tiers_take_the_cycle_total_and_prorate_for_part_of_a_cycle() {
    let urdb = json!({"energyratestructure": [[{"rate": 0.1, "max": 300.0}, {"rate": 0.2}]]});
    let t = tariff(urdb, json!({}));
    let iv = series(chrono_tz::UTC, "2021-04-01", "2021-04-30", |_| (250.0, 0.0));
    // 720 kWh in April: 300 at 0.1, 420 at 0.2.
    assert_eq!(
        run(&t, chrono_tz::UTC, "2021-04-01", "2021-04-30", &iv).total,
        114.0
    );
    // Ten days of it: 240 kWh, the first tier prorated to 100 kWh.
    assert_eq!(
        run(&t, chrono_tz::UTC, "2021-04-01", "2021-04-10", &iv).total,
        38.0
    );
}

#[test]
fn a_daily_fixed_charge_is_billed_per_day_and_a_minimum_tops_up() {
    let mut urdb = flat(0.1);
    urdb["fixedchargefirstmeter"] = json!(0.5);
    urdb["fixedchargeunits"] = json!("$/day");
    urdb["mincharge"] = json!(40.0);
    urdb["minchargeunits"] = json!("$/month");
    let t = tariff(urdb, json!({}));
    let iv = series(chrono_tz::UTC, "2021-02-01", "2021-02-28", |i| {
        ((i % 2) as f64 * 10.0, 0.0)
    });
    let b = run(&t, chrono_tz::UTC, "2021-02-01", "2021-02-28", &iv);
    // 28 days × 0.5 = 14.00; energy 1344 × 0.01 kWh × 0.1 = 1.344; minimum tops up to 40.
    assert_eq!(amount(&b, LineKind::Fixed), 14.0);
    assert_eq!(b.total, 40.0);
    assert!((amount(&b, LineKind::Minimum) - (40.0 - 14.0 - 1.344)).abs() < 0.011);
}

#[test]
fn net_metering_carries_a_surplus_to_the_next_cycle_and_settles_in_december() {
    let t = tariff(flat(0.1), json!({"yearend_sell_rate": 0.02}));
    let tz = chrono_tz::UTC;
    // November exports 100 kWh net; December imports 30 kWh net.
    let nov = series(tz, "2021-11-01", "2021-11-30", |i| {
        if i == 0 { (0.0, 100_000.0) } else { (0.0, 0.0) }
    });
    let dec = series(tz, "2021-12-01", "2021-12-31", |i| {
        if i == 0 { (30_000.0, 0.0) } else { (0.0, 0.0) }
    });
    let b11 = run(&t, tz, "2021-11-01", "2021-11-30", &nov);
    assert_eq!(b11.total, 0.0);
    assert_eq!(b11.carry.surplus_kwh, vec![100.0]);
    let b12 = bill(
        &t,
        tz,
        d("2021-12-01"),
        d("2021-12-31"),
        &dec,
        Duration::minutes(15),
        b11.carry,
    )
    .unwrap();
    // December's 30 kWh are covered by the credit; the 70 kWh excess are paid at 0.02.
    assert_eq!(amount(&b12, LineKind::Energy), 0.0);
    assert_eq!(b12.total, -1.4);
    assert_eq!(b12.carry.surplus_kwh, Vec::<f64>::new());
}

#[test]
fn net_billing_credits_exports_at_the_sell_rate_now_or_in_later_cycles() {
    let urdb = |rule: &str| json!({"energyratestructure": [[{"rate": 0.2, "sell": 0.05}]], "dgrules": rule});
    let tz = chrono_tz::UTC;
    let iv = series(tz, "2021-05-01", "2021-06-30", |i| {
        if i % 2 == 0 {
            (1000.0, 0.0)
        } else {
            (0.0, 2000.0)
        }
    });
    // May: 1488 kWh bought (297.60), 2976 kWh sold (148.80).
    let now = tariff(urdb("Net Billing Instantaneous"), json!({}));
    let b = run(&now, tz, "2021-05-01", "2021-05-31", &iv);
    assert_eq!(b.total, 297.6 - 148.8);
    let later = tariff(urdb("Net Billing Hourly"), json!({}));
    let may = run(&later, tz, "2021-05-01", "2021-05-31", &iv);
    assert_eq!(may.total, 297.6);
    assert!((may.carry.credit - 148.8).abs() < 1e-9);
    let june = bill(
        &later,
        tz,
        d("2021-06-01"),
        d("2021-06-30"),
        &iv,
        Duration::minutes(15),
        may.carry,
    )
    .unwrap();
    // June: 1440 kWh bought (288.00) less May's credit.
    assert_eq!(june.total, 288.0 - 148.8);
}

#[test]
fn demand_charges_take_the_highest_quarter_hour_of_each_period() {
    let mut weekday = [[0u8; 24]; 12];
    for m in &mut weekday {
        m[12..18].fill(1);
    }
    let urdb = json!({
        "energyratestructure": [[{"rate": 0.0}]],
        "demandratestructure": [[{"rate": 2.0}], [{"rate": 10.0, "max": 5.0}, {"rate": 20.0}]],
        "demandweekdayschedule": weekday,
        "demandweekendschedule": vec![vec![0u8; 24]; 12],
        "flatdemandstructure": [[{"rate": 1.0}]],
        "flatdemandmonths": vec![0; 12],
    });
    let t = tariff(urdb, json!({}));
    let tz = chrono_tz::UTC;
    // Thursday 2021-07-01: 8 kW in the 13:00 quarter (2000 Wh), 12 kW at 03:00 (3000 Wh).
    let iv = series(tz, "2021-07-01", "2021-07-01", |i| match i {
        52 => (2000.0, 0.0),
        12 => (3000.0, 0.0),
        _ => (100.0, 0.0),
    });
    let b = run(&t, tz, "2021-07-01", "2021-07-01", &iv);
    // Off-peak 12 kW × 2; peak 5 × 10 + 3 × 20; flat 12 × 1.
    assert_eq!(amount(&b, LineKind::Demand), 24.0 + 50.0 + 60.0);
    assert_eq!(amount(&b, LineKind::FlatDemand), 12.0);
}

#[test]
fn taxes_apply_to_the_charges() {
    let t = tariff(
        flat(0.1),
        json!({"taxes": [{"name": "State tax", "percent": 5.0}]}),
    );
    let iv = series(chrono_tz::UTC, "2021-03-01", "2021-03-31", |_| (250.0, 0.0));
    let b = run(&t, chrono_tz::UTC, "2021-03-01", "2021-03-31", &iv);
    assert_eq!(amount(&b, LineKind::Tax), 3.72);
    assert_eq!(b.total, 78.12);
}

#[test]
fn a_partial_or_doubled_series_is_refused() {
    let t = tariff(flat(0.1), json!({}));
    let tz = chrono_tz::UTC;
    let mut iv = series(tz, "2021-03-01", "2021-03-02", |_| (250.0, 0.0));
    iv.remove(7);
    let e = bill(
        &t,
        tz,
        d("2021-03-01"),
        d("2021-03-02"),
        &iv,
        Duration::minutes(15),
        Carry::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            BillError::Missing {
                missing: 1,
                expected: 192,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("2021-03-01 01:45"), "{e}");
    iv.push(iv[0]);
    let e = bill(
        &t,
        tz,
        d("2021-03-01"),
        d("2021-03-02"),
        &iv,
        Duration::minutes(15),
        Carry::default(),
    )
    .unwrap_err();
    assert!(matches!(e, BillError::BadInterval(..)), "{e}");
    let e = bill(
        &t,
        tz,
        d("2019-12-31"),
        d("2020-01-02"),
        &iv,
        Duration::minutes(15),
        Carry::default(),
    )
    .unwrap_err();
    assert!(matches!(e, BillError::NotEffective { .. }), "{e}");
    let _ = Utc.timestamp_opt(0, 0);
}

proptest! {
    #[test]
    fn lines_add_up_and_a_split_period_bills_like_the_whole(
        rates in proptest::collection::vec(0.01f64..0.5, 1..4),
        max in 50.0f64..600.0,
        fixed in 0.0f64..20.0,
        seed in 0u64..1000,
    ) {
        let periods: Vec<_> = rates.iter().map(|r| json!([{"rate": r, "max": max}, {"rate": r * 1.5}])).collect();
        let mut weekday = [[0u8; 24]; 12];
        for (m, row) in weekday.iter_mut().enumerate() {
            for (h, p) in row.iter_mut().enumerate() {
                *p = ((m + h / 6) % rates.len()) as u8;
            }
        }
        let urdb = json!({
            "energyratestructure": periods,
            "energyweekdayschedule": weekday,
            "energyweekendschedule": weekday,
            "fixedchargefirstmeter": fixed,
            "fixedchargeunits": "$/month",
        });
        let t = tariff(urdb, json!({}));
        let tz = chrono_tz::UTC;
        let iv = series(tz, "2021-01-01", "2021-02-28", |i| {
            let x = (i as u64).wrapping_mul(2654435761).wrapping_add(seed) % 1000;
            (x as f64, 0.0)
        });
        let whole = bill(&t, tz, d("2021-01-01"), d("2021-02-28"), &iv, Duration::minutes(15), Carry::default()).unwrap();
        let sum: f64 = whole.lines.iter().map(|l| l.amount).sum();
        prop_assert_eq!(round::units(sum, 2), round::units(whole.total, 2));
        // Cut at a cycle boundary, the two bills add up to the whole (to a cent per bill).
        let jan = bill(&t, tz, d("2021-01-01"), d("2021-01-31"), &iv, Duration::minutes(15), Carry::default()).unwrap();
        let feb = bill(&t, tz, d("2021-02-01"), d("2021-02-28"), &iv, Duration::minutes(15), jan.carry.clone()).unwrap();
        prop_assert!((jan.total + feb.total - whole.total).abs() <= 0.011);
    }
}

#[test]
fn a_credit_stays_in_its_period_within_one_cycle() {
    // Period 2 is in force on weekends only: SAM's next-cycle rule (weekday hours) would let
    // its credit lapse, but within one cycle it stays.
    let urdb = json!({
        "energyratestructure": [[{"rate": 0.1}], [{"rate": 0.2}]],
        "energyweekdayschedule": vec![vec![0u8; 24]; 12],
        "energyweekendschedule": vec![vec![1u8; 24]; 12],
    });
    let t = tariff(urdb, json!({}));
    let tz = chrono_tz::UTC;
    // Saturday 2021-11-06 exports 50 kWh; Saturday 2021-11-13 imports 30 kWh.
    let iv = series(tz, "2021-11-01", "2021-11-30", |i| match i {
        i if i == 5 * 96 => (0.0, 50_000.0),
        i if i == 12 * 96 => (30_000.0, 0.0),
        _ => (0.0, 0.0),
    });
    let first = run(&t, tz, "2021-11-01", "2021-11-10", &iv);
    assert_eq!(first.carry.surplus_kwh, vec![0.0, 50.0]);
    let rest = bill(
        &t,
        tz,
        d("2021-11-11"),
        d("2021-11-30"),
        &iv,
        Duration::minutes(15),
        first.carry,
    )
    .unwrap();
    assert_eq!(rest.total, 0.0, "{:?}", rest.lines);
    assert_eq!(rest.carry.surplus_kwh, vec![0.0, 20.0]);
}

#[test]
fn a_billing_year_starts_with_the_january_cycle() {
    let t = tariff(flat(0.1), json!({"billing_day": 15}));
    // 2026-01-10 belongs to the cycle of 2025-12-15: the year began on 2025-01-15.
    assert_eq!(crate::year_start(&t, d("2026-01-10")), d("2025-01-15"));
    assert_eq!(crate::year_start(&t, d("2026-01-15")), d("2026-01-15"));
    assert_eq!(crate::year_start(&t, d("2026-07-01")), d("2026-01-15"));
}
