//! A `meterstack up --dev` child process on loopback, as the benchmarks start it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A running server.
pub(crate) struct Server {
    child: tokio::process::Child,
    pub(crate) pid: u32,
    /// MQTT `HOST:PORT`.
    pub(crate) mqtt: String,
    /// `http://HOST:PORT`.
    pub(crate) http: String,
    pub(crate) data_dir: PathBuf,
    key: String,
    agent: ureq::Agent,
}

impl Server {
    /// Starts `meterstack up --dev` with its data in `data_dir` and `env` added.
    pub(crate) async fn start(data_dir: &Path, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .args(["up", "--dev", "--data-dir"])
            .arg(data_dir)
            .env("METERSTACK__MQTT__LISTEN", "127.0.0.1:0")
            .env("METERSTACK__HTTP__LISTEN", "127.0.0.1:0")
            // The SQL set runs over backfilled history: no retention, and no compaction
            // rewriting the raw files under the queries being timed.
            .env("METERSTACK__LAKE__ETL__RETENTION__RAW_DAYS", "0")
            .env("METERSTACK__LAKE__ETL__COMPACT_AFTER", "36500d")
            .env("RUST_LOG", "warn,rumqttd=off")
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow::anyhow!("the server exited"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                let line = lines
                    .next_line()
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the server exited before it was ready"))?;
                if line.starts_with("meterstack ready") {
                    return Ok::<_, anyhow::Error>(line);
                }
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("the server did not start within 120 s"))??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let field = |name: &str| {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("no {name} in {ready:?}"))
        };
        let key = std::fs::read_to_string(data_dir.join("admin-api-key"))?
            .trim()
            .to_owned();
        Ok(Self {
            child,
            pid,
            mqtt: field("mqtt=")?,
            http: field("http=")?,
            data_dir: data_dir.to_owned(),
            key,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(300)))
                .build()
                .into(),
        })
    }

    /// Resident memory, bytes.
    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        rss_bytes(self.pid)
    }

    /// Runs `sql` through `POST /api/v1/query`; returns the rows and the time it took.
    pub(crate) async fn query(&self, sql: &str) -> anyhow::Result<(Value, Duration)> {
        self.post_timed("/api/v1/query", &serde_json::json!({ "sql": sql }))
            .await
    }

    /// `POST path` with a JSON body and the admin key; returns the JSON answer.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self.post_timed(path, body).await?.0)
    }

    /// `POST path` with a JSON body and the admin key; returns the JSON answer and the time
    /// from sending to the end of the answer.
    async fn post_timed(&self, path: &str, body: &Value) -> anyhow::Result<(Value, Duration)> {
        let (agent, url, key, body) = (
            self.agent.clone(),
            format!("{}{path}", self.http),
            self.key.clone(),
            body.to_string(),
        );
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut resp = agent
                .post(&url)
                .header("Authorization", format!("Bearer {key}"))
                .header("Content-Type", "application/json")
                .send(&body)?;
            let text = resp.body_mut().read_to_string()?;
            let took = started.elapsed();
            anyhow::ensure!(
                resp.status().is_success(),
                "{url} failed ({}): {text}",
                resp.status()
            );
            Ok((serde_json::from_str(&text)?, took))
        })
        .await?
    }

    /// `count(*)` of `raw_readings` with an optional WHERE clause.
    pub(crate) async fn count(&self, filter: &str) -> anyhow::Result<u64> {
        let (rows, _) = self
            .query(&format!("SELECT count(*) AS n FROM raw_readings {filter}"))
            .await?;
        rows[0]["n"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no count in {rows}"))
    }

    /// The admin API key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The value of one Prometheus sample (`name` or `name{labels}`), 0 if absent.
    pub(crate) async fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let (agent, url, key) = (
            self.agent.clone(),
            format!("{}/metrics", self.http),
            self.key.clone(),
        );
        let text = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            let mut resp = agent
                .get(&url)
                .header("Authorization", format!("Bearer {key}"))
                .call()?;
            Ok(resp.body_mut().read_to_string()?)
        })
        .await??;
        Ok(text
            .lines()
            .find_map(|l| {
                l.strip_prefix(sample)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0))
    }

    /// Stops the server (SIGKILL: the benchmarks keep nothing).
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Resident memory of process `pid`, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(kib * 1024)
}

/// Raises this process's open-file limit to `need` (its children inherit it), or explains.
pub(crate) fn raise_nofile(need: u64) -> anyhow::Result<u64> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if hard < need {
        // Only a privileged user may raise the hard limit.
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, need, need);
    }
    Ok(rlimit::increase_nofile_limit(need).unwrap_or(soft))
}
