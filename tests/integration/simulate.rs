//! `meterstack simulate` feeding `meterstack up`, and `meterstack backfill` writing the lake.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use meterstack_core::{MeterId, Reading};
use meterstack_sim::offline::{Offline, Received};
use meterstack_sim::{FaultConfig, FaultType, FleetConfig, Label, SimConfig, build_fleet};
use serde_json::{Value, json};

use crate::harness::{Meterstack, bin, signal_term};

const COLUMNS: &str = "meter_id, CAST(ts AS BIGINT) AS ts, import_wh, export_wh, power_w, voltage_v, current_a, seq, CAST(received_at AS BIGINT) AS received_at";

/// Rows of `raw_readings` (selected with [`COLUMNS`]) as received readings.
fn received(rows: &[Value]) -> Vec<Received> {
    let at = |v: &Value| DateTime::from_timestamp_micros(v.as_i64().expect("µs")).expect("time");
    rows.iter()
        .map(|r| {
            (
                Reading {
                    meter_id: MeterId::new(r["meter_id"].as_str().expect("id")).expect("valid id"),
                    ts: at(&r["ts"]),
                    import_wh: r["import_wh"].as_f64().expect("import"),
                    export_wh: r["export_wh"].as_f64(),
                    power_w: r["power_w"].as_f64(),
                    voltage_v: r["voltage_v"].as_f64(),
                    current_a: r["current_a"].as_f64(),
                    seq: r["seq"].as_u64(),
                },
                at(&r["received_at"]),
            )
        })
        .collect()
}

/// (meter, timestamp, import register) of each distinct reading.
fn distinct(readings: &[Received]) -> BTreeSet<(String, i64, i64)> {
    readings
        .iter()
        .map(|(r, _)| {
            (
                r.meter_id.to_string(),
                r.ts.timestamp_micros(),
                r.import_wh as i64,
            )
        })
        .collect()
}

fn read_labels(path: &std::path::Path) -> Vec<Label> {
    std::fs::read_to_string(path)
        .expect("labels file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a label"))
        .collect()
}

#[test]
fn simulated_fleet_lands_in_the_lake_with_growing_registers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    let status = bin()
        .args([
            "simulate",
            "--meters",
            "5",
            "--interval",
            "15m",
            "--speed",
            "1000000",
            "--start",
            "1d",
        ])
        .args([
            "--faults",
            "none",
            "--intervals",
            "96",
            "--mqtt",
            &format!("127.0.0.1:{}", ms.mqtt_port),
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .status()
        .expect("simulate runs");
    assert!(status.success(), "every simulated reading is acknowledged");
    assert_eq!(ms.wait_for_count("raw_readings", 480), 480);
    let per_meter = ms.rows(
        "SELECT meter_id, count(*) AS n FROM raw_readings GROUP BY meter_id ORDER BY meter_id",
    );
    let ids: Vec<&str> = per_meter
        .iter()
        .filter_map(|r| r["meter_id"].as_str())
        .collect();
    assert_eq!(ids, ["m-001", "m-002", "m-003", "m-004", "m-005"]);
    assert!(
        per_meter.iter().all(|r| r["n"].as_u64() == Some(96)),
        "{per_meter:?}"
    );
    let decreasing = ms.rows(
        "SELECT count(*) AS n FROM (SELECT import_wh - lag(import_wh) OVER (PARTITION BY meter_id ORDER BY ts) AS d \
         FROM raw_readings) WHERE d < 0",
    );
    assert_eq!(decreasing[0]["n"].as_u64(), Some(0), "registers only grow");
    let voltage = ms.rows("SELECT min(voltage_v) AS lo, max(voltage_v) AS hi FROM raw_readings");
    let (lo, hi) = (
        voltage[0]["lo"].as_f64().expect("lo"),
        voltage[0]["hi"].as_f64().expect("hi"),
    );
    assert!(
        lo > 207.0 && hi < 253.0,
        "voltage within ±10 % of nominal: {lo}..{hi}"
    );
    let intervals = ms.rows("SELECT count(DISTINCT ts) AS n FROM raw_readings");
    assert_eq!(
        intervals[0]["n"].as_u64(),
        Some(96),
        "readings on the 15-minute grid"
    );
    assert_eq!(
        ms.rows("SELECT count(*) AS n FROM rejected_readings")[0]["n"].as_u64(),
        Some(0)
    );
}

/// The fleet of the labelled run: 30 meters on 3 feeders, 3 days from 1 June 2026, faults
/// at 8× their default rates and once-in-a-life faults likely.
fn labelled_config() -> SimConfig {
    let mut faults = FaultConfig {
        scale: 8.0,
        ..FaultConfig::default()
    };
    for kind in [
        FaultType::RegisterRollover,
        FaultType::MeterExchange,
        FaultType::RegisterReset,
    ] {
        faults.rates.insert(kind, 0.02);
    }
    SimConfig {
        fleet: FleetConfig {
            meters: 30,
            meters_per_feeder: 10,
            ..FleetConfig::default()
        },
        start: Some(
            DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
                .expect("time")
                .into(),
        ),
        intervals: Some(288),
        seed: 7,
        faults,
        ..SimConfig::default()
    }
}

#[test]
fn labels_match_what_the_simulator_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    let labels_path = dir.path().join("labels.jsonl");
    let status = bin()
        .args([
            "simulate",
            "--meters",
            "30",
            "--meters-per-feeder",
            "10",
            "--interval",
            "15m",
        ])
        .args([
            "--start",
            "2026-06-01T00:00:00Z",
            "--intervals",
            "288",
            "--seed",
            "7",
            "--speed",
            "1000000000",
        ])
        .args([
            "--fault-scale",
            "8",
            "--fault-rate",
            "register_rollover=0.02",
            "--fault-rate",
            "meter_exchange=0.02",
        ])
        .args(["--fault-rate", "register_reset=0.02", "--labels"])
        .arg(&labels_path)
        .args(["--mqtt", &format!("127.0.0.1:{}", ms.mqtt_port)])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .status()
        .expect("simulate runs");
    assert!(status.success(), "every simulated reading is acknowledged");

    // The same run without a network: what should have arrived.
    let config = labelled_config();
    let shape = config.shape().expect("shape");
    let (expected, mut expected_labels) = Offline::run(
        build_fleet(&config.fleet, &shape).expect("fleet"),
        &shape,
        config.fleet.site().expect("site"),
        288,
    );
    let want = distinct(&expected);

    let deadline = Instant::now() + Duration::from_secs(30);
    let lake = loop {
        let rows = received(&ms.rows(&format!("SELECT {COLUMNS} FROM raw_readings")));
        if distinct(&rows).len() >= want.len() || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        distinct(&lake),
        want,
        "the lake holds exactly the readings the meters took"
    );

    let labels = read_labels(&labels_path);
    let key = |l: &Label| (l.start, l.meter.clone(), l.kind);
    let mut sorted = labels.clone();
    sorted.sort_by_key(key);
    expected_labels.sort_by_key(key);
    assert_eq!(
        sorted, expected_labels,
        "the labels do not depend on the network"
    );
    let kinds: BTreeSet<FaultType> = labels.iter().map(|l| l.kind).collect();
    for kind in [
        FaultType::Gap,
        FaultType::Duplicate,
        FaultType::OutOfOrder,
        FaultType::ConnectionDrop,
        FaultType::FeederOutage,
    ] {
        assert!(kinds.contains(&kind), "no {kind:?} in {kinds:?}");
    }
    let last = shape.start + shape.dt * 287;
    let errors = meterstack_sim::verify::check(&labels, &lake, shape.dt, shape.start, last);
    assert!(
        errors.is_empty(),
        "{} of {} labels contradicted by the lake:\n{}",
        errors.len(),
        labels.len(),
        errors.join("\n")
    );
    // A labelled gap really has no readings, as seen by SQL too.
    let gap = labels
        .iter()
        .find(|l| l.kind == FaultType::Gap)
        .expect("a gap");
    let n = ms.count(&format!(
        "raw_readings WHERE meter_id = '{}' AND ts >= to_timestamp_micros({}) AND ts < to_timestamp_micros({})",
        gap.meter.as_deref().expect("meter"),
        gap.start.timestamp_micros(),
        gap.end.timestamp_micros()
    ));
    assert_eq!(n, 0, "{gap:?}");
    assert_eq!(
        ms.rows("SELECT count(*) AS n FROM rejected_readings")[0]["n"].as_u64(),
        Some(0)
    );
}

#[test]
fn a_simulated_meter_answers_resend_commands_from_its_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    // Two hours of history at 15 minutes, then real time: the meter stays connected.
    let mut sim = bin()
        .args([
            "simulate",
            "--meters",
            "1",
            "--interval",
            "15m",
            "--speed",
            "1000000",
            "--start",
            "2h",
        ])
        .args([
            "--faults",
            "none",
            "--mqtt",
            &format!("127.0.0.1:{}", ms.mqtt_port),
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("simulate starts");
    let first = ms.wait_for_count("raw_readings", 8);
    assert!(first >= 8, "{first} readings");
    let from = Utc::now() - TimeDelta::hours(3);
    let (status, body) = ms.admin(
        "POST",
        "/api/v1/meters/m-001/commands",
        Some(
            &json!({"command": "resend", "from": from.to_rfc3339(), "to": Utc::now().to_rfc3339()}),
        ),
    );
    assert_eq!(status, 202, "{body}");
    let after = ms.wait_for_count("raw_readings", first * 2);
    assert_eq!(after, first * 2, "every buffered reading came again");
    assert_eq!(
        ms.count("(SELECT DISTINCT meter_id, ts FROM raw_readings)"),
        first
    );
    signal_term(sim.id());
    let _ = sim.wait();
}

#[test]
fn backfill_writes_history_that_duckdb_and_sql_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let labels = dir.path().join("labels.jsonl");
    let fleet_csv = dir.path().join("fleet.csv");
    let out = bin()
        .args([
            "backfill",
            "--meters",
            "40",
            "--days",
            "7",
            "--interval",
            "15m",
            "--end",
            "2026-03-08T00:00:00Z",
        ])
        .args(["--seed", "3", "--fault-scale", "4", "--data-dir"])
        .arg(&data)
        .arg("--labels")
        .arg(&labels)
        .arg("--fleet-csv")
        .arg(&fleet_csv)
        .output()
        .expect("backfill runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let readings = report["readings"].as_u64().expect("readings");
    assert!(readings > 40 * 7 * 96 * 9 / 10, "{report}");

    // An analyst's DuckDB reads the raw zone as it is.
    let script = format!(
        "import duckdb, json; r = duckdb.sql(\"SELECT count(*), count(DISTINCT meter_id), CAST(min(ts) AS VARCHAR), CAST(max(ts) AS VARCHAR) FROM read_parquet('{}/lake/raw/readings/*/*/*.parquet', hive_partitioning=true)\").fetchall()[0]; print(json.dumps([r[0], r[1], str(r[2]), str(r[3])]))",
        data.display()
    );
    let duck = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        duck.status.success(),
        "{}",
        String::from_utf8_lossy(&duck.stderr)
    );
    let duck: Value = serde_json::from_slice(&duck.stdout).expect("JSON");
    assert_eq!(duck[0].as_u64(), Some(readings));
    assert_eq!(duck[1].as_u64(), Some(40));

    // meterstack's SQL sees the same, and the labels hold.
    let ms = Meterstack::launch(dir.path(), &["up"], &[]);
    assert_eq!(ms.count("raw_readings"), readings);
    let lake = received(&ms.rows(&format!("SELECT {COLUMNS} FROM raw_readings")));
    let labels = read_labels(&labels);
    assert_eq!(
        labels.len() as u64,
        report["labels"].as_u64().expect("labels")
    );
    let start = DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .expect("t")
        .to_utc();
    let errors = meterstack_sim::verify::check(
        &labels,
        &lake,
        TimeDelta::minutes(15),
        start,
        start + TimeDelta::minutes(15 * (7 * 96 - 1)),
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // The registry CSV imports as is.
    let import = bin()
        .args(["meters", "import"])
        .arg(&fleet_csv)
        .arg("--data-dir")
        .arg(dir.path().join("registry"))
        .output()
        .expect("import runs");
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
}
