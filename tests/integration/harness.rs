use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meterstack"))
}

/// Runs `meterstack ARGS --data-dir DIR/data` in `dir` and returns its stdout; fails the test
/// with its stderr if it fails.
pub(crate) fn ok_in(dir: &Path, args: &[&str]) -> String {
    let out = bin()
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .current_dir(dir)
        .output()
        .expect("meterstack runs");
    assert!(
        out.status.success(),
        "meterstack {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running `meterstack up`.
pub(crate) struct Meterstack {
    child: Child,
    pub(crate) mqtt_port: u16,
    pub(crate) http: String,
    /// The TLS MQTT port, if the TLS listener is on.
    pub(crate) mqtts_port: Option<u16>,
    /// The admin API key the process created on first start (None if it found one).
    pub(crate) admin_key: Option<String>,
    /// The ready line.
    pub(crate) ready_line: String,
    agent: ureq::Agent,
}

impl Meterstack {
    /// Starts `meterstack up` with its data in `dir`, on free ports, flushing every 200 ms,
    /// in development mode (meters need no credentials) unless `env` sets
    /// `METERSTACK__DEV=false`.
    pub(crate) fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::launch(dir, &["up"], env)
    }

    /// Starts `meterstack ARGS…` (e.g. `up`, or `run --roles sink,api --bus kafka …`) with its
    /// data in `dir`, on free ports, flushing every 200 ms.
    pub(crate) fn launch(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = bin();
        cmd.args(args)
            .args(["--mqtt-port", "0", "--http-port", "0", "--data-dir"])
            .arg(dir.join("data"))
            .current_dir(dir)
            .env("METERSTACK__LAKE__RAW_SINK__FLUSH_INTERVAL", "200ms")
            .env("METERSTACK__MQTT__LISTEN", "127.0.0.1:0")
            .env("METERSTACK__HTTP__LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info,rumqttd=off,librdkafka=warn")
            .env("METERSTACK__DEV", "true")
            // Tests backfill history from fixed past dates: keep the raw zone forever.
            .env("METERSTACK__LAKE__ETL__RETENTION__RAW_DAYS", "0")
            // Test fleets publish as fast as they can; the limit has its own test.
            .env("METERSTACK__MQTT__LIMITS__PUBLISH_RATE", "1000000")
            .env("METERSTACK__MQTT__LIMITS__PUBLISH_BURST", "1000000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("meterstack starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("meterstack ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("meterstack reports ready within 60 s");
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_owned()
        };
        // Processes without the broker role have no MQTT port (0 here).
        let port = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
        };
        let mqtt_port = port("mqtt=").unwrap_or(0);
        let mqtts_port = port("mqtts=");
        let admin_key = std::fs::read_to_string(dir.join("data").join("admin-api-key"))
            .ok()
            .map(|k| k.trim().to_owned());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            child,
            mqtt_port,
            http: field("http="),
            mqtts_port,
            admin_key,
            ready_line: line,
            agent,
        }
    }

    /// `POST /api/v1/query`: (status, JSON body).
    pub(crate) fn query(&self, sql: &str) -> (u16, Value) {
        self.post_query(&serde_json::json!({ "sql": sql }).to_string())
    }

    /// `Authorization: Bearer` with the admin key.
    fn bearer(&self) -> String {
        format!("Bearer {}", self.admin_key.as_deref().unwrap_or_default())
    }

    /// Any request: (status, body), with `key` as the bearer token if given.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String) {
        let uri = format!("{}{path}", self.http);
        let mut builder = ureq::http::Request::builder().method(method).uri(&uri);
        if let Some(key) = key {
            builder = builder.header("Authorization", format!("Bearer {key}"));
        }
        let result = match body {
            Some(b) => self.agent.run(
                builder
                    .header("Content-Type", "application/json")
                    .body(b.to_string())
                    .expect("request"),
            ),
            None => self.agent.run(builder.body(()).expect("request")),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    /// A request with the admin key and a body sent as it is: (status, body).
    pub(crate) fn request_text(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let uri = format!("{}{path}", self.http);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&uri)
            .header("Authorization", self.bearer())
            .body(body.to_owned())
            .expect("request");
        let mut resp = self
            .agent
            .run(request)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    /// A request with the admin key whose body must be JSON.
    pub(crate) fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, text) = self.request(method, path, self.admin_key.as_deref(), body);
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, value)
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `POST /api/v1/query` with `body`: the status and the body, or the error that cut the
    /// response off (a result that failed after it began streaming).
    pub(crate) fn try_query(&self, body: &Value) -> (u16, Result<String, String>) {
        let mut resp = self
            .agent
            .post(format!("{}/api/v1/query", self.http))
            .header("Authorization", self.bearer())
            .send(body.to_string())
            .expect("query request");
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_string()
            .map_err(|e| e.to_string());
        (status, body)
    }

    /// `POST /api/v1/query` with a raw body.
    pub(crate) fn post_query(&self, body: &str) -> (u16, Value) {
        let mut resp = self
            .agent
            .post(format!("{}/api/v1/query", self.http))
            .header("Authorization", self.bearer())
            .send(body)
            .expect("query request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("query body");
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
        )
    }

    /// Rows of a query that must succeed.
    pub(crate) fn rows(&self, sql: &str) -> Vec<Value> {
        let (status, body) = self.query(sql);
        assert_eq!(status, 200, "{sql}: {body}");
        body.as_array().expect("an array of rows").clone()
    }

    /// `SELECT count(*)` of a query's FROM/WHERE tail.
    pub(crate) fn count(&self, tail: &str) -> u64 {
        let rows = self.rows(&format!("SELECT count(*) AS n FROM {tail}"));
        rows[0]["n"].as_u64().expect("count")
    }

    /// Polls `count(tail)` until it reaches `n` (or 30 s pass) and returns the last count.
    pub(crate) fn wait_for_count(&self, tail: &str, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.count(tail);
            if got >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET a path: (status, body).
    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        let mut resp = self
            .agent
            .get(format!("{}{path}", self.http))
            .header("Authorization", self.bearer())
            .call()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body"))
    }

    /// The value of one sample in `/metrics`, e.g. `meterstack_readings_rejected_total{reason="not_json"}`.
    pub(crate) fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {sample} in /metrics:\n{text}"))
    }

    /// Polls `/metrics` until `sample` satisfies `done` (or `timeout` passes); returns the
    /// last value.
    pub(crate) fn wait_metric(
        &self,
        sample: &str,
        timeout: Duration,
        done: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, text) = self.get("/metrics");
            let value = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix(sample)
                        .and_then(|rest| rest.strip_prefix(' '))
                })
                .and_then(|v| v.trim().parse().ok());
            if let Some(v) = value
                && (done(v) || Instant::now() > deadline)
            {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no sample {sample} in /metrics:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the process with SIGKILL: no shutdown at all.
    pub(crate) fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) fn terminate(mut self) -> ExitStatus {
        signal_term(self.child.id());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "meterstack did not exit within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Meterstack {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `pid`.
pub(crate) fn signal_term(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// `mosquitto_pub` at QoS 1 on `topic` of the broker on `port`, as the meter the topic names
/// (client id = meter id).
fn mosquitto_pub_cmd(port: u16, topic: &str) -> Command {
    let mut cmd = mosquitto_pub_anon(port, topic);
    cmd.args(["-i", topic.split('/').nth(1).unwrap_or("none")]);
    cmd
}

/// `mosquitto_pub` at QoS 1 on `topic`, without a client id.
pub(crate) fn mosquitto_pub_anon(port: u16, topic: &str) -> Command {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-t",
        topic,
    ]);
    cmd
}

/// Starts `mosquitto_pub -l` publishing each of `messages` as one MQTT message on one
/// connection; a thread feeds its stdin. The caller waits for it, or kills it.
pub(crate) fn spawn_mosquitto_pub_lines(
    port: u16,
    topic: &str,
    client_id: &str,
    messages: Vec<String>,
) -> Child {
    let mut child = mosquitto_pub_anon(port, topic)
        .args(["-i", client_id, "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::spawn(move || {
        for m in messages {
            assert!(
                !m.contains('\n'),
                "a line-mode message cannot contain a newline"
            );
            // Fails only if mosquitto_pub was killed: then the rest does not matter.
            if writeln!(stdin, "{m}").is_err() {
                return;
            }
        }
    });
    child
}

/// `n` readings as wire-format lines, stamped now, with `seq` and `import_wh` 0..n.
pub(crate) fn reading_lines(n: u64) -> Vec<String> {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (0..n)
        .map(|i| format!(r#"{{"ts":"{ts}","import_wh":{i},"seq":{i}}}"#))
        .collect()
}

/// One `mosquitto_pub -l` per meter `{prefix}-0…`, each publishing `per_meter` readings.
pub(crate) fn spawn_fleet(port: u16, prefix: &str, meters: u64, per_meter: u64) -> Vec<Child> {
    (0..meters)
        .map(|m| {
            let id = format!("{prefix}-{m}");
            spawn_mosquitto_pub_lines(
                port,
                &format!("meters/{id}/readings"),
                &id,
                reading_lines(per_meter),
            )
        })
        .collect()
}

/// Publishes each of `messages` as one MQTT message (`mosquitto_pub -l`) on one connection;
/// returns whether mosquitto_pub reported success.
pub(crate) fn mosquitto_pub_lines(
    port: u16,
    topic: &str,
    client_id: &str,
    messages: &[String],
) -> bool {
    spawn_mosquitto_pub_lines(port, topic, client_id, messages.to_vec())
        .wait()
        .expect("mosquitto_pub exits")
        .success()
}

/// Publishes one message from a file (for payloads that are not one line).
pub(crate) fn mosquitto_pub_file(port: u16, topic: &str, file: &Path) -> bool {
    mosquitto_pub_cmd(port, topic)
        .arg("-f")
        .arg(file)
        .status()
        .expect("mosquitto_pub is installed")
        .success()
}

/// Publishes one message; returns whether the broker acknowledged it.
pub(crate) fn mosquitto_pub(port: u16, topic: &str, message: &str) -> bool {
    mosquitto_pub_cmd(port, topic)
        .args(["-m", message])
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub is installed")
        .success()
}

/// A fresh PostgreSQL database on the server `scripts/test` started; its URL.
pub(crate) fn postgres_database() -> String {
    let admin = std::env::var("METERSTACK_TEST_POSTGRES").expect(
        "METERSTACK_TEST_POSTGRES=postgres://… must name a PostgreSQL server (scripts/test starts one)",
    );
    let name = format!(
        "it_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let status = Command::new("psql")
        .args([
            admin.as_str(),
            "-q",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .status()
        .expect("psql is installed");
    assert!(status.success());
    let base = admin
        .rsplit_once('/')
        .map(|(b, _)| b)
        .expect("a database in the URL");
    format!("{base}/{name}")
}

/// A fresh bucket on the S3-compatible server `scripts/test` started: the `METERSTACK__LAKE__STORE__…`
/// settings of a lake in it.
pub(crate) fn s3_lake_env() -> Vec<(String, String)> {
    let endpoint = std::env::var("METERSTACK_TEST_S3").expect(
        "METERSTACK_TEST_S3=http://host:port must name an S3-compatible server (scripts/test starts one)",
    );
    let bucket = format!(
        "it{}",
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    // The test server takes unsigned bucket creation.
    let status = Command::new("curl")
        .args(["-sSf", "-X", "PUT", &format!("{endpoint}/{bucket}")])
        .stdout(Stdio::null())
        .status()
        .expect("curl is installed");
    assert!(
        status.success(),
        "cannot create bucket {bucket} at {endpoint}"
    );
    [
        ("KIND", "s3"),
        ("BUCKET", bucket.as_str()),
        ("ENDPOINT", endpoint.as_str()),
        ("REGION", "us-east-1"),
        ("ACCESS_KEY_ID", "test"),
        ("SECRET_ACCESS_KEY", "test"),
        ("PATH_STYLE", "true"),
        ("ALLOW_HTTP", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("METERSTACK__LAKE__STORE__{k}"), v.to_owned()))
    .collect()
}

/// The Kafka-protocol broker of this test run (`scripts/test` starts one).
pub(crate) fn kafka_brokers() -> String {
    std::env::var("METERSTACK_TEST_KAFKA")
        .expect("METERSTACK_TEST_KAFKA=HOST:PORT must name a Kafka-protocol broker (scripts/test starts one)")
}

/// Writes a config file for a meterstack process on the test Kafka, with topic names unique to
/// this test; returns its path.
pub(crate) fn kafka_config(dir: &Path, suffix: &str) -> std::path::PathBuf {
    let path = dir.join("kafka.toml");
    let topics = [
        "readings_raw",
        "readings_clean",
        "readings_rejected",
        "aggregates",
        "alerts",
        "meter_events",
    ]
    .iter()
    .map(|t| format!("{t} = \"{}.{suffix}\"", t.replace('_', ".")))
    .collect::<Vec<_>>()
    .join("\n");
    let toml = format!(
        "[bus]\nbackend = \"kafka\"\npartitions = 4\n[bus.topics]\n{topics}\n[bus.kafka]\nbrokers = \"{}\"\n\
         [bus.kafka.properties]\n\
         # tansu 0.6 returns nothing for a fetch that starts inside a record batch.\n\
         \"batch.num.messages\" = \"1\"\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n",
        kafka_brokers()
    );
    std::fs::write(&path, toml).expect("write kafka config");
    path
}

/// Reads every record of `topic` with a Kafka client that is not meterstack (PyPI's
/// confluent-kafka), until `at_least` records arrived and the topic is quiet, or 60 s pass.
/// Returns one JSON object per record: key, headers, value (text).
pub(crate) fn kafka_read_all(topic: &str, at_least: usize) -> Vec<serde_json::Value> {
    let script = r#"
import json, sys, time, uuid
from confluent_kafka import Consumer
brokers, topic, at_least = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({"bootstrap.servers": brokers, "group.id": "plain-" + uuid.uuid4().hex,
              "auto.offset.reset": "earliest", "enable.auto.commit": False})
c.subscribe([topic])
out, deadline, quiet = [], time.time() + 60, 0
while time.time() < deadline:
    m = c.poll(1.0)
    if m is None:
        quiet += 1
        if len(out) >= at_least and quiet >= 3:
            break
        continue
    if m.error():
        continue
    quiet = 0
    out.append({"key": (m.key() or b"").decode(), "partition": m.partition(), "offset": m.offset(),
                "headers": {k: v.decode() for k, v in (m.headers() or [])},
                "value": (m.value() or b"").decode("utf-8", "replace")})
c.close()
for o in out:
    print(json.dumps(o))
"#;
    let out = Command::new("python3")
        .args(["-c", script, &kafka_brokers(), topic, &at_least.to_string()])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "confluent-kafka consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}
