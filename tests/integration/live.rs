//! The live feed end to end: a `websockets` (Python) client subscribed to one meter while
//! mosquitto_pub publishes for two; the live page in headless Chromium (playwright-core) showing
//! a reading and an alert, acknowledging it, and reconnecting by itself; the page's assets.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DurationRound, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::harness::{Meterstack, kafka_config, mosquitto_pub, mosquitto_pub_lines};

fn key(ms: &Meterstack, role: &str) -> String {
    let (status, body) = ms.admin(
        "POST",
        "/api/v1/keys",
        Some(&json!({"role": role, "name": format!("live {role}")})),
    );
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().expect("key").to_owned()
}

fn ws_url(ms: &Meterstack) -> String {
    format!("{}/api/v1/live", ms.http.replacen("http://", "ws://", 1))
}

/// One reading as a meter sends it.
fn reading(ts: chrono::DateTime<Utc>, import_wh: u64, voltage: f64) -> String {
    json!({
        "ts": ts.to_rfc3339_opts(SecondsFormat::Secs, true),
        "import_wh": import_wh,
        "power_w": 400,
        "voltage_v": voltage,
    })
    .to_string()
}

/// A `websockets` client of `api`'s live feed subscribed to meter `ws-a` while mosquitto_pub
/// publishes 40 readings each for `ws-a` and `ws-b` to the broker on `mqtt_port`: it gets every
/// reading of `ws-a`, in order, and none of `ws-b`.
fn one_meter_in_order_and_no_other(api: &Meterstack, key: &str, mqtt_port: u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/live_client.py");
    let n = 40u64;
    let mut client = Command::new("python3")
        .arg(script)
        .args([&ws_url(api), key, "ws-a", &n.to_string(), "60"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the client");
    let mut out = BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the client reports");
    assert_eq!(line.trim(), "ready", "the client connected and subscribed");

    let now = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("trunc");
    let series = |offset: u64| -> Vec<String> {
        (0..n)
            .map(|i| {
                let ts = now - TimeDelta::minutes((n - i) as i64);
                reading(ts, offset + i * 10, 230.0)
            })
            .collect()
    };
    // Both meters at once, on their own connections.
    let a = std::thread::spawn({
        let s = series(1000);
        move || mosquitto_pub_lines(mqtt_port, "meters/ws-a/readings", "ws-a", &s)
    });
    let b = std::thread::spawn({
        let s = series(5000);
        move || mosquitto_pub_lines(mqtt_port, "meters/ws-b/readings", "ws-b", &s)
    });
    assert!(a.join().expect("a") && b.join().expect("b"), "published");

    let mut got = Vec::new();
    for line in out.lines() {
        let line = line.expect("line");
        if line == "done" {
            break;
        }
        got.push(serde_json::from_str::<Value>(&line).expect("JSON"));
    }
    assert!(
        client.wait().expect("client").success(),
        "the client's own checks pass"
    );
    let want: Vec<(String, u64)> = (0..n).map(|i| ("ws-a".to_owned(), 1000 + i * 10)).collect();
    let seen: Vec<(String, u64)> = got
        .iter()
        .map(|r| {
            (
                r["meter_id"].as_str().expect("meter").to_owned(),
                r["import_wh"].as_f64().expect("wh") as u64,
            )
        })
        .collect();
    assert_eq!(
        seen, want,
        "every reading of ws-a, in order, and none of ws-b"
    );
    let messages = api.metric("meterstack_live_messages_total{channel=\"readings\"}");
    assert!(messages >= n as f64, "{messages}");
}

/// One-minute readings: forty of them stay within the allowed lateness.
const ONE_MINUTE: (&str, &str) = ("METERSTACK__PIPELINE__INTERVAL", "1m");

#[test]
fn a_websocket_client_gets_every_reading_of_its_meter_in_order_and_no_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[ONE_MINUTE]);
    let viewer = key(&ms, "viewer");
    // No key, a bad key: refused before the upgrade.
    let (status, _) = ms.request("GET", "/api/v1/live", None, None);
    assert_eq!(status, 401);
    let (status, _) = ms.request("GET", "/api/v1/live", Some("msk_000000000000_bad"), None);
    assert_eq!(status, 401);
    one_meter_in_order_and_no_other(&ms, &viewer, ms.mqtt_port);
}

/// The API in its own process on Kafka, the broker and the pipeline in another: the live feed
/// follows the pipeline's output over the bus.
#[test]
fn the_live_feed_works_with_the_pipeline_in_another_process_on_kafka() {
    let dir = tempfile::tempdir().expect("tempdir");
    let suffix = format!("{:x}-{}", Utc::now().timestamp_micros(), std::process::id());
    let config = kafka_config(dir.path(), &suffix);
    let config = config.to_str().expect("utf8 path");
    let (ingest_dir, api_dir) = (dir.path().join("ingest"), dir.path().join("api"));
    std::fs::create_dir_all(&ingest_dir).expect("mkdir");
    std::fs::create_dir_all(&api_dir).expect("mkdir");
    let ingest = Meterstack::launch(
        &ingest_dir,
        &["run", "--roles", "broker,pipeline", "--config", config],
        &[ONE_MINUTE],
    );
    let api = Meterstack::launch(
        &api_dir,
        &["run", "--roles", "api", "--config", config],
        &[],
    );
    let viewer = key(&api, "viewer");
    one_meter_in_order_and_no_other(&api, &viewer, ingest.mqtt_port);
    assert!(api.terminate().success());
    assert!(ingest.terminate().success());
}

/// Where test artifacts go: `$METERSTACK_TEST_ARTIFACTS`, else `$CARGO_TARGET_DIR/test-artifacts`.
fn artifacts() -> PathBuf {
    let dir = std::env::var_os("METERSTACK_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("test-artifacts"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("meterstack-test-artifacts"));
    std::fs::create_dir_all(&dir).expect("artifact directory");
    dir
}

#[test]
fn the_live_page_shows_readings_and_alerts_acknowledges_and_reconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    let operator = key(&ms, "operator");
    // The page and its assets need no key; they hold no data.
    let (status, html) = ms.request("GET", "/", None, None);
    assert_eq!(status, 200);
    assert!(html.contains("/assets/live.js"), "{html}");
    assert_eq!(ms.request("GET", "/assets/live.js", None, None).0, 200);
    assert_eq!(ms.request("GET", "/assets/live.css", None, None).0, 200);
    assert_eq!(ms.request("GET", "/assets/nope.js", None, None).0, 404);

    let screenshot = artifacts().join("live-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/live_page.py");
    let mut page = Command::new("python3")
        .arg(script)
        .args([&ms.http, &operator, "page-m"])
        .arg(&screenshot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs the page script");
    let mut to_page = page.stdin.take().expect("stdin");
    let mut from_page = BufReader::new(page.stdout.take().expect("stdout")).lines();
    let mut expect = |word: &str| -> String {
        let line = from_page
            .next()
            .expect("the page script reports")
            .expect("line");
        assert!(
            line.starts_with(word),
            "expected {word}, the page script says: {line} (screenshot: {})",
            screenshot.display()
        );
        line
    };

    expect("ready");
    let grid = Utc::now()
        .duration_trunc(TimeDelta::minutes(15))
        .expect("trunc");
    let publish = |to_page: &mut std::process::ChildStdin, ts: chrono::DateTime<Utc>, wh: u64| {
        let epoch_ms = Utc::now().timestamp_millis();
        assert!(mosquitto_pub(
            ms.mqtt_port,
            "meters/page-m/readings",
            &reading(ts, wh, 231.5)
        ));
        // The time of the publish as the browser's clock sees it (the same machine).
        let ts = ts.to_rfc3339_opts(SecondsFormat::Secs, true);
        writeln!(to_page, "published {epoch_ms} {ts}").expect("write");
    };
    publish(&mut to_page, grid - TimeDelta::minutes(15), 1000);
    let shown: f64 = expect("reading ")["reading ".len()..].parse().expect("ms");
    eprintln!("live page: a published reading showed after {shown} ms");
    assert!(shown <= 2000.0, "the reading showed after {shown} ms");

    // An alert: a voltage swell.
    assert!(mosquitto_pub(
        ms.mqtt_port,
        "meters/page-swell/readings",
        &reading(grid, 1000, 262.0)
    ));
    writeln!(to_page, "alert page-swell").expect("write");
    let acked = expect("acked ");
    let alert_id = acked["acked ".len()..].trim().to_owned();
    let (status, body) = ms.admin("GET", &format!("/api/v1/alerts/{alert_id}"), None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "acknowledged", "{body}");
    assert_eq!(body["meter_id"], "page-swell");
    assert!(
        body["acknowledged_by"]
            .as_str()
            .is_some_and(|b| b.contains("live operator")),
        "{body}"
    );

    expect("reconnected");
    publish(&mut to_page, grid, 2000);
    let shown: f64 = expect("reading ")["reading ".len()..].parse().expect("ms");
    assert!(
        shown <= 2000.0,
        "after reconnecting, the reading showed after {shown} ms"
    );
    expect("done");
    assert!(page.wait().expect("page").success());
    let png = std::fs::read(&screenshot).expect("the screenshot is kept");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    eprintln!("live page screenshot: {}", screenshot.display());
}
