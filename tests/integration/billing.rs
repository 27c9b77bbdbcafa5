//! Tariffs and bills against a real `meterstack up`: tariffs imported from the shell and over
//! HTTP (a bad record refused by field), a meter linked to one, its bill from the trusted zone
//! checked against SQL over the same intervals, and the refusals (no tariff, missing data,
//! bad dates); a bill run for the last whole month: new bills in the SQL table `bills` equal
//! to the API's, an idempotent second run, and a new revision when the bill changed.

use std::path::Path;

use chrono::Datelike;
use serde_json::{Value, json};

use crate::harness::{Meterstack, ok_in as ok};

fn urdb(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/tariffs/urdb")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_meter_is_billed_from_the_trusted_zone_under_its_tariff() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let csv = dir.join("fleet.csv");
    let csv = csv.to_str().expect("utf-8 path");
    ok(
        dir,
        &[
            "backfill",
            "--meters",
            "6",
            "--days",
            "64",
            "--end",
            "30m",
            "--fleet-csv",
            csv,
        ],
    );
    ok(dir, &["meters", "import", csv]);
    ok(dir, &["etl"]);
    let imported = ok(
        dir,
        &[
            "tariffs",
            "import",
            &urdb("hpxml-sample-flat-min-monthly.json"),
            "--id",
            "flat",
            "--effective-from",
            "2020-01-01",
        ],
    );
    assert!(
        imported.starts_with("tariff flat version 1 from 2020-01-01"),
        "{imported}"
    );
    let listed = ok(dir, &["tariffs", "list"]);
    assert!(
        listed.starts_with("flat\t1\t2020-01-01\t-\tUSD\t"),
        "{listed}"
    );
    let shown: Value = serde_json::from_str(&ok(dir, &["tariffs", "show", "flat"])).expect("json");
    assert_eq!(
        shown["document"]["urdb"]["fixedchargefirstmeter"], 8,
        "{shown}"
    );

    let ms = Meterstack::start(dir, &[]);
    // Over HTTP: a TOU tariff, and a damaged record refused by its field.
    let tou = std::fs::read_to_string(urdb("psco-re-tou-residential.json")).expect("tariff");
    let (status, text) = ms.request_text(
        "POST",
        "/api/v1/tariffs?id=tou&effective_from=2020-01-01",
        &tou,
    );
    assert_eq!(status, 201, "{text}");
    let mut bad: Value = serde_json::from_str(&tou).expect("json");
    bad["energyweekdayschedule"][4][9] = json!(7);
    let (status, text) = ms.request_text(
        "POST",
        "/api/v1/tariffs?id=bad&effective_from=2020-01-01",
        &bad.to_string(),
    );
    assert_eq!(status, 400, "{text}");
    assert!(
        text.contains("urdb.energyweekdayschedule[4][9]: period 7 is out of range"),
        "{text}"
    );
    let (status, list) = ms.admin("GET", "/api/v1/tariffs", None);
    assert_eq!(status, 200);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|v| v["tariff_id"].as_str())
        .collect();
    assert_eq!(ids, vec!["flat", "tou"], "{list}");

    // A meter with no export, on the flat tariff; another on the TOU tariff.
    let rows = ms.rows(
        "SELECT meter_id FROM readings GROUP BY meter_id HAVING sum(export_wh) = 0 ORDER BY meter_id LIMIT 2",
    );
    let meter = rows[0]["meter_id"]
        .as_str()
        .expect("a meter without export")
        .to_owned();
    let other = rows[1]["meter_id"]
        .as_str()
        .expect("a second meter")
        .to_owned();
    let (status, text) = ms.admin(
        "GET",
        &format!("/api/v1/meters/{meter}/bill?from=2020-01-01&to=2020-01-31"),
        None,
    );
    assert_eq!(
        (status, text["error"]["code"].as_str()),
        (409, Some("no_tariff")),
        "{text}"
    );
    for (m, tariff) in [(&meter, "flat"), (&other, "tou")] {
        let (status, body) = ms.admin(
            "PATCH",
            &format!("/api/v1/meters/{m}"),
            Some(&json!({"tariff_id": tariff})),
        );
        assert_eq!(status, 200, "{body}");
    }

    // The whole days of data: from the day after the first interval to yesterday.
    let span = ms.rows("SELECT min(ts) AS first, max(ts) AS last FROM readings");
    let day = |v: &Value, add: i64| {
        let t = chrono::DateTime::parse_from_rfc3339(v.as_str().expect("ts")).expect("ts");
        (t.date_naive() + chrono::Duration::days(add)).to_string()
    };
    let (from, to) = (day(&span[0]["first"], 1), day(&span[0]["last"], -1));
    let (status, bill) = ms.admin(
        "GET",
        &format!("/api/v1/meters/{meter}/bill?from={from}&to={to}"),
        None,
    );
    assert_eq!(status, 200, "{bill}");
    assert_eq!(
        (
            bill["meter_id"].as_str(),
            bill["tariff_id"].as_str(),
            bill["currency"].as_str()
        ),
        (Some(meter.as_str()), Some("flat"), Some("USD"))
    );
    let lines = bill["lines"].as_array().expect("lines");
    let cents = |x: &Value| (x.as_f64().expect("amount") * 100.0).round() as i64;
    assert_eq!(
        lines.iter().map(|l| cents(&l["amount"])).sum::<i64>(),
        cents(&bill["total"]),
        "{bill}"
    );
    let kwh: f64 = lines
        .iter()
        .filter(|l| l["kind"] == "energy")
        .map(|l| l["quantity"].as_f64().unwrap_or(0.0))
        .sum();
    let sql = ms.rows(&format!(
        "SELECT sum(energy_wh) / 1000.0 AS kwh, count(*) AS n FROM readings WHERE meter_id = '{meter}' \
         AND ts >= TIMESTAMP '{from}T00:00:00Z' AND ts < TIMESTAMP '{to}T00:00:00Z' + INTERVAL '1 day'"
    ));
    let expected = sql[0]["kwh"].as_f64().expect("kwh");
    assert!(
        (kwh - expected).abs() < 1e-6,
        "bill {kwh} kWh, SQL {expected} kWh"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "fixed" && l["rate"] == 8.0),
        "{bill}"
    );
    assert!(
        bill["estimated_share"]
            .as_f64()
            .is_some_and(|s| (0.0..=1.0).contains(&s)),
        "{bill}"
    );

    let (status, tou_bill) = ms.admin(
        "GET",
        &format!("/api/v1/meters/{other}/bill?from={from}&to={to}"),
        None,
    );
    assert_eq!(status, 200, "{tou_bill}");
    let periods: std::collections::BTreeSet<&str> = tou_bill["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .filter(|l| l["kind"] == "energy")
        .filter_map(|l| l["description"].as_str())
        .collect();
    assert!(periods.len() >= 2, "{tou_bill}");

    // Refusals: days without data, reversed dates, an unknown meter.
    let (status, text) = ms.admin(
        "GET",
        &format!("/api/v1/meters/{meter}/bill?from={from}&to=2099-01-01"),
        None,
    );
    assert_eq!(status, 400, "{text}");
    let (status, text) = ms.admin(
        "GET",
        &format!(
            "/api/v1/meters/{meter}/bill?from={}&to={to}",
            day(&span[0]["first"], -3)
        ),
        None,
    );
    assert_eq!(
        (status, text["error"]["code"].as_str()),
        (409, Some("incomplete_data")),
        "{text}"
    );
    let (status, _) = ms.admin(
        "GET",
        &format!("/api/v1/meters/{meter}/bill?from={to}&to={from}"),
        None,
    );
    assert_eq!(status, 400);
    let (status, _) = ms.admin(
        "GET",
        "/api/v1/meters/nobody/bill?from=2020-01-01&to=2020-01-02",
        None,
    );
    assert_eq!(status, 404);

    // A bill run for the last month the data covers whole.
    let first_day = chrono::NaiveDate::parse_from_str(&from, "%Y-%m-%d").expect("date");
    let last_day = chrono::NaiveDate::parse_from_str(&to, "%Y-%m-%d").expect("date");
    let mut month = last_day.with_day(1).expect("first") - chrono::Months::new(1);
    if month < first_day {
        month = last_day.with_day(1).expect("first");
    }
    let cycle_end = month + chrono::Months::new(1) - chrono::Days::new(1);
    assert!(first_day <= month && cycle_end <= last_day, "{from} … {to}");
    let period = month.format("%Y-%m").to_string();
    let out = ok(dir, &["billing", "run", "--period", &period]);
    assert!(out.starts_with(&format!("period {period}: 2 meters with a tariff, 2 new bills, 0 revised, 0 unchanged, 0 not billed")), "{out}");
    let again = ok(dir, &["billing", "run", "--period", &period]);
    assert!(
        again.contains("0 new bills, 0 revised, 2 unchanged"),
        "{again}"
    );
    let stored = ms.rows(&format!(
        "SELECT total, revision, from_date, to_date, lines FROM bills WHERE meter_id = '{meter}' AND period = '{period}' AND latest"
    ));
    let (status, direct) = ms.admin(
        "GET",
        &format!("/api/v1/meters/{meter}/bill?from={month}&to={cycle_end}"),
        None,
    );
    assert_eq!(status, 200, "{direct}");
    assert_eq!(
        stored[0]["total"], direct["total"],
        "{stored:?} vs {direct}"
    );
    assert_eq!(stored[0]["revision"], 1);
    // A corrected tariff version from that month on: the next run revises both bills and keeps
    // the first revisions.
    let mut corrected: Value = serde_json::from_str(
        &std::fs::read_to_string(urdb("hpxml-sample-flat-min-monthly.json")).expect("tariff"),
    )
    .expect("json");
    corrected["energyratestructure"][0][0]["rate"] = json!(0.2);
    let file = dir.join("corrected.json");
    std::fs::write(&file, corrected.to_string()).expect("write");
    ok(
        dir,
        &[
            "tariffs",
            "import",
            file.to_str().expect("path"),
            "--id",
            "flat",
            "--effective-from",
            &month.to_string(),
        ],
    );
    let revised = ok(dir, &["billing", "run", "--period", &period]);
    assert!(
        revised.contains("0 new bills, 1 revised, 1 unchanged"),
        "{revised}"
    );
    let revisions = ms.rows(&format!(
        "SELECT revision, latest, tariff_version, total FROM bills WHERE meter_id = '{meter}' AND period = '{period}' ORDER BY revision"
    ));
    assert_eq!(revisions.len(), 2, "{revisions:?}");
    assert_eq!(
        (
            revisions[1]["latest"].as_bool(),
            revisions[1]["tariff_version"].as_i64()
        ),
        (Some(true), Some(2)),
        "{revisions:?}"
    );
    assert!(
        revisions[1]["total"].as_f64() > revisions[0]["total"].as_f64(),
        "{revisions:?}"
    );
}
