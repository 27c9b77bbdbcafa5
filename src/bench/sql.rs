//! The SQL sets of `meterstack bench`, each timed through `POST /api/v1/query` and through
//! DuckDB (PyPI `duckdb`) reading the same Parquet files, with the same SQL text; a query
//! whose row count differs between the two engines fails the benchmark.
//!
//! - The raw set: a backfilled raw zone, queried as it lands.
//! - The meter-analytics set: a backfilled history run through the ETL (timed), then the
//!   questions analysts ask of the trusted zone, joined with the `meters` registry.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta};
use meterstack_core::reading::MeterId;
use meterstack_core::store::meters::MeterFields;
use meterstack_lake::etl::EtlConfig;
use meterstack_pipeline::Registry;
use meterstack_sim::{FaultConfig, FleetConfig, SimConfig, build_fleet};
use serde_json::{Value, json};

use super::server::Server;
use super::suite::{median, tree_bytes};
use crate::config::Config;

/// The raw set: (name, SQL) over `raw_readings`.
pub(crate) const RAW_QUERIES: &[(&str, &str)] = &[
    ("count", "SELECT count(*) AS n FROM raw_readings"),
    (
        "daily_energy_per_meter",
        "SELECT meter_id, date_trunc('day', ts) AS day, max(import_wh) - min(import_wh) AS wh FROM raw_readings GROUP BY meter_id, date_trunc('day', ts)",
    ),
    (
        "top_peak_power",
        "SELECT meter_id, max(power_w) AS peak FROM raw_readings GROUP BY meter_id ORDER BY peak DESC LIMIT 10",
    ),
    (
        "one_meter_week",
        "SELECT ts, import_wh, power_w, voltage_v FROM raw_readings WHERE meter_id = 'q-0042' AND ts >= TIMESTAMP '2026-01-08T00:00:00Z' AND ts < TIMESTAMP '2026-01-15T00:00:00Z' ORDER BY ts",
    ),
    (
        "fleet_hourly_load",
        "SELECT date_trunc('hour', ts) AS hour, sum(power_w) AS w FROM raw_readings GROUP BY date_trunc('hour', ts) ORDER BY hour",
    ),
    (
        "voltage_excursions",
        "SELECT meter_id, count(*) AS n FROM raw_readings WHERE voltage_v < 207 OR voltage_v > 253 GROUP BY meter_id ORDER BY n DESC",
    ),
    (
        "late_arrivals",
        "SELECT count(*) AS n FROM raw_readings WHERE received_at > ts + INTERVAL '1 hour'",
    ),
];

/// The meter-analytics set: (name, SQL) over the trusted zone and `meters`. The history
/// starts on 2026-01-01; `{meter}` is the fleet's 42nd meter.
pub(crate) const ANALYTICS_QUERIES: &[(&str, &str)] = &[
    (
        "daily_totals_per_meter_week",
        "SELECT meter_id, date, sum(energy_wh) AS wh, sum(CASE WHEN quality = 'measured' THEN 0 ELSE 1 END) AS not_measured FROM readings WHERE date >= '2026-01-08' AND date < '2026-01-15' GROUP BY meter_id, date ORDER BY meter_id, date",
    ),
    (
        "top_consumers",
        "SELECT meter_id, sum(energy_wh) / 1000 AS kwh FROM readings_daily GROUP BY meter_id ORDER BY kwh DESC, meter_id LIMIT 20",
    ),
    (
        "peak_hour_per_feeder",
        "SELECT feeder, ts AS peak_hour, wh FROM (SELECT m.feeder, h.ts, sum(h.energy_wh) AS wh, row_number() OVER (PARTITION BY m.feeder ORDER BY sum(h.energy_wh) DESC, h.ts) AS rn FROM readings_hourly h JOIN meters m ON h.meter_id = m.meter_id GROUP BY m.feeder, h.ts) t WHERE rn = 1 ORDER BY feeder",
    ),
    (
        "load_duration_curve",
        "SELECT row_number() OVER (ORDER BY sum(energy_wh) DESC) AS rank, ts, sum(energy_wh) AS wh FROM readings_hourly GROUP BY ts ORDER BY rank",
    ),
    (
        "month_over_month",
        "SELECT meter_id, month, wh, wh - lag(wh) OVER (PARTITION BY meter_id ORDER BY month) AS change_wh FROM (SELECT meter_id, date_trunc('month', ts) AS month, sum(energy_wh) AS wh FROM readings_daily GROUP BY meter_id, date_trunc('month', ts)) t ORDER BY meter_id, month",
    ),
    (
        "missing_data_report",
        "SELECT meter_id, sum(expected_intervals) - sum(measured_intervals) AS missing, sum(estimated_intervals) AS estimated, 1.0 * sum(measured_intervals) / sum(expected_intervals) AS completeness FROM readings_daily GROUP BY meter_id HAVING sum(measured_intervals) < sum(expected_intervals) ORDER BY completeness, meter_id",
    ),
    (
        "one_meter_month_intervals",
        "SELECT ts, energy_wh, quality FROM readings WHERE meter_id = '{meter}' AND date >= '2026-02-01' AND date < '2026-03-01' ORDER BY ts",
    ),
    (
        "voltage_excursions_by_feeder",
        "SELECT m.feeder, count(*) AS hours FROM readings_hourly h JOIN meters m ON h.meter_id = m.meter_id WHERE h.min_voltage_v < 207 OR h.max_voltage_v > 253 GROUP BY m.feeder ORDER BY hours DESC, m.feeder",
    ),
    (
        "weekday_hour_profile",
        "SELECT date_part('dow', ts) AS dow, date_part('hour', ts) AS hour, avg(energy_wh) AS wh FROM readings GROUP BY date_part('dow', ts), date_part('hour', ts) ORDER BY dow, hour",
    ),
    (
        "daily_estimated_share",
        "SELECT date, avg(CASE WHEN quality = 'measured' THEN 0.0 ELSE 1.0 END) AS estimated_share FROM readings GROUP BY date ORDER BY date",
    ),
];

/// Times `queries` on `server` (one warm-up, then the median of `runs`) and in DuckDB over
/// `views`; one JSON object per query with both medians, their ratio and the rows.
async fn compare(
    server: &Server,
    dir: &Path,
    views: Value,
    queries: &[(&str, &str)],
    runs: usize,
) -> anyhow::Result<Vec<Value>> {
    let mut ours = Vec::new();
    for (name, sql) in queries {
        let (rows, _) = server.query(sql).await?;
        let rows = rows.as_array().map_or(0, Vec::len);
        let mut times = Vec::new();
        for _ in 0..runs {
            times.push(server.query(sql).await?.1.as_secs_f64());
        }
        ours.push((*name, median(times), rows));
    }
    let script = dir.join("bench_duckdb.py");
    std::fs::write(&script, include_str!("../../scripts/bench_duckdb.py"))?;
    let spec = json!({
        "views": views,
        "queries": queries.iter().map(|(n, q)| json!({"name": n, "sql": q})).collect::<Vec<_>>(),
    });
    let output = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(runs.to_string())
        .arg(serde_json::to_string(&spec)?)
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run python3 ({e})"))?;
    anyhow::ensure!(
        output.status.success(),
        "DuckDB failed (pip install duckdb; scripts/bench does): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let duck: Value = serde_json::from_slice(&output.stdout)?;
    ours.into_iter()
        .map(|(name, s, rows)| {
            let d = duck[name]["seconds"].as_f64().unwrap_or(f64::NAN);
            let duck_rows = duck[name]["rows"].as_u64().unwrap_or(u64::MAX);
            anyhow::ensure!(
                duck_rows == rows as u64,
                "{name}: meterstack returned {rows} rows, DuckDB {duck_rows}"
            );
            Ok(json!({"query": name, "meterstack_s": s, "duckdb_s": d, "ratio": s / d, "rows": rows}))
        })
        .collect()
}

/// `meters` simulated meters over `days` days from 2026-01-01, every 15 minutes.
fn history(meters: usize, days: u32, prefix: &str) -> anyhow::Result<SimConfig> {
    let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?.to_utc();
    Ok(SimConfig {
        fleet: FleetConfig {
            meters,
            id_prefix: prefix.into(),
            ..FleetConfig::default()
        },
        interval: Duration::from_secs(900),
        start: Some(start),
        intervals: Some(u64::from(days) * 96),
        faults: FaultConfig::default(),
        ..SimConfig::default()
    })
}

fn parquet(dir: &Path, table: &str) -> String {
    format!(
        "read_parquet('{}/*/*.parquet', hive_partitioning = true)",
        dir.join(table).display()
    )
}

/// The raw set over `meters` × `days` of backfilled raw history.
pub(crate) async fn raw_set(meters: usize, days: u32, runs: usize) -> anyhow::Result<Vec<Value>> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let store = meterstack_lake::store::LakeConfig::default().build(&data)?;
    crate::backfill::write(&history(meters, days, "q-")?, store, 2000).await?;
    let server = Server::start(&data, &[]).await?;
    let raw = data.join("lake/raw/readings");
    let views = json!({
        "raw_readings": format!("read_parquet('{}/*/*/*.parquet', hive_partitioning = true)", raw.display()),
    });
    let result = compare(&server, dir.path(), views, RAW_QUERIES, runs).await;
    server.stop().await;
    result
}

/// The meter-analytics set over `meters` × `days`: registry, backfill, ETL, then the queries.
pub(crate) async fn analytics_set(meters: usize, days: u32, runs: usize) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let sim = history(meters, days, "a-")?;
    let config = Config {
        data_dir: data.clone(),
        ..Config::default()
    };

    // The registry, as `meterstack meters import` fills it; DuckDB reads the same as CSV.
    let specs = build_fleet(&sim.fleet, &sim.shape()?).map_err(|e| anyhow::anyhow!(e))?;
    let sql = config.open_store().await?;
    let mut rows = Vec::new();
    let mut csv = String::from("meter_id,feeder\n");
    for s in &specs {
        let fields = MeterFields::from_cells([("feeder", s.feeder.as_str())])?;
        rows.push((MeterId::new(s.id.as_str())?, fields));
        csv.push_str(&format!("{},{}\n", s.id, s.feeder));
    }
    sql.upsert_meters(&rows).await?;
    let meters_csv = dir.path().join("meters.csv");
    std::fs::write(&meters_csv, csv)?;

    let lake = config.lake.store.build(&data)?;
    let backfill = crate::backfill::write(&sim, lake.clone(), 2000).await?;

    // The ETL as `meterstack etl` runs it once the history has landed; no retention or
    // compaction (the history is older than the raw zone's 30 days).
    let mut etl = EtlConfig::default();
    etl.retention.raw_days = 0;
    etl.compact_after = Duration::from_secs(100 * 365 * 86_400);
    let registry = Arc::new(Registry::load(&sql).await?);
    let now = sim.shape()?.start + TimeDelta::days(i64::from(days) + 1);
    let started = Instant::now();
    let report = etl
        .build(&config.pipeline, lake)
        .run_once(registry, now, &|_| {})
        .await?;
    let etl_s = started.elapsed().as_secs_f64();
    let trusted = data.join("lake/trusted");
    let intervals = report.rows_written[0];

    let server = Server::start(&data, &[]).await?;
    let views = json!({
        "readings": parquet(&trusted, "readings"),
        "readings_hourly": parquet(&trusted, "readings_hourly"),
        "readings_daily": parquet(&trusted, "readings_daily"),
        "meters": format!("read_csv('{}')", meters_csv.display()),
    });
    let meter = specs
        .get(41)
        .or(specs.last())
        .map(|s| s.id.to_string())
        .unwrap_or_default();
    let texts: Vec<(&str, String)> = ANALYTICS_QUERIES
        .iter()
        .map(|(n, q)| (*n, q.replace("{meter}", &meter)))
        .collect();
    let texts: Vec<(&str, &str)> = texts.iter().map(|(n, q)| (*n, q.as_str())).collect();
    let queries = compare(&server, dir.path(), views, &texts, runs).await;
    server.stop().await;
    Ok(json!({
        "meters": meters,
        "days": days,
        "raw_readings": backfill.readings,
        "trusted_intervals": intervals,
        "etl_s": etl_s,
        "etl_raw_readings_per_s": backfill.readings as f64 / etl_s,
        "etl_report": report,
        "trusted_bytes_per_interval": tree_bytes(&trusted.join("readings")) as f64 / intervals.max(1) as f64,
        "queries": queries?,
    }))
}
