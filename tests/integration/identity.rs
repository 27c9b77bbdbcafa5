//! Identity and access, end to end with real clients: mosquitto_pub/mosquitto_sub and
//! paho-mqtt against `meterstack up` without `--dev`, with secrets and with client
//! certificates from `meterstack certs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::harness::{Meterstack, bin, postgres_database};

/// Runs `meterstack ARGS --data-dir DATA` and returns stdout; the command must succeed.
fn cli(data: &Path, args: &[&str]) -> String {
    let out = bin()
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("meterstack runs");
    assert!(
        out.status.success(),
        "meterstack {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA and a server certificate for 127.0.0.1 in `data`.
fn init_pki(data: &Path) {
    cli(data, &["certs", "init-ca"]);
    cli(
        data,
        &[
            "certs",
            "server",
            "--name",
            "localhost",
            "--ip",
            "127.0.0.1",
        ],
    );
}

/// The value after `prefix ` on a line of `text`.
fn field(text: &str, prefix: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{prefix} ")))
        .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
        .trim()
        .to_owned()
}

/// paho-mqtt as a meter: see paho_client.py.
fn paho(port: u16, client_id: &str, auth: &[&str], action: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/integration/paho_client.py"
        ))
        .args(["--port", &port.to_string(), "--client-id", client_id])
        .args(auth)
        .args(action)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "paho_client.py printed no JSON ({e}): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// mosquitto_pub of one reading at QoS 1; true if the broker acknowledged it.
fn mosquitto_pub(port: u16, topic: &str, client_id: &str, extra: &[&str]) -> bool {
    let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    crate::harness::mosquitto_pub_anon(port, topic)
        .args(["-i", client_id])
        .args(["-m", &format!(r#"{{"ts":"{ts}","import_wh":1000}}"#)])
        .args(extra)
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub is installed")
        .success()
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

struct Pki {
    ca: PathBuf,
    server_crt: PathBuf,
    server_key: PathBuf,
    /// (cert, key) per name.
    certs: std::collections::BTreeMap<&'static str, (PathBuf, PathBuf)>,
}

/// Registers meters a, b (and c, decommissioned), gives a a secret, and issues certificates:
/// a, b valid; a2 (for a) revoked; a-expired; foreign (a, from another CA).
fn setup(dir: &Path) -> (PathBuf, String, Pki) {
    let data = dir.join("data");
    for (id, feeder) in [("meter-a", "F1"), ("meter-b", "F1"), ("meter-c", "F2")] {
        cli(
            &data,
            &[
                "meters",
                "add",
                id,
                "--feeder",
                feeder,
                "--class",
                "household",
            ],
        );
    }
    let out = cli(&data, &["meters", "secret", "meter-a"]);
    let secret = field(&out, "secret");
    assert_eq!(secret.len(), 64);

    init_pki(&data);
    let mut certs = std::collections::BTreeMap::new();
    let mut issue = |name: &'static str, meter: &str, extra: &[&str]| -> String {
        let out_dir = dir.join("pki").join(name);
        let mut args = vec![
            "certs",
            "issue",
            meter,
            "--out",
            out_dir.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        let out = cli(&data, &args);
        certs.insert(
            name,
            (
                out_dir.join(format!("{meter}.crt")),
                out_dir.join(format!("{meter}.key")),
            ),
        );
        field(&out, "serial")
    };
    issue("a", "meter-a", &[]);
    issue("b", "meter-b", &[]);
    issue("c", "meter-c", &[]);
    let revoked = issue("a2", "meter-a", &[]);
    issue(
        "a-expired",
        "meter-a",
        &[
            "--not-before",
            "2020-01-01T00:00:00Z",
            "--not-after",
            "2021-01-01T00:00:00Z",
        ],
    );
    cli(&data, &["certs", "revoke", &revoked]);
    cli(
        &data,
        &[
            "meters",
            "import",
            dir.join("decommission.csv").to_str().expect("utf-8"),
        ],
    );

    // Another CA, which issues a certificate for meter-a that must mean nothing here.
    let foreign = dir.join("foreign");
    cli(&foreign, &["meters", "add", "meter-a"]);
    cli(&foreign, &["certs", "init-ca"]);
    let out_dir = dir.join("pki").join("foreign");
    cli(
        &foreign,
        &[
            "certs",
            "issue",
            "meter-a",
            "--out",
            out_dir.to_str().expect("utf-8"),
        ],
    );
    certs.insert(
        "foreign",
        (out_dir.join("meter-a.crt"), out_dir.join("meter-a.key")),
    );
    (
        data.clone(),
        secret,
        Pki {
            ca: data.join("ca").join("ca.crt"),
            server_crt: data.join("certs").join("server.crt"),
            server_key: data.join("certs").join("server.key"),
            certs,
        },
    )
}

/// `meterstack up` without `--dev`, with the TLS listener on and `extra` settings.
fn start(dir: &Path, pki: &Pki, extra: &[(&str, &str)]) -> Meterstack {
    let path = |p: &PathBuf| p.to_str().expect("utf-8").to_owned();
    let (ca, crt, key) = (path(&pki.ca), path(&pki.server_crt), path(&pki.server_key));
    let mut env = vec![
        ("METERSTACK__DEV", "false"),
        ("METERSTACK__MQTT__TLS__LISTEN", "127.0.0.1:0"),
        ("METERSTACK__MQTT__TLS__CERT", crt.as_str()),
        ("METERSTACK__MQTT__TLS__KEY", key.as_str()),
        ("METERSTACK__MQTT__TLS__CLIENT_CA", ca.as_str()),
    ];
    env.extend_from_slice(extra);
    Meterstack::start(dir, &env)
}

/// paho-mqtt as meter `id`, subscribed to its command topic (returns once the SUBACK is in),
/// waiting up to 30 s for one command or a disconnect.
fn spawn_subscriber(port: u16, id: &str, auth: &[String]) -> std::process::Child {
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/integration/paho_client.py"
        ))
        .args([
            "--port",
            &port.to_string(),
            "--client-id",
            id,
            "--wait",
            "30",
        ])
        .args(auth)
        .args(["subscribe", &format!("meters/{id}/commands"), "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let stderr = child.stderr.take().expect("stderr");
    let first = BufReader::new(stderr).lines().next().and_then(Result::ok);
    assert_eq!(first.as_deref(), Some("SUBSCRIBED"), "{id}");
    child
}

fn refused(ms: &Meterstack, reason: &str) -> f64 {
    ms.metric(&format!(
        "meterstack_mqtt_refused_total{{reason=\"{reason}\"}}"
    ))
}

#[test]
fn only_a_meter_itself_can_publish_its_readings() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("decommission.csv"),
        "meter_id,status,feeder\nmeter-c,decommissioned,F2\n",
    )
    .expect("csv");
    let (_data, secret, pki) = setup(dir.path());
    let ms = start(dir.path(), &pki, &[]);
    let port = ms.mqtt_port;
    let tls_port = ms.mqtts_port.expect("the TLS listener is on");
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let reading_b = format!(r#"{{"ts":"{now}","import_wh":5}}"#);
    let reading_a = format!(r#"{{"ts":"{now}","import_wh":6}}"#);
    let user = ["-u", "meter-a", "-P", secret.as_str()];
    let paho_user = ["--username", "meter-a", "--password", secret.as_str()];
    let tls = |name: &str| -> Vec<String> {
        let (crt, key) = &pki.certs[name];
        vec![
            "--cafile".into(),
            pki.ca.display().to_string(),
            "--cert".into(),
            crt.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ]
    };
    let tls_args = |name: &str| tls(name);

    // Legitimate: the secret over TCP, the certificate over TLS, with both clients.
    assert!(mosquitto_pub(
        port,
        "meters/meter-a/readings",
        "meter-a",
        &user
    ));
    let a_tls = tls_args("a");
    assert!(mosquitto_pub(
        tls_port,
        "meters/meter-a/readings",
        "meter-a",
        &as_strs(&a_tls)
    ));
    let b_tls = tls_args("b");
    let r = paho(
        tls_port,
        "meter-b",
        &as_strs(&b_tls),
        &["publish", "meters/meter-b/readings", &reading_b],
    );
    assert_eq!(
        (r["rc"].as_i64(), r["acked"].as_bool()),
        (Some(0), Some(true)),
        "{r}"
    );
    let r = paho(
        port,
        "meter-a",
        &paho_user,
        &["publish", "meters/meter-a/readings", &reading_a],
    );
    assert_eq!(
        (r["rc"].as_i64(), r["acked"].as_bool()),
        (Some(0), Some(true)),
        "{r}"
    );

    // Spoofing and bad credentials: every attempt refused and counted.
    let wrong = ["-u", "meter-a", "-P", "not-the-secret"];
    let attempts: Vec<(&str, bool, &str)> = vec![
        // (what, refused?, counted reason)
        (
            "secret: publish to B's topic",
            !mosquitto_pub(port, "meters/meter-b/readings", "meter-a", &user),
            "publish_denied",
        ),
        (
            "secret: connect as B's client id",
            !mosquitto_pub(port, "meters/meter-b/readings", "meter-b", &user),
            "client_id_mismatch",
        ),
        (
            "no credentials",
            !mosquitto_pub(port, "meters/meter-a/readings", "meter-a", &[]),
            "no_credentials",
        ),
        (
            "wrong secret",
            !mosquitto_pub(port, "meters/meter-a/readings", "meter-a", &wrong),
            "bad_credentials",
        ),
        (
            "certificate: publish to B's topic",
            !mosquitto_pub(
                tls_port,
                "meters/meter-b/readings",
                "meter-a",
                &as_strs(&a_tls),
            ),
            "publish_denied",
        ),
        (
            "certificate: connect as B's client id",
            !mosquitto_pub(
                tls_port,
                "meters/meter-b/readings",
                "meter-b",
                &as_strs(&a_tls),
            ),
            "client_id_mismatch",
        ),
        (
            "revoked certificate",
            !mosquitto_pub(
                tls_port,
                "meters/meter-a/readings",
                "meter-a",
                &as_strs(&tls_args("a2")),
            ),
            "certificate_revoked",
        ),
        (
            "expired certificate",
            !mosquitto_pub(
                tls_port,
                "meters/meter-a/readings",
                "meter-a",
                &as_strs(&tls_args("a-expired")),
            ),
            "tls_expired",
        ),
        (
            "foreign CA",
            !mosquitto_pub(
                tls_port,
                "meters/meter-a/readings",
                "meter-a",
                &as_strs(&tls_args("foreign")),
            ),
            "tls_untrusted",
        ),
        (
            "decommissioned meter",
            !mosquitto_pub(
                tls_port,
                "meters/meter-c/readings",
                "meter-c",
                &as_strs(&tls_args("c")),
            ),
            "decommissioned",
        ),
        (
            "TLS without a client certificate or secret",
            !mosquitto_pub(
                tls_port,
                "meters/meter-a/readings",
                "meter-a",
                &["--cafile", pki.ca.to_str().expect("utf-8")],
            ),
            "no_credentials",
        ),
    ];
    for (what, was_refused, _) in &attempts {
        assert!(was_refused, "{what}: was accepted");
    }
    // Subscriptions beyond the meter's own command topic (paho-mqtt).
    for (filter, auth) in [
        ("meters/#", as_strs(&a_tls)),
        ("meters/meter-b/commands", as_strs(&a_tls)),
        ("#", paho_user.to_vec()),
        ("meters/+/readings", paho_user.to_vec()),
    ] {
        let r = paho(
            tls_port_or(port, tls_port, &auth),
            "meter-a",
            &auth,
            &["subscribe", filter],
        );
        assert!(
            r["disconnected"].as_bool() == Some(true) && r["subscribed"].as_bool() != Some(true),
            "subscribing to {filter} was not refused: {r}"
        );
    }
    let expected_counts = [
        ("publish_denied", 2.0),
        ("client_id_mismatch", 2.0),
        ("no_credentials", 2.0),
        ("bad_credentials", 1.0),
        ("certificate_revoked", 1.0),
        ("tls_expired", 1.0),
        ("tls_untrusted", 1.0),
        ("decommissioned", 1.0),
        ("subscribe_denied", 4.0),
    ];
    for (reason, n) in expected_counts {
        assert_eq!(refused(&ms, reason), n, "refusals counted as {reason}");
    }

    // Exactly the four legitimate readings arrived: nothing from any refused attempt.
    assert_eq!(ms.wait_for_count("raw_readings", 4), 4);
    std::thread::sleep(Duration::from_millis(600));
    let rows = ms.rows(
        "SELECT meter_id, count(*) AS n FROM raw_readings GROUP BY meter_id ORDER BY meter_id",
    );
    assert_eq!(
        rows,
        vec![
            json!({"meter_id": "meter-a", "n": 3}),
            json!({"meter_id": "meter-b", "n": 1})
        ]
    );
    assert_eq!(ms.count("rejected_readings"), 0);

    // Connectivity: the registry saw the connections.
    let (status, meter) = ms.admin("GET", "/api/v1/meters/meter-a", None);
    assert_eq!(status, 200, "{meter}");
    assert_eq!(meter["online"], json!(false), "{meter}");
    assert!(meter["last_seen"].is_string(), "{meter}");
    // Its last connection was the refused subscription.
    assert_eq!(
        meter["connectivity"]["disconnect_reason"],
        json!("subscribe_denied")
    );
    assert!(
        ["secret", "certificate"].contains(
            &meter["connectivity"]["auth_method"]
                .as_str()
                .unwrap_or_default()
        ),
        "{meter}"
    );
    assert!(ms.metric("meterstack_mqtt_connects_total{auth=\"certificate\"}") >= 2.0);
    assert!(ms.metric("meterstack_mqtt_connects_total{auth=\"secret\"}") >= 2.0);
    assert!(ms.terminate().success());

    // Connect and disconnect events are on the bus.
    let out = bin()
        .args(["bus", "read", "--topic", "meter.events", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .expect("bus read");
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|r| {
            r["value"]
                .as_str()
                .and_then(|v| serde_json::from_str::<Value>(v).ok())
        })
        .collect();
    let connected = events.iter().filter(|e| e["event"] == "connected").count();
    let disconnected = events
        .iter()
        .filter(|e| e["event"] == "disconnected")
        .count();
    assert!(connected >= 4 && connected == disconnected, "{events:?}");
}

/// The TLS port for certificate arguments, the TCP port for a secret.
fn tls_port_or(tcp: u16, tls: u16, auth: &[&str]) -> u16 {
    if auth.contains(&"--cafile") { tls } else { tcp }
}

#[test]
fn commands_reach_only_their_meter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[]);
    assert!(ms.ready_line.contains(" dev=true"), "{}", ms.ready_line);
    let port = ms.mqtt_port;
    // Development mode: meter-x registers itself by connecting.
    let sub = spawn_subscriber(port, "meter-x", &[]);
    let (status, body) = ms.admin(
        "POST",
        "/api/v1/meters/meter-x/commands",
        Some(&json!({"command": "resend", "from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"})),
    );
    assert_eq!(status, 202, "{body}");
    let out = sub.wait_with_output().expect("paho exits");
    let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let messages = r["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 1, "{r}");
    let command: Value = serde_json::from_str(messages[0]["payload"].as_str().expect("payload"))
        .expect("JSON command");
    assert_eq!(command["command"], "resend");
    assert_eq!(command["command_id"], body["command_id"]);
    // Bad commands and unknown meters are refused with a reason.
    let (status, body) = ms.admin(
        "POST",
        "/api/v1/meters/meter-x/commands",
        Some(&json!({"command": "resend", "from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, _) = ms.admin(
        "POST",
        "/api/v1/meters/nobody/commands",
        Some(&json!({"command": "ping"})),
    );
    assert_eq!(status, 404);
    assert!(ms.metric("meterstack_commands_sent_total") >= 1.0);
}

#[test]
fn limits_are_enforced_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(
        dir.path(),
        &[
            ("METERSTACK__MQTT__MAX_CONNECTIONS", "2"),
            ("METERSTACK__MQTT__LIMITS__PUBLISH_RATE", "50"),
            ("METERSTACK__MQTT__LIMITS__PUBLISH_BURST", "10"),
        ],
    );
    let port = ms.mqtt_port;
    // Two idle connections take the limit; a third is refused.
    let hold = |id: &str| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-i", id])
            .args(["-t", &format!("meters/{id}/commands")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub")
    };
    let mut held = vec![hold("hold-1"), hold("hold-2")];
    ms.wait_metric(
        "meterstack_mqtt_connections",
        Duration::from_secs(10),
        |v| v >= 2.0,
    );
    assert!(!mosquitto_pub(port, "meters/third/readings", "third", &[]));
    assert!(refused(&ms, "max_connections") >= 1.0);
    for h in &mut held {
        let _ = h.kill();
        let _ = h.wait();
    }
    ms.wait_metric(
        "meterstack_mqtt_connections",
        Duration::from_secs(10),
        |v| v == 0.0,
    );

    // A flooding meter is slowed down, and nothing it sent is lost.
    let lines = crate::harness::reading_lines(200);
    assert!(crate::harness::mosquitto_pub_lines(
        port,
        "meters/flood/readings",
        "flood",
        &lines
    ));
    assert!(ms.metric("meterstack_mqtt_throttled_total") >= 1.0);
    assert_eq!(
        ms.wait_for_count("raw_readings WHERE meter_id = 'flood'", 200),
        200
    );

    // Too many readings in one message: rejected with its reason.
    let ts = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let batch: Vec<String> = (0..1001)
        .map(|i| format!(r#"{{"ts":"{ts}","import_wh":{i}}}"#))
        .collect();
    let body = format!("[{}]", batch.join(","));
    let file = dir.path().join("batch.json");
    std::fs::write(&file, body).expect("write");
    assert!(crate::harness::mosquitto_pub_file(
        port,
        "meters/batcher/readings",
        &file
    ));
    assert_eq!(
        ms.wait_for_count("rejected_readings WHERE reason = 'too_many_readings'", 1),
        1
    );
}

#[test]
fn registry_over_the_cli_and_the_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let csv = dir.path().join("meters.csv");
    std::fs::write(
        &csv,
        "meter_id,feeder,transformer,lat,lon,meter_class,rated_current_a,tariff_id,installed_on\n\
         r-1,F1,T1,52.1,5.1,household,40,T-HH,2024-01-15\n\
         r-2,F1,T1,52.2,5.2,prosumer,63,T-PV,\n\
         r-3,F2,T9,,,commercial,100,T-C,2023-06-01\n",
    )
    .expect("csv");
    let out = cli(&data, &["meters", "import", csv.to_str().expect("utf-8")]);
    assert!(out.contains("3 created, 0 updated"), "{out}");
    // Re-import is an update, and a bad row imports nothing.
    let out = cli(&data, &["meters", "import", csv.to_str().expect("utf-8")]);
    assert!(out.contains("0 created, 3 updated"), "{out}");
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "meter_id,lat\nr-9,12\nr-10,900\n").expect("csv");
    let out = bin()
        .args(["meters", "import"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3") && err.contains("lat"), "{err}");
    let listed = cli(&data, &["meters", "list", "--feeder", "F1"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let shown = cli(&data, &["meters", "show", "r-2"]);
    assert!(shown.contains("\"meter_class\": \"prosumer\""), "{shown}");

    let ms = Meterstack::start(dir.path(), &[("METERSTACK__DEV", "false")]);
    let (status, page) = ms.admin("GET", "/api/v1/meters?limit=2", None);
    assert_eq!(status, 200);
    assert_eq!(page["meters"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["next"], json!("r-2"));
    let (_, page) = ms.admin("GET", "/api/v1/meters?limit=2&after=r-2", None);
    assert_eq!(page["meters"][0]["meter_id"], json!("r-3"));
    assert_eq!(page["next"], Value::Null);
    let (_, page) = ms.admin("GET", "/api/v1/meters?meter_class=prosumer", None);
    assert_eq!(page["meters"].as_array().map(Vec::len), Some(1));

    let (status, created) = ms.admin(
        "POST",
        "/api/v1/meters",
        Some(&json!({"meter_id": "r-4", "feeder": "F3", "lat": 50.0, "lon": 4.0, "meter_class": "solar"})),
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["meter_class"], json!("prosumer"));
    let (status, _) = ms.admin("POST", "/api/v1/meters", Some(&json!({"meter_id": "r-4"})));
    assert_eq!(status, 409);
    for bad in [
        json!({"meter_id": "r 5"}),
        json!({"meter_id": "r-5", "lat": 100}),
        json!({"meter_id": "r-5", "colour": "red"}),
        json!({"meter_id": "r-5", "meter_class": "factory"}),
    ] {
        let (status, body) = ms.admin("POST", "/api/v1/meters", Some(&bad));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad}"
        );
    }
    let (status, updated) = ms.admin(
        "PATCH",
        "/api/v1/meters/r-4",
        Some(&json!({"status": "decommissioned", "lat": null, "exchanged_on": "2026-11-01"})),
    );
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["status"], json!("decommissioned"));
    assert_eq!(updated["lat"], Value::Null);
    assert_eq!(updated["lon"], json!(4.0));
    let (status, secret) = ms.admin("POST", "/api/v1/meters/r-4/secret", None);
    assert_eq!(status, 201);
    assert_eq!(secret["secret"].as_str().map(str::len), Some(64));
    let (status, shown) = ms.admin("GET", "/api/v1/meters/r-4", None);
    assert_eq!(status, 200);
    assert_eq!(shown["has_secret"], json!(true));
    assert!(
        !shown
            .to_string()
            .contains(secret["secret"].as_str().unwrap_or("?"))
    );
    assert_eq!(shown["online"], json!(false));
    let (status, _) = ms.admin("DELETE", "/api/v1/meters/r-4", None);
    assert_eq!(status, 204);
    let (status, body) = ms.admin("GET", "/api/v1/meters/r-4", None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

/// Every endpoint × every role × {no key, revoked key}.
#[test]
fn http_authorization_matrix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ms = Meterstack::start(dir.path(), &[("METERSTACK__DEV", "false")]);
    assert!(!ms.ready_line.contains("dev="), "{}", ms.ready_line);
    let admin = ms.admin_key.clone().expect("an admin key on first start");
    let key_file = dir.path().join("data").join("admin-api-key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let mut keys = std::collections::BTreeMap::new();
    keys.insert("admin", admin.clone());
    for role in ["operator", "analyst", "viewer"] {
        let (status, body) = ms.admin(
            "POST",
            "/api/v1/keys",
            Some(&json!({"role": role, "name": role})),
        );
        assert_eq!(status, 201, "{body}");
        keys.insert(role, body["key"].as_str().expect("key").to_owned());
    }
    // A revoked admin key.
    let (_, body) = ms.admin("POST", "/api/v1/keys", Some(&json!({"role": "admin"})));
    let revoked = body["key"].as_str().expect("key").to_owned();
    let id = body["key_id"].as_str().expect("id").to_owned();
    let (status, _) = ms.admin("DELETE", &format!("/api/v1/keys/{id}"), None);
    assert_eq!(status, 200);
    // A meter with a certificate record to revoke, for the certificate endpoints.
    let (status, _) = ms.admin("POST", "/api/v1/meters", Some(&json!({"meter_id": "mx"})));
    assert_eq!(status, 201);

    const ALL: &[&str] = &["admin", "operator", "analyst", "viewer"];
    const READERS: &[&str] = &["admin", "operator", "analyst"];
    const OPS: &[&str] = &["admin", "operator"];
    let matrix: Vec<(&str, &str, Option<Value>, &[&str])> = vec![
        ("GET", "/metrics", None, ALL),
        (
            "POST",
            "/api/v1/query",
            Some(json!({"sql": "SELECT 1 AS one"})),
            &["admin", "analyst"],
        ),
        ("GET", "/api/v1/meters", None, READERS),
        (
            "POST",
            "/api/v1/meters",
            Some(json!({"meter_id": "new"})),
            OPS,
        ),
        ("GET", "/api/v1/meters/mx", None, READERS),
        (
            "PATCH",
            "/api/v1/meters/mx",
            Some(json!({"feeder": "F"})),
            OPS,
        ),
        ("POST", "/api/v1/meters/mx/secret", None, OPS),
        (
            "POST",
            "/api/v1/meters/mx/commands",
            Some(json!({"command": "ping"})),
            OPS,
        ),
        ("GET", "/api/v1/meters/mx/certificates", None, OPS),
        ("POST", "/api/v1/certificates/00ff/revoke", None, OPS),
        ("GET", "/api/v1/keys", None, &["admin"]),
        (
            "POST",
            "/api/v1/keys",
            Some(json!({"role": "viewer"})),
            &["admin"],
        ),
        ("DELETE", "/api/v1/keys/000000000000", None, &["admin"]),
        ("DELETE", "/api/v1/meters/nonexistent", None, OPS),
        ("GET", "/api/v1/tariffs", None, ALL),
        ("GET", "/api/v1/tariffs/none", None, ALL),
        (
            "POST",
            "/api/v1/tariffs",
            Some(json!({"id": "t", "effective_from": "2020-01-01",
                "urdb": {"energyratestructure": [[{"rate": 0.1}]]}})),
            OPS,
        ),
        (
            "GET",
            "/api/v1/meters/mx/bill?from=2020-01-01&to=2020-01-02",
            None,
            ALL,
        ),
    ];
    for (method, path, body, admitted) in &matrix {
        for (who, key) in [("no key", None), ("revoked key", Some(revoked.as_str()))] {
            let (status, text) = ms.request(method, path, key, body.as_ref());
            assert_eq!(status, 401, "{method} {path} with {who}: {text}");
            let err: Value = serde_json::from_str(&text).expect("JSON error");
            assert_eq!(err["error"]["code"], json!("unauthorized"));
        }
        for role in ALL {
            let (status, text) = ms.request(method, path, Some(&keys[role]), body.as_ref());
            if admitted.contains(role) {
                assert!(
                    status != 401 && status != 403 && status < 500,
                    "{method} {path} as {role}: {status} {text}"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} as {role}: {text}");
                let err: Value = serde_json::from_str(&text).expect("JSON error");
                assert_eq!(err["error"]["code"], json!("forbidden"));
            }
        }
    }
    // Health probes are public.
    for path in ["/healthz", "/readyz"] {
        let (status, _) = ms.request("GET", path, None, None);
        assert_eq!(status, 200, "{path}");
    }
    // A garbage header is a 401 too.
    let (status, _) = ms.request("GET", "/api/v1/meters", Some("msk_zz_zz"), None);
    assert_eq!(status, 401);
    assert!(ms.metric("meterstack_api_auth_refused_total{status=\"401\"}") >= 29.0);
    assert!(ms.metric("meterstack_api_auth_refused_total{status=\"403\"}") >= 10.0);

    // `meterstack keys` works on the same store.
    let data = dir.path().join("data");
    let out = cli(
        &data,
        &["keys", "create", "--role", "viewer", "--name", "wallboard"],
    );
    let viewer = out.lines().nth(1).expect("the key").to_owned();
    let (status, _) = ms.request("GET", "/metrics", Some(&viewer), None);
    assert_eq!(status, 200);
    let key_id = field(&out, "key_id")
        .split_whitespace()
        .next()
        .expect("id")
        .to_owned();
    cli(&data, &["keys", "revoke", &key_id]);
    let (status, _) = ms.request("GET", "/metrics", Some(&viewer), None);
    assert_eq!(status, 401);
    // Only the first start creates an admin key.
    assert!(ms.terminate().success());
    std::fs::remove_file(&key_file).expect("rm");
    let ms = Meterstack::start(dir.path(), &[("METERSTACK__DEV", "false")]);
    assert!(ms.admin_key.is_none());
    let (status, _) = ms.request("GET", "/api/v1/keys", Some(&admin), None);
    assert_eq!(status, 200);
}

#[test]
fn https_serves_the_api_with_configured_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    init_pki(&data);
    let crt = data.join("certs").join("server.crt");
    let key = data.join("certs").join("server.key");
    let ms = Meterstack::start(
        dir.path(),
        &[
            ("METERSTACK__HTTP__TLS__CERT", crt.to_str().expect("utf-8")),
            ("METERSTACK__HTTP__TLS__KEY", key.to_str().expect("utf-8")),
        ],
    );
    assert!(ms.http.starts_with("https://"), "{}", ms.http);
    let admin = ms.admin_key.clone().expect("admin key");
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "--cacert"])
        .arg(data.join("ca").join("ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .arg(format!("{}/api/v1/meters", ms.http))
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(body["meters"].is_array());
    // Plain HTTP on the HTTPS port gets nowhere.
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .arg(ms.http.replace("https://", "http://") + "/healthz")
        .output()
        .expect("curl");
    assert!(!plain.status.success());
}

/// The registry on PostgreSQL, shared by a broker process and a separate API process.
#[test]
fn separate_broker_and_api_processes_share_a_postgres_registry() {
    let url = postgres_database();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let store = ["--store-url", url.as_str()];
    cli(
        &data,
        &[&["meters", "add", "pg-1", "--feeder", "F7"][..], &store].concat(),
    );
    let secret = field(
        &cli(&data, &[&["meters", "secret", "pg-1"][..], &store].concat()),
        "secret",
    );
    let env = [
        ("METERSTACK__DEV", "false"),
        ("METERSTACK__STORE__URL", url.as_str()),
    ];
    let broker = Meterstack::launch(dir.path(), &["run", "--roles", "broker,sink"], &env);
    let api_dir = tempfile::tempdir().expect("tempdir");
    let api = Meterstack::launch(api_dir.path(), &["run", "--roles", "api"], &env);
    // One admin key for the shared store: whichever process started first created it.
    let admin = broker
        .admin_key
        .clone()
        .or(api.admin_key.clone())
        .expect("an admin key");
    assert!(broker.admin_key.is_none() || api.admin_key.is_none());

    let port = broker.mqtt_port;
    assert!(mosquitto_pub(
        port,
        "meters/pg-1/readings",
        "pg-1",
        &["-u", "pg-1", "-P", &secret]
    ));
    assert!(!mosquitto_pub(port, "meters/pg-1/readings", "pg-1", &[]));
    assert!(!mosquitto_pub(
        port,
        "meters/pg-2/readings",
        "pg-2",
        &["-u", "pg-2", "-P", &secret]
    ));
    assert_eq!(refused(&broker, "unknown_meter"), 1.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let meter = loop {
        let (status, text) = api.request("GET", "/api/v1/meters/pg-1", Some(&admin), None);
        assert_eq!(status, 200, "{text}");
        let meter: Value = serde_json::from_str(&text).expect("JSON");
        if meter["connectivity"]["disconnected_at"].is_string()
            || std::time::Instant::now() > deadline
        {
            break meter;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(meter["feeder"], json!("F7"));
    assert_eq!(meter["online"], json!(false), "{meter}");
    assert_eq!(
        meter["connectivity"]["auth_method"],
        json!("secret"),
        "{meter}"
    );
    assert!(broker.terminate().success());
    assert!(api.terminate().success());
}

/// Revoking a certificate or changing a secret closes the connections that used it.
#[test]
fn revocation_and_secret_rotation_close_open_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("decommission.csv"), "meter_id\nmeter-c\n").expect("csv");
    let (_data, secret, pki) = setup(dir.path());
    let path = |p: &PathBuf| p.to_str().expect("utf-8").to_owned();
    let ms = start(
        dir.path(),
        &pki,
        &[("METERSTACK__MQTT__REVALIDATE_INTERVAL", "500ms")],
    );
    let tls_port = ms.mqtts_port.expect("TLS listener");
    // Two idle meters wait on their command topics: b by certificate, a by secret.
    let (b_crt, b_key) = &pki.certs["b"];
    let b = spawn_subscriber(
        tls_port,
        "meter-b",
        &[
            "--cafile".into(),
            path(&pki.ca),
            "--cert".into(),
            path(b_crt),
            "--key".into(),
            path(b_key),
        ],
    );
    let a = spawn_subscriber(
        ms.mqtt_port,
        "meter-a",
        &[
            "--username".into(),
            "meter-a".into(),
            "--password".into(),
            secret.clone(),
        ],
    );
    let (_, certs) = ms.admin("GET", "/api/v1/meters/meter-b/certificates", None);
    let serial = certs["certificates"][0]["serial"]
        .as_str()
        .expect("serial")
        .to_owned();
    let started = std::time::Instant::now();
    let (status, revoked) = ms.admin(
        "POST",
        &format!("/api/v1/certificates/{serial}/revoke"),
        None,
    );
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string());
    let (status, _) = ms.admin("POST", "/api/v1/meters/meter-a/secret", None);
    assert_eq!(status, 201);
    for (who, child) in [("certificate", b), ("secret", a)] {
        let out = child.wait_with_output().expect("paho exits");
        let r: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(r["disconnected"], json!(true), "{who}: {r}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{who}: closed only after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(refused(&ms, "certificate_revoked"), 1.0);
    assert_eq!(refused(&ms, "credentials_changed"), 1.0);
    // The old secret no longer connects.
    assert!(!mosquitto_pub(
        ms.mqtt_port,
        "meters/meter-a/readings",
        "meter-a",
        &["-u", "meter-a", "-P", &secret]
    ));
}
