//! `meterstack bench --quick`: the benchmark suite's smoke run, so it cannot rot. Its figures
//! (a debug build, seconds of load) mean nothing; that every measurement runs does.

use serde_json::Value;

use crate::harness::bin;

#[test]
fn the_benchmark_suite_runs_end_to_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bench.json");
    let run = bin()
        .args(["bench", "--quick", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .env("RUST_LOG", "error")
        .output()
        .expect("bench runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for line in [
        "ingest readings/s",
        "raw-zone freshness",
        "publish → WebSocket p50/p99",
        "live clients vs none",
        "sql geometric mean",
    ] {
        assert!(stdout.contains(line), "no {line:?} in the table:\n{stdout}");
    }
    let report: Value =
        serde_json::from_slice(&std::fs::read(&out).expect("results file")).expect("JSON");
    let ingest = &report["ingest"][0];
    assert!(
        ingest["end_to_end_per_s"].as_f64().expect("e2e") > 0.0,
        "{report}"
    );
    assert!(
        ingest["mosquitto_per_s"].as_f64().expect("mosquitto") > 0.0,
        "{report}"
    );
    assert!(
        ingest["runs"][0]["bytes_per_reading"]
            .as_f64()
            .expect("bytes")
            > 0.0
    );
    let queries = report["sql"]["queries"].as_array().expect("queries");
    assert_eq!(queries.len(), 7);
    assert!(
        queries
            .iter()
            .all(|q| q["ratio"].as_f64().is_some_and(f64::is_finite)),
        "{report}"
    );
    assert!(report["freshness_s"][0].as_f64().expect("freshness") > 0.0);
    let live = &report["live"][0];
    assert!(
        live["received"].as_u64() == live["probes"].as_u64() && live["probes"].as_u64() > Some(0),
        "every probe reading reached its WebSocket: {live}"
    );
    assert!(live["ingest_with_clients"].as_f64().expect("ingest") > 0.0);
}
