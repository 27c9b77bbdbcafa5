//! The trusted zone end to end: `meterstack backfill` writes a simulated history to the raw
//! zone, `meterstack etl` derives the trusted zone, and an api process serves it. DuckDB reads
//! the same files and must agree; a hostile-query corpus must be refused or bounded while
//! benign queries keep working.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Meterstack, bin, ok_in};

/// Backfills `meters` × `days` of history into `dir`'s lake and runs the ETL once.
fn trusted_lake(dir: &Path, meters: &str, days: &str) {
    for args in [
        vec![
            "backfill",
            "--meters",
            meters,
            "--days",
            days,
            "--end",
            "2026-11-20T00:00:00Z",
        ],
        vec!["etl", "--json"],
    ] {
        ok_in(dir, &args);
    }
}

fn api(dir: &Path, env: &[(&str, &str)]) -> Meterstack {
    Meterstack::launch(dir, &["run", "--roles", "api"], env)
}

/// DuckDB's answer to `sql` (over views named like ours) as JSON rows.
fn duckdb(lake: &Path, sql: &str) -> Vec<Value> {
    let script = r#"
import duckdb, json, sys
lake, sql = sys.argv[1], sys.argv[2]
for t in ["readings", "readings_hourly", "readings_daily"]:
    duckdb.sql(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/trusted/{t}/*/*.parquet', hive_partitioning = true, hive_types_autocast = false)")
rel = duckdb.sql(sql)
cols = rel.columns
print(json.dumps([dict(zip(cols, r)) for r in rel.fetchall()], default=str))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(lake)
        .arg(sql)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn duckdb_reads_the_trusted_zone_and_agrees_with_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    trusted_lake(dir.path(), "30", "4");
    let ms = api(dir.path(), &[]);
    let checks = [
        "SELECT count(*) AS n, count(DISTINCT meter_id) AS meters, sum(energy_wh) AS wh FROM readings",
        "SELECT date, sum(energy_wh) AS wh, sum(measured_intervals) AS measured FROM readings_daily GROUP BY date ORDER BY date",
        "SELECT meter_id, sum(energy_wh) AS wh FROM readings_daily GROUP BY meter_id ORDER BY wh DESC, meter_id LIMIT 5",
        "SELECT quality, count(*) AS n FROM readings GROUP BY quality ORDER BY quality",
        "SELECT meter_id, max(peak_demand_w) AS peak FROM readings_hourly GROUP BY meter_id ORDER BY meter_id LIMIT 10",
        "SELECT count(*) AS dupes FROM (SELECT meter_id, ts FROM readings GROUP BY meter_id, ts HAVING count(*) > 1) d",
    ];
    for sql in checks {
        let ours = ms.rows(sql);
        let theirs = duckdb(&dir.path().join("data/lake"), sql);
        assert!(!ours.is_empty(), "{sql}");
        assert!(
            same(&Value::Array(ours.clone()), &Value::Array(theirs.clone())),
            "{sql}\nmeterstack: {ours:?}\nduckdb: {theirs:?}"
        );
    }
    // Daily totals agree with the hourly and interval tables.
    let totals = ms.rows(
        "SELECT (SELECT sum(energy_wh) FROM readings) AS i, (SELECT sum(energy_wh) FROM readings_hourly) AS h, (SELECT sum(energy_wh) FROM readings_daily) AS d",
    );
    let t = &totals[0];
    assert!(same(&t["i"], &t["h"]) && same(&t["h"], &t["d"]), "{t}");

    // The same data without SQL, and from the shell.
    let meter = ms.rows("SELECT min(meter_id) AS m FROM readings")[0]["m"]
        .as_str()
        .expect("meter")
        .to_owned();
    let key = ms.admin_key.clone();
    let (status, body) = ms.request(
        "GET",
        &format!("/api/v1/meters/{meter}/readings?from=2026-11-18&to=2026-11-19&resolution=1h"),
        key.as_deref(),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let hours: Vec<Value> = serde_json::from_str(&body).expect("json");
    assert_eq!(hours.len(), 24, "{body}");
    let (status, body) = ms.request(
        "GET",
        &format!("/api/v1/meters/{meter}/readings?from=2026-11-18T00:00:00Z&to=2026-11-18T01:00:00Z&format=csv"),
        key.as_deref(),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.lines().count(),
        5,
        "a header and four intervals: {body}"
    );
    let (status, _) = ms.request(
        "GET",
        &format!("/api/v1/meters/{meter}/readings?resolution=2m"),
        key.as_deref(),
        None,
    );
    assert_eq!(status, 400);
    assert!(ms.terminate().success());

    let out = bin()
        .args([
            "sql",
            "--format",
            "jsonl",
            "--params",
            &json!([meter]).to_string(),
        ])
        .arg("SELECT count(*) AS n FROM readings_daily WHERE meter_id = $1")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .current_dir(dir.path())
        .output()
        .expect("meterstack sql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"n":4}"#);
}

/// Peak resident memory of a process, bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// The memory a hostile query may add beyond its pool: batches in flight outside the pool,
/// Parquet decoding buffers, allocator slack (docs/BENCHMARKS.md, "SQL bounds").
const MEMORY_MARGIN: u64 = 192 * 1024 * 1024;

#[test]
fn hostile_queries_are_refused_or_bounded_while_benign_ones_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    trusted_lake(dir.path(), "40", "3");
    let timeout = Duration::from_secs(3);
    let memory: u64 = 64 * 1024 * 1024;
    let ms = api(
        dir.path(),
        &[
            ("METERSTACK__HTTP__QUERY__TIMEOUT", "3s"),
            (
                "METERSTACK__HTTP__QUERY__MEMORY_LIMIT_BYTES",
                &memory.to_string(),
            ),
            ("METERSTACK__HTTP__QUERY__MAX_ROWS", "200000"),
        ],
    );
    // Warm up, then take the baseline.
    let _ = ms.rows("SELECT count(*) FROM readings");
    let baseline = peak_rss(ms.pid());

    let refused = [
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO readings SELECT * FROM readings",
        "DELETE FROM readings",
        "DROP TABLE readings",
        "COPY readings TO '/tmp/meterstack-stolen.csv'",
        "COPY (SELECT 1) TO '/tmp/meterstack-stolen.parquet' STORED AS PARQUET",
        "SET datafusion.execution.target_partitions = 128",
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/passwd'",
        "SELECT * FROM '/etc/passwd.csv'",
        "CREATE VIEW v AS SELECT 1",
        "SELECT 1; SELECT 2",
    ];
    let bounded = [
        "SELECT count(*) FROM generate_series(1, 10000000000)",
        "SELECT * FROM generate_series(1, 10000000000)",
        "SELECT sum(a.energy_wh * b.energy_wh) FROM readings a CROSS JOIN readings b CROSS JOIN readings c",
        "SELECT a.meter_id, b.ts, count(*) FROM readings a CROSS JOIN readings b GROUP BY a.meter_id, b.ts",
        "SELECT a.ts, b.energy_wh FROM readings a CROSS JOIN readings b ORDER BY b.energy_wh, a.ts",
        "SELECT value, count(*) FROM generate_series(1, 1000000000) GROUP BY value",
        "SELECT value FROM generate_series(1, 1000000000) ORDER BY value DESC",
    ];

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let benign = std::thread::scope(|scope| {
        let stop2 = stop.clone();
        let ms_ref = &ms;
        let benign = scope.spawn(move || {
            let mut ok = 0;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, body) = ms_ref.try_query(&json!({
                    "sql": "SELECT date, sum(energy_wh) AS wh FROM readings_daily WHERE meter_id = $1 GROUP BY date",
                    "params": ["m-0001"]
                }));
                assert_eq!(status, 200, "a benign query failed: {body:?}");
                ok += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            ok
        });
        for sql in refused {
            let (status, body) = ms.try_query(&json!({ "sql": sql }));
            assert_eq!(status, 400, "{sql}: {body:?}");
            let body: Value = serde_json::from_str(&body.expect("complete")).expect("json");
            assert_eq!(body["error"]["code"], "invalid_query", "{sql}: {body}");
        }
        for sql in bounded {
            let started = Instant::now();
            let (status, body) = ms.try_query(&json!({ "sql": sql }));
            let took = started.elapsed();
            assert!(
                took <= timeout + Duration::from_secs(2),
                "{sql} took {took:?}"
            );
            // Refused with a status, or cut off mid-stream; never a complete 200.
            assert!(
                status != 200 || body.is_err(),
                "{sql} was answered in full: {status}"
            );
            if status != 200 {
                let body: Value = serde_json::from_str(&body.expect("complete")).expect("json");
                let code = body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    ["query_timeout", "resources_exhausted", "result_too_large"]
                        .contains(&code.as_str()),
                    "{sql}: {body}"
                );
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        benign.join().expect("benign thread")
    });
    assert!(benign >= 5, "benign queries ran {benign} times");
    // EXPLAIN is allowed, and the process still answers.
    let (status, _) = ms.query("EXPLAIN SELECT count(*) FROM readings");
    assert_eq!(status, 200);
    let peak = peak_rss(ms.pid());
    // The figure docs/BENCHMARKS.md records ("SQL bounds").
    eprintln!(
        "hostile corpus: peak RSS {} MiB = baseline {} MiB + {} MiB (pool {} MiB)",
        peak >> 20,
        baseline >> 20,
        peak.saturating_sub(baseline) >> 20,
        memory >> 20
    );
    assert!(
        peak <= baseline + memory + MEMORY_MARGIN,
        "peak RSS {} MiB over a baseline of {} MiB (limit {} MiB + margin {} MiB)",
        peak >> 20,
        baseline >> 20,
        memory >> 20,
        MEMORY_MARGIN >> 20
    );
    assert!(!Path::new("/tmp/meterstack-stolen.csv").exists());
    assert!(ms.terminate().success());
}

/// `meterstack import readings`: a file with bad rows is refused whole (nothing written), or
/// imported except those rows with `--skip-bad`, each bad row named by line; an interval file
/// (gzip) becomes registers the ETL turns back into the same interval energies.
#[test]
fn history_imports_are_all_or_nothing_unless_bad_rows_are_skipped() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let run = |args: &[&str]| {
        bin()
            .args(args)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .current_dir(dir)
            .output()
            .expect("meterstack runs")
    };
    let mut csv = String::from("meter_id,ts,import_wh,voltage_v\n");
    for k in 0..96 {
        let ts = 1_735_689_600_000i64 + k * 900_000;
        csv.push_str(&format!("imp-1,{ts},{},230.5\n", 1000 + 100 * k));
    }
    csv.push_str("imp-1,not-a-time,5,230\n");
    csv.push_str("imp-2,2025-01-01T00:15:00Z,-4,230\n");
    std::fs::write(dir.join("registers.csv"), &csv).expect("write");

    let out = run(&["import", "readings", "registers.csv"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "bad rows must refuse the file");
    assert!(
        stderr.contains("2 bad rows") && stderr.contains("line 98") && stderr.contains("line 99"),
        "{stderr}"
    );
    assert!(
        !dir.join("data/lake/raw").exists(),
        "nothing may be written"
    );

    let out = run(&[
        "import",
        "readings",
        "registers.csv",
        "--skip-bad",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (
            report["rows"].as_u64(),
            report["readings"].as_u64(),
            report["bad_rows"].as_u64()
        ),
        (Some(98), Some(96), Some(2)),
        "{report}"
    );
    assert_eq!(report["first_bad"][1]["line"], 99);

    // Intervals, gzipped: 96 quarter hours of 25 Wh for one meter.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    writeln!(gz, "meter_id,interval_start,energy_wh").expect("gz");
    for k in 0..96 {
        let t = chrono::DateTime::from_timestamp(1_735_689_600 + k * 900, 0).expect("time");
        writeln!(gz, "imp-3,{},25", t.to_rfc3339()).expect("gz");
    }
    std::fs::write(dir.join("intervals.csv.gz"), gz.finish().expect("gz")).expect("write");
    let out = run(&["import", "readings", "intervals.csv.gz", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (report["form"].as_str(), report["readings"].as_u64()),
        (Some("intervals"), Some(97)),
        "{report}"
    );

    let out = run(&["etl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "sql",
        "SELECT meter_id, count(*) AS n, sum(energy_wh) AS wh FROM readings GROUP BY meter_id ORDER BY meter_id",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(rows[0]["meter_id"], "imp-1");
    assert_eq!(
        (rows[0]["n"].as_u64(), rows[0]["wh"].as_f64()),
        (Some(95), Some(9500.0)),
        "{rows}"
    );
    assert_eq!(rows[1]["meter_id"], "imp-3");
    assert_eq!(
        (rows[1]["n"].as_u64(), rows[1]["wh"].as_f64()),
        (Some(96), Some(2400.0)),
        "{rows}"
    );
}
