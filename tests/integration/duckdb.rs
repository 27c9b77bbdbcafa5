//! DuckDB, as an analyst would use it, reads the raw zone directly.

use std::process::Command;

use chrono::{SecondsFormat, TimeDelta, Utc};

use crate::harness::{Meterstack, mosquitto_pub_lines};

#[test]
fn duckdb_reads_the_raw_zone_as_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    let start = Utc::now() - TimeDelta::days(3);
    let lines: Vec<String> = (0..48)
        .map(|i| {
            let ts = (start + TimeDelta::hours(i)).to_rfc3339_opts(SecondsFormat::Secs, true);
            format!(
                r#"{{"ts":"{ts}","import_wh":{},"voltage_v":230.5,"seq":{i}}}"#,
                1000 + i * 250
            )
        })
        .collect();
    assert!(mosquitto_pub_lines(
        ms.mqtt_port,
        "meters/d-1/readings",
        "d-1",
        &lines
    ));
    assert_eq!(ms.wait_for_count("raw_readings", 48), 48);
    let api = ms.rows(
        "SELECT count(*) AS n, sum(import_wh) AS s, count(DISTINCT date) AS days FROM raw_readings",
    );
    assert!(ms.terminate().success());

    let script = r#"
import duckdb, json, sys
rows = duckdb.sql(f"""
    SELECT count(*), sum(import_wh), count(DISTINCT date), min(meter_id), max(seq),
           typeof(any_value(ts))
    FROM read_parquet('{sys.argv[1]}/raw/readings/*/*/*.parquet', hive_partitioning = true)
""").fetchall()
print(json.dumps([list(map(str, r)) for r in rows]))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir.path().join("data/lake"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).expect("json");
    let expected_sum: i64 = (0..48).map(|i| 1000 + i * 250).sum();
    assert_eq!(api[0]["n"].as_u64(), Some(48));
    assert_eq!(api[0]["s"].as_f64(), Some(expected_sum as f64));
    let days = api[0]["days"].as_u64().expect("days").to_string();
    assert_eq!(
        got[0],
        [
            "48".to_owned(),
            format!("{expected_sum}.0"),
            days,
            "d-1".to_owned(),
            "47".to_owned(),
            "TIMESTAMP WITH TIME ZONE".to_owned()
        ]
    );
}
