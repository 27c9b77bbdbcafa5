//! `meterstack simulate` feeding `meterstack up`.

use crate::harness::{Meterstack, bin};

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
            "--backfill",
            "1d",
        ])
        .args([
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
    assert!(lo > 215.0 && hi < 245.0, "voltage near nominal: {lo}..{hi}");
    let intervals = ms.rows(
        "SELECT count(DISTINCT ts) AS n, min(ts) AS first, max(ts) AS last FROM raw_readings",
    );
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
