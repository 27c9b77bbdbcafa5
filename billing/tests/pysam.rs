//! The bill engine against NREL's PySAM (Utilityrate5 with its URDB conversion), to the cent:
//! every example tariff in ../shared/data/tariffs/urdb over several load shapes (households,
//! a commercial load, a household with solar under each export rule), billed month by month
//! through 2018 (SAM's calendar year starts on a Monday, as 2018 does) in UTC, carrying
//! credits from cycle to cycle.
//!
//! Where meterstack's convention differs from SAM's, both sides are checked:
//! - a daily fixed charge is billed per day of the cycle (SAM: 365/12 days every month);
//! - the older URDB fields `fixedmonthlycharge`, `minmonthlycharge` and `annualmincharge` are
//!   billed (PySAM's conversion ignores them).
//!
//! Needs PySAM: `python3 -m pip install nrel-pysam==7.1.1.post1` (scripts/install-test-deps).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};
use meterstack_billing::engine::{self, Carry, Interval, LineKind, round};
use meterstack_billing::tariff::Document;
use serde_json::{Value, json};

const STEPS: usize = 35_040;
const YEAR: i32 = 2018;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

fn start() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(YEAR, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
}

/// A BDEW standard load profile as kWh per quarter hour of 2018 for 1,000,000 kWh a year.
fn profile(file: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(data().join("load-profiles").join(file)).expect("profile");
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    let values: Vec<Vec<f64>> = rows[2..98]
        .iter()
        .map(|r| r[1..].iter().map(|v| v.parse().unwrap()).collect())
        .collect();
    (0..STEPS)
        .map(|i| {
            let t = start() + Duration::minutes(15 * i as i64);
            let kind = match t.weekday() {
                Weekday::Sat => 0,
                Weekday::Sun => 1,
                _ => 2,
            };
            values[i % 96][t.month0() as usize * 3 + kind]
        })
        .collect()
}

/// A small deterministic generator: the same shapes on every run.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// kW per quarter hour: a profile scaled to `annual_kwh`, with each quarter's own noise.
fn load(file: &str, annual_kwh: f64, seed: u64) -> Vec<f64> {
    let mut rng = Lcg(seed);
    profile(file)
        .into_iter()
        .map(|kwh| kwh * annual_kwh / 1e6 * 4.0 * (0.5 + rng.next()))
        .collect()
}

/// A 6 kW rooftop system's output, kW: a midday arc, longer and higher in summer, clouds.
fn solar(seed: u64) -> Vec<f64> {
    let mut rng = Lcg(seed);
    (0..STEPS)
        .map(|i| {
            let day = (i / 96) as f64;
            let hour = (i % 96) as f64 / 4.0;
            let season = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * (day + 10.0) / 365.0).cos();
            let half = 5.0 + 2.5 * season;
            let arc = (std::f64::consts::PI * (hour - (12.5 - half)) / (2.0 * half)).sin();
            let cloud = 0.3 + 0.7 * rng.next();
            6.0 * (0.55 + 0.45 * season) * arc.max(0.0) * cloud
        })
        .collect()
}

struct Case {
    name: String,
    urdb: Value,
    import_kw: Vec<f64>,
    export_kw: Vec<f64>,
}

fn case(name: &str, urdb: &Value, load_kw: &[f64], gen_kw: &[f64]) -> Case {
    let (import_kw, export_kw) = load_kw
        .iter()
        .zip(gen_kw)
        .map(|(l, g)| ((l - g).max(0.0), (g - l).max(0.0)))
        .unzip();
    Case {
        name: name.to_owned(),
        urdb: urdb.clone(),
        import_kw,
        export_kw,
    }
}

fn record(file: &str) -> Value {
    let path = data().join("tariffs/urdb").join(file);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `record` with another export rule and every tier paying `sell` for exports.
fn with_export(record: &Value, rule: &str, sell: f64) -> Value {
    let mut r = record.clone();
    r["dgrules"] = json!(rule);
    for period in r["energyratestructure"].as_array_mut().unwrap() {
        for tier in period.as_array_mut().unwrap() {
            tier["sell"] = json!(sell);
        }
    }
    r
}

const LEGACY: [&str; 3] = ["fixedmonthlycharge", "minmonthlycharge", "annualmincharge"];

fn cases() -> Vec<Case> {
    let household = load("h25.csv", 4_500.0, 1);
    let small = load("h25.csv", 900.0, 2);
    let commercial = load("g25.csv", 3_000_000.0, 3);
    let pv = solar(4);
    let none = vec![0.0; STEPS];
    let mut out = Vec::new();
    let files = [
        "hpxml-sample-flat-min-monthly.json",
        "jackson-emc-seasonal-tiered.json",
        "pge-e19-tou-demand.json",
        "psco-rd-residential-demand.json",
        "psco-re-tou-residential.json",
        "pysam-urdbv7-test.json",
    ];
    for file in files {
        let mut urdb = record(file);
        // PySAM ignores the older field names; they are checked on their own below.
        for key in LEGACY {
            urdb.as_object_mut().unwrap().remove(key);
        }
        out.push(case(&format!("{file} household"), &urdb, &household, &none));
        out.push(case(
            &format!("{file} small household"),
            &urdb,
            &small,
            &none,
        ));
        out.push(case(
            &format!("{file} commercial"),
            &urdb,
            &commercial,
            &none,
        ));
        out.push(case(
            &format!("{file} solar household"),
            &urdb,
            &household,
            &pv,
        ));
    }
    for (file, rules) in [
        (
            "psco-re-tou-residential.json",
            &[
                "Net Billing Instantaneous",
                "Net Billing Hourly",
                "Buy All Sell All",
            ][..],
        ),
        (
            "jackson-emc-seasonal-tiered.json",
            &["Net Billing Instantaneous", "Buy All Sell All"][..],
        ),
    ] {
        for rule in rules {
            let urdb = with_export(&record(file), rule, 0.0537);
            out.push(case(
                &format!("{file} solar household, {rule}"),
                &urdb,
                &household,
                &pv,
            ));
        }
    }
    out
}

fn intervals(c: &Case) -> Vec<Interval> {
    (0..STEPS)
        .map(|i| Interval {
            start: start() + Duration::minutes(15 * i as i64),
            import_wh: c.import_kw[i] * 250.0,
            export_wh: c.export_kw[i] * 250.0,
            estimated: false,
        })
        .collect()
}

fn document(urdb: &Value) -> Document {
    Document {
        id: "t".into(),
        name: String::new(),
        currency: "USD".into(),
        effective_from: NaiveDate::from_ymd_opt(YEAR, 1, 1).unwrap(),
        effective_to: None,
        billing_day: 1,
        decimals: 2,
        taxes: Vec::new(),
        yearend_sell_rate: 0.0,
        urdb: urdb.clone(),
    }
}

/// Our twelve monthly bills: (total, exact fixed charges).
fn ours(urdb: &Value, intervals: &[Interval]) -> Vec<engine::Bill> {
    let tariff = document(urdb).tariff().expect("the tariff reads");
    let mut carry = Carry::default();
    (1..=12)
        .map(|m| {
            let from = NaiveDate::from_ymd_opt(YEAR, m, 1).unwrap();
            let to = from + chrono::Months::new(1) - chrono::Days::new(1);
            let bill = engine::bill(
                &tariff,
                chrono_tz::UTC,
                from,
                to,
                intervals,
                Duration::minutes(15),
                carry.clone(),
            )
            .unwrap_or_else(|e| panic!("month {m}: {e}"));
            carry = bill.carry.clone();
            bill
        })
        .collect()
}

fn pysam(cases: &[Case]) -> Value {
    let dir = std::env::temp_dir().join(format!("meterstack-pysam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input: Vec<Value> = cases
        .iter()
        .map(|c| json!({"name": c.name, "urdb": c.urdb, "load_kw": c.import_kw, "gen_kw": c.export_kw}))
        .collect();
    std::fs::write(dir.join("cases.json"), serde_json::to_vec(&input).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pysam_bills.py");
    let status = Command::new("python3")
        .arg(script)
        .arg(dir.join("cases.json"))
        .arg(dir.join("out.json"))
        .status()
        .expect("python3");
    assert!(
        status.success(),
        "PySAM failed (is it installed? python3 -m pip install nrel-pysam==7.1.1.post1)"
    );
    let out = serde_json::from_slice(&std::fs::read(dir.join("out.json")).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    out
}

fn month(v: &Value, key: &str, m: usize) -> f64 {
    v[key][m].as_f64().unwrap()
}

#[test]
fn bills_equal_pysam_to_the_cent_on_every_example_tariff_and_load_shape() {
    let cases = cases();
    let reference = pysam(&cases);
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for c in &cases {
        let sam = &reference[&c.name];
        let bills = ours(&c.urdb, &intervals(c));
        let daily_fixed = (c.urdb["fixedchargeunits"] == "$/day")
            .then(|| c.urdb["fixedchargefirstmeter"].as_f64().unwrap());
        for (m, bill) in bills.iter().enumerate() {
            let mut expected = month(sam, "bill", m);
            if let Some(per_day) = daily_fixed {
                // SAM's side of the convention: 365/12 days in every month.
                let sam_fixed = month(sam, "fixed", m);
                assert!(
                    (sam_fixed - per_day * 365.0 / 12.0).abs() < 1e-9,
                    "{}: SAM fixed {sam_fixed}",
                    c.name
                );
                // Ours: the days of the cycle.
                let days = f64::from(bill.to.day());
                let fixed: f64 = bill
                    .lines
                    .iter()
                    .filter(|l| l.kind == LineKind::Fixed)
                    .map(|l| l.quantity)
                    .sum();
                assert_eq!(fixed, days, "{}: month {m} fixed days", c.name);
                expected += per_day * days - sam_fixed;
            }
            compared += 1;
            if round::units(expected, 2) != round::units(bill.total, 2) {
                mismatches.push(format!(
                    "{} month {}: ours {:.2}, PySAM {:.4} (energy {:.4}, flat demand {:.4}, TOU demand {:.4}, fixed {:.4}, minimum {:.4}, true-up {:.4}); our lines {:?}",
                    c.name,
                    m + 1,
                    bill.total,
                    expected,
                    month(sam, "energy", m),
                    month(sam, "demand_flat", m),
                    month(sam, "demand_tou", m),
                    month(sam, "fixed", m),
                    month(sam, "minimum", m),
                    month(sam, "true_up", m),
                    bill.lines.iter().map(|l| (l.kind, l.amount)).collect::<Vec<_>>(),
                ));
            }
        }
    }
    let total: f64 = cases
        .iter()
        .map(|c| {
            reference[&c.name]["bill"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_f64)
                .sum::<f64>()
        })
        .sum();
    eprintln!(
        "{compared} monthly bills of {} cases compared with PySAM; they total {total:.2}",
        cases.len()
    );
    assert!(compared >= 12 * 26, "{compared} monthly bills compared");
    assert!(
        mismatches.is_empty(),
        "{} of {compared} monthly bills differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn the_older_urdb_fields_that_pysam_ignores_are_billed() {
    let full = record("pysam-urdbv7-test.json");
    let mut stripped = full.clone();
    for key in LEGACY {
        stripped.as_object_mut().unwrap().remove(key);
    }
    let c = case("legacy", &full, &load("h25.csv", 4_500.0, 1), &[0.0; STEPS]);
    let with = ours(&full, &intervals(&c));
    let without = ours(&stripped, &intervals(&c));
    for (a, b) in with.iter().zip(&without) {
        // fixedmonthlycharge 35.28 a month; the minimums (1.00 a month, 12.00 a year) are
        // below what the month charges anyway.
        assert_eq!(
            round::units(a.total - b.total, 2),
            3528,
            "{} vs {}",
            a.total,
            b.total
        );
        assert!(
            a.lines
                .iter()
                .any(|l| l.kind == LineKind::Fixed && l.rate == 35.28)
        );
        assert!(a.lines.iter().all(|l| l.kind != LineKind::Minimum));
    }
}
