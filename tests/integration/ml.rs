//! Forecasting from the shell, on the trusted zone: `meterstack backfill` and `etl` give five
//! weeks of history; `meterstack ml train` registers models and promotes per policy;
//! `ml backtest` scores day-ahead forecasts against the baselines and refuses a model that saw
//! the days it would forecast; `ml models` lists, promotes, rolls back and refuses a damaged
//! artifact. `meterstack up` with the `ml` role trains on a backfilled history and serves
//! forecasts through the API and SQL.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Meterstack, bin, kafka_config, postgres_database, s3_lake_env};

fn ms(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = bin()
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .current_dir(dir)
        // Five weeks: hold back 7 days for the band, backtest on them.
        .env("METERSTACK__ML__GBM__CALIBRATION_DAYS", "7")
        .env("METERSTACK__ML__GBM__MAX_ROWS", "10000")
        .env("METERSTACK__ML__GBM__MAX_TREES", "20")
        .env("METERSTACK__ML__BACKTEST_DAYS", "7")
        .output()
        .expect("meterstack runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (success, stdout, stderr) = ms(dir, args);
    assert!(success, "meterstack {args:?}: {stderr}");
    stdout
}

fn models(dir: &Path) -> Vec<Value> {
    ok(dir, &["ml", "models", "list"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn models_train_on_the_trusted_zone_register_backtest_and_roll_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    ok(
        dir,
        &[
            "backfill",
            "--meters",
            "24",
            "--days",
            "36",
            "--end",
            "2026-11-20T00:00:00Z",
        ],
    );
    ok(dir, &["etl"]);

    // Nothing to learn from before the history began.
    let (success, _, stderr) = ms(dir, &["ml", "train", "--until", "2026-10-01"]);
    assert!(!success && stderr.contains("no measured hours"), "{stderr}");

    let first = ok(dir, &["ml", "train", "--until", "2026-11-20"]);
    assert!(first.contains("promoted: now current"), "{first}");
    let list = models(dir);
    assert_eq!(list.len(), 1);
    let a = list[0]["version"].as_str().expect("version").to_owned();
    assert_eq!(list[0]["current"], true);
    assert_eq!(list[0]["data_until"], "2026-11-20T00:00:00Z");
    let scores = list[0]["backtest"].as_array().expect("scores");
    assert_eq!(scores.len(), 3, "{scores:?}");
    assert!(
        scores
            .iter()
            .all(|s| s["hours"].as_u64().unwrap_or(0) > 1000)
    );
    assert_eq!(
        list[0]["features"],
        serde_json::json!(meterstack_ml::features::NAMES)
    );

    let second = ok(
        dir,
        &["ml", "train", "--until", "2026-11-19", "--promote", "never"],
    );
    assert!(second.contains("not promoted"), "{second}");
    let list = models(dir);
    assert_eq!(list.len(), 2);
    let b = list[0]["version"].as_str().expect("version").to_owned();
    assert_ne!(a, b);
    assert_eq!(
        (list[0]["current"].clone(), list[1]["current"].clone()),
        (Value::Bool(false), Value::Bool(true))
    );

    // Rollback needs an earlier current version.
    let (success, _, stderr) = ms(dir, &["ml", "models", "rollback"]);
    assert!(
        !success && stderr.contains("no earlier current version"),
        "{stderr}"
    );
    ok(dir, &["ml", "models", "promote", &b]);
    assert!(ok(dir, &["ml", "models", "rollback"]).contains(&a));
    assert!(
        models(dir)
            .iter()
            .any(|m| m["version"] == a.as_str() && m["current"] == true)
    );

    // A backtest from data before each midnight only; a model trained on the window is refused.
    let out = ok(
        dir,
        &[
            "ml",
            "backtest",
            "--from",
            "2026-11-13",
            "--to",
            "2026-11-20",
            "--json",
        ],
    );
    let scores: Vec<Value> = serde_json::from_str(&out).expect("json");
    let names: Vec<&str> = scores.iter().filter_map(|s| s["model"].as_str()).collect();
    assert_eq!(names, ["seasonal_naive", "median_7d", "gbm"]);
    assert!(scores.iter().all(|s| s["hours"] == scores[0]["hours"]));
    let (success, _, stderr) = ms(
        dir,
        &[
            "ml",
            "backtest",
            "--from",
            "2026-11-13",
            "--to",
            "2026-11-20",
            "--model",
            &a,
        ],
    );
    assert!(!success && stderr.contains("has seen the days"), "{stderr}");

    // A damaged artifact is refused by name; the current model stays.
    std::fs::write(dir.join(format!("data/lake/models/{b}/model.json")), b"{}").expect("write");
    let (success, _, stderr) = ms(dir, &["ml", "models", "promote", &b]);
    assert!(!success && stderr.contains("damaged"), "{stderr}");
    assert!(
        models(dir)
            .iter()
            .any(|m| m["version"] == a.as_str() && m["current"] == true)
    );
}

/// The forecast at `path` once there is one (404 until then), within 240 s, from its first
/// hour (by default the API answers from the current hour, which may have turned since the
/// forecast was made).
fn first_forecast(ms: &Meterstack, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (status, body) = ms.admin("GET", path, None);
        if status == 200 {
            let first = body["items"][0]["ts"].as_str().expect("an item").to_owned();
            let (status, body) = ms.admin("GET", &format!("{path}?from={first}"), None);
            assert_eq!(status, 200, "{body}");
            return body;
        }
        assert_eq!(status, 404, "{body}");
        assert!(
            Instant::now() < deadline,
            "no forecast within 240 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn up_trains_on_backfilled_history_and_serves_forecasts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let csv = dir.join("fleet.csv");
    let csv = csv.to_str().expect("utf-8 path");
    ok(
        dir,
        &[
            "backfill",
            "--meters",
            "12",
            "--days",
            "36",
            "--end",
            "30m",
            "--fleet-csv",
            csv,
        ],
    );
    ok(dir, &["meters", "import", csv]);
    ok(dir, &["etl"]);
    let env = [
        ("METERSTACK__ML__INTERVAL", "1s"),
        ("METERSTACK__ML__GBM__CALIBRATION_DAYS", "7"),
        ("METERSTACK__ML__GBM__MAX_ROWS", "10000"),
        ("METERSTACK__ML__GBM__MAX_TREES", "20"),
        ("METERSTACK__ML__BACKTEST_DAYS", "7"),
    ];
    let ms = Meterstack::start(dir, &env);
    let meter = "/api/v1/meters/m-001/forecast";
    let body = first_forecast(&ms, meter);
    assert_eq!(body["meter_id"], "m-001");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 48, "{body}");
    for w in items.windows(2) {
        let t = |v: &Value| {
            chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap_or("")).expect("ts")
        };
        assert_eq!(t(&w[1]) - t(&w[0]), chrono::TimeDelta::hours(1));
    }
    for i in items {
        let (p10, p50, p90) = (i["p10"].as_f64(), i["p50"].as_f64(), i["p90"].as_f64());
        assert!(p10 <= p50 && p50 <= p90 && p10 >= Some(0.0), "{i}");
    }
    let version = body["model_version"].as_str().expect("model").to_owned();

    let (status, models) = ms.admin("GET", "/api/v1/models", None);
    assert_eq!(
        (status, models["current"].as_str()),
        (200, Some(version.as_str())),
        "{models}"
    );

    let (status, feeder) = ms.admin("GET", "/api/v1/feeders/f-01/forecast?hours=24", None);
    assert_eq!(status, 200, "{feeder}");
    assert_eq!(feeder["items"].as_array().map(Vec::len), Some(24));
    assert!(feeder["meters"].as_u64().unwrap_or(0) > 1, "{feeder}");

    // Each forecast pass also checks today's hours against their band; the alert type is one
    // of the store's (eval scores what it finds: tests/integration/eval.rs).
    let (status, list) = ms.admin(
        "GET",
        "/api/v1/alerts?type=consumption_forecast_deviation",
        None,
    );
    assert_eq!(status, 200, "{list}");
    let runs = ms.metric("meterstack_ml_forecast_runs_total{outcome=\"ok\"}");
    assert!(runs >= 1.0, "{runs}");

    let rows = ms.rows("SELECT count(DISTINCT meter_id) AS meters FROM forecasts");
    assert!(rows[0]["meters"].as_u64().unwrap_or(0) >= 10, "{rows:?}");

    // As of a time before any model had been trained: refused, never a model of the future.
    let (status, err) = ms.admin("GET", &format!("{meter}?as_of=2020-01-01T00:00:00Z"), None);
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("no_model")),
        "{err}"
    );
    // As of now: the current model, recomputed from the lake.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, again) = ms.admin("GET", &format!("{meter}?as_of={now}&hours=12"), None);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["model_version"].as_str(), Some(version.as_str()));
    assert_eq!(again["items"].as_array().map(Vec::len), Some(12));
    let (status, _) = ms.admin("GET", &format!("{meter}?hours=0"), None);
    assert_eq!(status, 400);
    let (status, _) = ms.admin("GET", "/api/v1/meters/m-001/forecast?when=now", None);
    assert_eq!(status, 400);
}

/// The distributed topology: the ml role in a process of its own on Kafka, the lake in an
/// S3-compatible store and the SQL store in PostgreSQL; a second process runs the pipeline and
/// the API and serves what the first trained and forecast.
#[test]
fn the_ml_role_runs_as_its_own_process_on_kafka_s3_and_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let mut env = s3_lake_env();
    env.push(("METERSTACK__STORE__URL".into(), postgres_database()));
    for (k, v) in [
        ("METERSTACK__ML__INTERVAL", "1s"),
        ("METERSTACK__ML__GBM__CALIBRATION_DAYS", "7"),
        ("METERSTACK__ML__GBM__MAX_ROWS", "10000"),
        ("METERSTACK__ML__GBM__MAX_TREES", "20"),
        ("METERSTACK__ML__BACKTEST_DAYS", "7"),
    ] {
        env.push((k.into(), v.into()));
    }
    let config = kafka_config(dir, &format!("ml{}", std::process::id()));
    let config = config.to_str().expect("utf-8 path");
    let csv = dir.join("fleet.csv");
    let csv = csv.to_str().expect("utf-8 path");
    let cli = |args: &[&str]| {
        let out = bin()
            .args(args)
            .args(["--config", config, "--data-dir"])
            .arg(dir.join("data"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("meterstack runs");
        assert!(
            out.status.success(),
            "meterstack {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let fleet = ["backfill", "--meters", "12", "--days", "36", "--end", "30m"];
    cli(&[&fleet[..], &["--fleet-csv", csv]].concat());
    cli(&["meters", "import", csv]);
    cli(&["etl"]);

    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (ml_dir, api_dir) = (dir.join("ml"), dir.join("api"));
    for d in [&ml_dir, &api_dir] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let ml = Meterstack::launch(&ml_dir, &["run", "--roles", "ml", "--config", config], &env);
    let roles = ["run", "--roles", "pipeline,api", "--config", config];
    let mut api = Meterstack::launch(&api_dir, &roles, &env);
    // One admin key for the shared store: whoever opened it first created it.
    api.admin_key = [dir, &ml_dir, &api_dir]
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join("data").join("admin-api-key")).ok())
        .map(|k| k.trim().to_owned());
    assert!(api.admin_key.is_some(), "no admin key was written");

    let body = first_forecast(&api, "/api/v1/meters/m-001/forecast");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(48), "{body}");
    // The model is in the S3 lake, its forecasts in PostgreSQL: the API process sees both.
    let (status, models) = api.admin("GET", "/api/v1/models", None);
    assert_eq!(status, 200, "{models}");
    assert_eq!(models["current"], body["model_version"], "{models}");
    let rows = api.rows("SELECT count(DISTINCT meter_id) AS meters FROM forecasts");
    assert!(rows[0]["meters"].as_u64().unwrap_or(0) >= 10, "{rows:?}");
    let runs = ml.metric("meterstack_ml_forecast_runs_total{outcome=\"ok\"}");
    assert!(runs >= 1.0, "{runs}");
    assert!(ml.terminate().success());
    assert!(api.terminate().success());
}

/// `meterstack import temperatures`: a file with bad rows is refused whole, or imported except
/// those rows with `--skip-bad`; quarter-hour values become hourly means per area, which SQL
/// shows in `temperatures`, and an hour imported again (a newer weather forecast) is replaced.
#[test]
fn temperature_imports_are_all_or_nothing_and_become_hourly_means() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dir = dir.path();
    let mut csv = String::from("area,ts,temperature_c\n");
    for k in 0..8 {
        let t = chrono::DateTime::from_timestamp(1_767_571_200 + k * 900, 0).expect("time");
        csv.push_str(&format!("*,{},{}\n", t.to_rfc3339(), -2.0 + k as f64));
    }
    csv.push_str("F1,2026-01-05T00:00:00Z,12\n");
    csv.push_str("F1,2026-01-05T01:00:00Z,-120\n");
    std::fs::write(dir.join("temps.csv"), &csv).expect("write");
    let (success, _, stderr) = ms(dir, &["import", "temperatures", "temps.csv"]);
    assert!(!success, "bad rows must refuse the file");
    assert!(
        stderr.contains("1 bad rows") && stderr.contains("line 11") && stderr.contains("outside"),
        "{stderr}"
    );
    let sql =
        "SELECT area, CAST(ts AS VARCHAR) AS ts, temperature_c FROM temperatures ORDER BY area, ts";
    assert_eq!(
        ok(dir, &["sql", "SELECT count(*) AS n FROM temperatures"]),
        "n\n0\n",
        "nothing may be written"
    );
    let report: Value = serde_json::from_str(&ok(
        dir,
        &[
            "import",
            "temperatures",
            "temps.csv",
            "--skip-bad",
            "--json",
        ],
    ))
    .expect("json");
    assert_eq!(
        (
            report["rows"].as_u64(),
            report["hours"].as_u64(),
            report["bad_rows"].as_u64()
        ),
        (Some(10), Some(3), Some(1)),
        "{report}"
    );
    std::fs::write(
        dir.join("newer.csv"),
        "area,ts,temperature_c\nF1,1767571200000,9.5\n",
    )
    .expect("write");
    ok(dir, &["import", "temperatures", "newer.csv"]);
    let rows: Vec<String> = ok(dir, &["sql", sql]).lines().map(str::to_owned).collect();
    assert_eq!(
        rows,
        vec![
            "area,ts,temperature_c",
            "*,2026-01-05T00:00:00Z,-0.5",
            "*,2026-01-05T01:00:00Z,3.5",
            "F1,2026-01-05T00:00:00Z,9.5",
        ],
    );
}
