//! `meterstack bench`: the benchmark suite, against freshly started systems on loopback, side
//! by side with Mosquitto (broker alone) and DuckDB (the same Parquet files).
//!
//! - Ingest: the simulator's meters (one MQTT connection each, QoS 1, one reading per
//!   message) publish as fast as acknowledgements allow for `--seconds`; throughput is the
//!   acknowledged readings over the time until all of them are visible to SQL in the raw
//!   zone. The same load against `mosquitto` (no pipeline) gives the reference rate.
//! - Freshness: one reading published into an idle system, timed until SQL sees it.
//! - Parquet bytes per reading and server RSS per connection, from the ingest runs.
//! - SQL: a query set over a backfilled raw zone, through `POST /api/v1/query` and through
//!   DuckDB (PyPI `duckdb`) reading the same files; medians, ratios, geometric mean.
//!
//! Every figure is the median of `--runs` runs, each on a fresh system.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use meterstack_sim::{FaultConfig, FleetConfig, SimConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::server::{Server, raise_nofile, rss_bytes};

/// Flags of the suite.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SuiteArgs {
    /// A smoke run of every measurement in a few seconds (what CI runs)
    #[arg(long)]
    quick: bool,
    /// Meter connections of the ingest runs
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    connections: Vec<usize>,
    /// Seconds of sustained load per ingest run
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Runs of each measurement (fresh system each); figures are medians
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Meters and days of history backfilled for the SQL set
    #[arg(long, default_value_t = 1000)]
    sql_meters: usize,
    /// Days of history for the SQL set
    #[arg(long, default_value_t = 30)]
    sql_days: u32,
    /// Meters of the meter-analytics set (the default with --analytics-days gives 30M
    /// intervals)
    #[arg(long, default_value_t = 3500)]
    analytics_meters: usize,
    /// Days of history of the meter-analytics set
    #[arg(long, default_value_t = 90)]
    analytics_days: u32,
    /// Where to write the results as JSON
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `p` quantile (0–1) of `sorted`, nearest rank.
pub(super) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One ingest run's figures.
#[derive(Debug, Clone, serde::Serialize)]
struct Ingest {
    acked: u64,
    /// Acknowledged readings that never reached the lake.
    lost: u64,
    publish_per_s: f64,
    end_to_end_per_s: f64,
    lake_lag_s: f64,
    bytes_per_reading: f64,
    rss_per_connection_kb: f64,
}

/// Load from `meters` simulated meters on `mqtt` for `seconds`, at `speed` simulated
/// seconds per second (`f64::INFINITY`: as fast as they can); returns (acked readings,
/// seconds from start to the last acknowledgement).
pub(super) async fn load(
    mqtt: &str,
    meters: usize,
    seconds: u64,
    prefix: &str,
    speed: f64,
) -> anyhow::Result<(u64, f64)> {
    let speed = speed.min(1e12);
    // Far enough back that the meters never catch up with the clock.
    let behind = (speed * seconds as f64).min(5.0 * 365.0 * 86_400.0) as i64 + 86_400;
    let sim = SimConfig {
        fleet: FleetConfig {
            meters,
            id_prefix: prefix.into(),
            ..FleetConfig::default()
        },
        speed,
        mqtt: mqtt.into(),
        start: Some(Utc::now() - TimeDelta::seconds(behind)),
        faults: FaultConfig::none(),
        ..SimConfig::default()
    };
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = tokio::spawn(meterstack_sim::run(sim, stop.clone()));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.cancel();
    let stats = run.await??;
    if stats.unacked > 0 {
        tracing::warn!(
            unacked = stats.unacked,
            "readings were still unacknowledged when the load stopped"
        );
    }
    Ok((stats.acked, started.elapsed().as_secs_f64()))
}

/// Bytes of the Parquet files under `dir`.
pub(super) fn tree_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

async fn ingest_run(meters: usize, seconds: u64) -> anyhow::Result<Ingest> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(
        &dir.path().join("data"),
        &[
            (
                "METERSTACK__MQTT__MAX_CONNECTIONS",
                (meters + 100).to_string(),
            ),
            // Real meters publish every few minutes; the per-meter limit would throttle a
            // fleet that publishes as fast as it can.
            ("METERSTACK__MQTT__LIMITS__PUBLISH_RATE", "1000000".into()),
            ("METERSTACK__MQTT__LIMITS__PUBLISH_BURST", "1000000".into()),
        ],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss0 = server.rss()?;
    let started = Instant::now();
    let pid = server.pid;
    let peak = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            match rss_bytes(pid) {
                Ok(r) => peak = peak.max(r),
                Err(_) => return peak,
            }
            if started.elapsed() > Duration::from_secs(seconds) {
                return peak;
            }
        }
    });
    let (acked, publish_s) = load(&server.mqtt, meters, seconds, "b-", f64::INFINITY).await?;
    // Until every acknowledged reading is visible, or the count has not moved for 10 s (the
    // sink flushes every 5 s): readings the broker acknowledged but the bridge could not move
    // to the bus before rumqttd's log overwrote them are reported as lost, not hidden.
    let (mut seen, mut moved) = (0, Instant::now());
    let mut last_change = started.elapsed();
    while seen < acked && moved.elapsed() < Duration::from_secs(10) {
        let now = server.count("").await?;
        if now != seen {
            seen = now;
            moved = Instant::now();
            last_change = started.elapsed();
        }
        if seen < acked {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let lost = acked.saturating_sub(seen);
    let e2e_s = last_change.as_secs_f64();
    let bytes = tree_bytes(&server.data_dir.join("lake/raw/readings"));
    let peak = peak.await.unwrap_or(0);
    server.stop().await;
    Ok(Ingest {
        acked,
        publish_per_s: (acked as f64 / publish_s).round(),
        end_to_end_per_s: (seen.min(acked) as f64 / e2e_s).round(),
        lost,
        lake_lag_s: e2e_s - publish_s,
        bytes_per_reading: bytes as f64 / seen.max(1) as f64,
        rss_per_connection_kb: peak.saturating_sub(rss0) as f64 / meters as f64 / 1024.0,
    })
}

/// The same load against Mosquitto alone; readings acknowledged per second.
async fn mosquitto_run(meters: usize, seconds: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nmax_queued_messages 100000\nlog_type error\n"
        ),
    )?;
    // Debian installs the broker in /usr/sbin, which a user's PATH may lack.
    let program = if Path::new("/usr/sbin/mosquitto").exists() {
        "/usr/sbin/mosquitto"
    } else {
        "mosquitto"
    };
    let mut child = tokio::process::Command::new(program)
        .arg("-c")
        .arg(&conf)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot start mosquitto ({e}); install Debian's mosquitto (scripts/bench does)"
            )
        })?;
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "mosquitto did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = load(&addr, meters, seconds, "b-", f64::INFINITY).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let (acked, s) = result?;
    Ok((acked as f64 / s).round())
}

/// Seconds from publishing one reading into an idle system to SQL seeing it.
async fn freshness(samples: usize) -> anyhow::Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    let server = Server::start(&dir.path().join("data"), &[]).await?;
    let mut out = Vec::new();
    for i in 0..samples {
        let meter = format!("fresh-{i}");
        let payload = format!(r#"{{"ts":"{}","import_wh":{i}}}"#, Utc::now().to_rfc3339());
        let started = super::webhooks::publish_once(&server.mqtt, &meter, &payload).await?;
        loop {
            if server.count(&format!("WHERE meter_id = '{meter}'")).await? > 0 {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the reading never became visible"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        out.push(started.elapsed().as_secs_f64());
    }
    server.stop().await;
    Ok(out)
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(mut args: SuiteArgs) -> anyhow::Result<()> {
    if args.quick {
        args.connections = vec![50];
        args.seconds = 3;
        args.runs = 1;
        args.sql_meters = 50;
        args.sql_days = 2;
        args.analytics_meters = 40;
        args.analytics_days = 3;
    }
    let started = Instant::now();
    let mut report = json!({
        "commit": std::env::var("METERSTACK_COMMIT").unwrap_or_else(|_| "unknown".into()),
        "date": Utc::now().to_rfc3339(),
        "quick": args.quick,
        "runs": args.runs,
        "seconds": args.seconds,
    });
    let mut table = vec![format!(
        "{:<46} {:>14} {:>14} {:>8}",
        "measure", "meterstack", "reference", "ratio"
    )];
    let (limit, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let mut ingest = Vec::new();
    for &wanted in &args.connections {
        // Server: three descriptors per meter; this process: one, for the simulator.
        let limit = raise_nofile(wanted as u64 * 3 + 2048).unwrap_or(limit);
        let meters = wanted.min(((limit.saturating_sub(2048)) / 3) as usize);
        let mut runs = Vec::new();
        let mut reference = Vec::new();
        for _ in 0..args.runs {
            runs.push(ingest_run(meters, args.seconds).await?);
            reference.push(mosquitto_run(meters, args.seconds).await?);
        }
        let m = |f: fn(&Ingest) -> f64| median(runs.iter().map(f).collect());
        let e2e = m(|r| r.end_to_end_per_s);
        let mosq = median(reference.clone());
        let capped = if meters < wanted {
            format!(" (of {wanted}: open-file limit {limit})")
        } else {
            String::new()
        };
        table.push(format!(
            "{:<46} {:>14.0} {:>14.0} {:>7.2}×",
            format!("ingest readings/s, {meters} conns{capped}"),
            e2e,
            mosq,
            e2e / mosq
        ));
        table.push(format!(
            "{:<46} {:>14.0}",
            "  publish (acknowledged) readings/s",
            m(|r| r.publish_per_s)
        ));
        table.push(format!(
            "{:<46} {:>14.0}",
            "  acknowledged, never in the lake (overwritten)",
            m(|r| r.lost as f64)
        ));
        table.push(format!(
            "{:<46} {:>14.1}",
            "  raw Parquet bytes per reading",
            m(|r| r.bytes_per_reading)
        ));
        table.push(format!(
            "{:<46} {:>14.1}",
            "  server RSS per connection, KB",
            m(|r| r.rss_per_connection_kb)
        ));
        ingest.push(json!({
            "connections_wanted": wanted, "connections": meters,
            "end_to_end_per_s": e2e, "mosquitto_per_s": mosq, "ratio": e2e / mosq,
            "runs": runs, "mosquitto_runs": reference,
        }));
    }
    report["ingest"] = json!(ingest);

    let fresh = freshness(if args.quick { 1 } else { 5 * args.runs }).await?;
    table.push(format!(
        "{:<46} {:>14.3}",
        "raw-zone freshness, publish → SQL, median s",
        median(fresh.clone())
    ));
    report["freshness_s"] = json!(fresh);
    let (rate, meters, secs, clients, per_s) = if args.quick {
        (1000.0, 100, 3, 10, 5)
    } else {
        (10_000.0, 1000, 30, 100, 20)
    };
    let mut live = Vec::new();
    for _ in 0..args.runs {
        live.push(super::live::run(rate, meters, secs, clients, per_s).await?);
    }
    let lm = |f: fn(&super::live::LiveFigures) -> f64| median(live.iter().map(f).collect());
    table.push(format!(
        "{:<46} {:>14}",
        format!("publish → WebSocket p50/p99 ms, {rate:.0} readings/s"),
        format!("{:.1}/{:.1}", lm(|l| l.p50_ms), lm(|l| l.p99_ms))
    ));
    let (with, without) = (lm(|l| l.ingest_with_clients), lm(|l| l.ingest_no_clients));
    table.push(format!(
        "{:<46} {:>14.0} {:>14.0} {:>7.2}×",
        format!("  ingest readings/s, {clients} live clients vs none"),
        with,
        without,
        with / without
    ));
    table.push(format!(
        "{:<46} {:>14}",
        "  received/probes, dropped, slow disconnects",
        format!(
            "{}/{} {:.0} {:.0}",
            live.iter().map(|l| l.received).sum::<usize>(),
            live.iter().map(|l| l.probes).sum::<usize>(),
            lm(|l| l.dropped),
            lm(|l| l.slow_disconnects)
        )
    ));
    report["live"] = json!(live);
    let (rate, meters, secs, per_s) = if args.quick {
        (1000.0, 100, 3, 5)
    } else {
        (10_000.0, 1000, 60, 10)
    };
    let mut hooks = Vec::new();
    for _ in 0..args.runs {
        hooks.push(super::webhooks::run(rate, meters, secs, per_s).await?);
    }
    let hm = |f: fn(&super::webhooks::WebhookLatency) -> f64| median(hooks.iter().map(f).collect());
    table.push(format!(
        "{:<46} {:>14}",
        format!("publish → webhook p50/p99 ms, {rate:.0} readings/s"),
        format!("{:.1}/{:.1}", hm(|h| h.p50_ms), hm(|h| h.p99_ms))
    ));
    table.push(format!(
        "{:<46} {:>14}",
        "  delivered/anomalies, readings/s achieved",
        format!(
            "{}/{} {:.0}",
            hooks.iter().map(|h| h.delivered).sum::<usize>(),
            hooks.iter().map(|h| h.anomalies).sum::<usize>(),
            hm(|h| h.readings_per_s)
        )
    ));
    report["webhooks"] = json!(hooks);
    let runs = args.runs.max(if args.quick { 1 } else { 5 });
    let sql = super::sql::raw_set(args.sql_meters, args.sql_days, runs).await?;
    let geomean = push_sql(
        &mut table,
        &sql,
        &format!("{} meters × {} days, raw", args.sql_meters, args.sql_days),
    );
    report["sql"] = json!({ "meters": args.sql_meters, "days": args.sql_days, "queries": sql, "geomean_ratio": geomean });

    let mut analytics =
        super::sql::analytics_set(args.analytics_meters, args.analytics_days, runs).await?;
    push_analytics(&mut table, &mut analytics);
    report["analytics"] = analytics;
    report["elapsed_s"] = json!(started.elapsed().as_secs_f64());
    for line in &table {
        println!("{line}");
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("results: {}", args.out.display());
    Ok(())
}

/// Adds the lines of an SQL set to `table`; returns the geometric mean of the ratios.
fn push_sql(table: &mut Vec<String>, queries: &[Value], label: &str) -> f64 {
    let mut log_sum = 0.0;
    for q in queries {
        let (ours, duck, ratio) = (
            q["meterstack_s"].as_f64().unwrap_or(f64::NAN),
            q["duckdb_s"].as_f64().unwrap_or(f64::NAN),
            q["ratio"].as_f64().unwrap_or(f64::NAN),
        );
        log_sum += ratio.ln();
        table.push(format!(
            "{:<46} {:>13.1}ms {:>12.1}ms {:>7.2}×",
            format!("sql {}", q["query"].as_str().unwrap_or("")),
            ours * 1e3,
            duck * 1e3,
            ratio
        ));
    }
    let geomean = (log_sum / queries.len().max(1) as f64).exp();
    table.push(format!(
        "{:<46} {:>14} {:>14} {:>7.2}×",
        format!("sql geometric mean ({label})"),
        "",
        "",
        geomean
    ));
    geomean
}

/// Adds the lines of the meter-analytics set to `table`, and its geometric mean to `set`.
pub(super) fn push_analytics(table: &mut Vec<String>, set: &mut Value) {
    table.push(format!(
        "{:<46} {:>14.0}",
        format!(
            "etl raw readings/s ({} readings)",
            set["raw_readings"].as_u64().unwrap_or(0)
        ),
        set["etl_raw_readings_per_s"].as_f64().unwrap_or(f64::NAN)
    ));
    table.push(format!(
        "{:<46} {:>14.1}",
        "  trusted readings bytes per interval",
        set["trusted_bytes_per_interval"]
            .as_f64()
            .unwrap_or(f64::NAN)
    ));
    let queries = set["queries"].as_array().cloned().unwrap_or_default();
    let label = format!(
        "{} meters × {} days, {} intervals, trusted",
        set["meters"], set["days"], set["trusted_intervals"]
    );
    set["geomean_ratio"] = json!(push_sql(table, &queries, &label));
}
