//! `meterstack up` and `meterstack run --roles …`: the roles of the platform in one process.
//!
//! Roles: `broker` (MQTT gate, embedded rumqttd, bridge to `readings.raw`), `sink` (raw zone),
//! `api` (SQL over HTTP). Every process also serves `/healthz`, `/readyz` and `/metrics`.
//! `up` runs them all. Start order follows the data backwards (sink, API, then broker) so the
//! process reports ready only when a reading can complete its path. Shutdown (SIGINT/SIGTERM)
//! follows the data forwards: the MQTT gate closes every meter connection, the bridge drains
//! the broker onto the bus, the sink drains the bus and flushes Parquet, HTTP stops, and the
//! bus flushes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use meterstack_api::AppState;
use meterstack_core::health::Health;
use meterstack_lake::query::Lake;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::telemetry;

/// A role a process can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Role {
    /// MQTT gate, embedded broker and the bridge to `readings.raw`.
    Broker,
    /// The raw-zone sink: `readings.raw` → Parquet.
    Sink,
    /// SQL over HTTP (`POST /api/v1/query`).
    Api,
}

impl Role {
    pub(crate) const ALL: [Role; 3] = [Role::Broker, Role::Sink, Role::Api];
}

/// A task a role runs, and how to stop it.
struct Task {
    name: &'static str,
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Task {
    fn spawn(
        name: &'static str,
        f: impl FnOnce(CancellationToken) -> JoinHandle<anyhow::Result<()>>,
    ) -> Self {
        let stop = CancellationToken::new();
        Self {
            name,
            handle: f(stop.clone()),
            stop,
        }
    }

    /// Stops the task and waits for it; true if it ended well.
    async fn stop(self) -> bool {
        self.stop.cancel();
        report(self.name, self.handle.await)
    }
}

fn report(name: &str, result: Result<anyhow::Result<()>, JoinError>) -> bool {
    match result {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            error!(component = name, error = %format!("{e:#}"), "failed");
            false
        }
        Err(e) => {
            error!(component = name, error = %e, "panicked");
            false
        }
    }
}

/// Runs `roles` until SIGINT or SIGTERM (or until one fails), then shuts down without losing
/// accepted readings.
pub(crate) async fn run(config: Config, roles: &BTreeSet<Role>) -> anyhow::Result<()> {
    anyhow::ensure!(!roles.is_empty(), "no roles to run");
    let metrics = telemetry::init_metrics()?;
    let health = Arc::new(Health::default());
    health.register("http");
    for role in roles {
        health.register(role_name(*role));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let raw_topic = config.bus.topics.readings_raw.clone();
    // Only the broker and the sink use the bus; an api-only process must not hold the
    // embedded log's lock.
    let bus = if roles.contains(&Role::Broker) || roles.contains(&Role::Sink) {
        Some(
            config
                .bus
                .build(&config.data_dir)
                .await
                .context("cannot open the bus")?,
        )
    } else {
        None
    };
    let store = config.lake.build(&config.data_dir)?;

    // Data flows broker → sink → lake → api; tasks are listed in that order for shutdown.
    let mut tasks: Vec<Task> = Vec::new();

    let sink_task = if let (true, Some(bus)) = (roles.contains(&Role::Sink), &bus) {
        let sink = config
            .lake
            .raw_sink
            .build(&config.ingest, bus.as_ref(), &raw_topic, store.clone())
            .await?;
        health.set_ready("sink", true);
        Some(Task::spawn("raw sink", |stop| {
            tokio::spawn(async move { sink.run(stop).await.map_err(anyhow::Error::from) })
        }))
    } else {
        None
    };

    let state = AppState {
        lake: if roles.contains(&Role::Api) {
            Some(Lake::new(store)?)
        } else {
            None
        },
        health: health.clone(),
        metrics: Arc::new(move || metrics.render()),
        query: config.http.query.clone(),
    };
    let server = config
        .http
        .bind(state)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    let http_addr = server.local_addr()?;
    let http = Task::spawn("HTTP", |stop| {
        tokio::spawn(async move { server.serve(stop).await.map_err(anyhow::Error::from) })
    });
    health.set_ready("http", true);
    if roles.contains(&Role::Api) {
        health.set_ready("api", true);
    }

    let mut mqtt_addr = None;
    if let (true, Some(bus)) = (roles.contains(&Role::Broker), &bus) {
        let broker = config.mqtt.start(bus.clone(), &raw_topic).await?;
        mqtt_addr = Some(broker.addr);
        tasks.push(Task::spawn("MQTT broker", |stop| {
            tokio::spawn(async move {
                broker.run(stop).await;
                Ok(())
            })
        }));
        health.set_ready("broker", true);
    }
    tasks.extend(sink_task);
    tasks.push(http);

    announce(mqtt_addr, http_addr, roles, &config);

    // Wait for a signal, or for any task to end (which is a failure: they run until stopped).
    let watch: Vec<_> = tasks
        .iter_mut()
        .map(|t| Box::pin(async { (&mut t.handle).await }))
        .collect();
    let failed = tokio::select! {
        signal = shutdown_signal() => {
            info!(signal, "shutting down: draining the broker, the bus and the sink");
            None
        }
        (result, index, _) = futures::future::select_all(watch) => Some((index, result)),
    };
    health.set_draining();
    tokio::spawn(async {
        let signal = shutdown_signal().await;
        warn!(signal, "second signal: exiting without draining");
        std::process::exit(130);
    });

    let mut ok = true;
    if let Some((index, result)) = failed {
        let task = tasks.remove(index);
        let ended_well = report(task.name, result);
        error!(
            component = task.name,
            ended_well, "stopped unexpectedly; shutting down"
        );
        ok = false;
    }
    for task in tasks {
        ok &= task.stop().await;
    }
    // Every writer has drained: make what it appended durable (a no-op under fsync "always").
    if let Some(bus) = &bus
        && let Err(e) = bus.flush().await
    {
        error!(error = %e, "bus flush at shutdown failed");
        ok = false;
    }
    info!("shutdown complete");
    anyhow::ensure!(ok, "a component failed; see the log");
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Broker => "broker",
        Role::Sink => "sink",
        Role::Api => "api",
    }
}

#[allow(clippy::print_stdout)]
fn announce(mqtt: Option<SocketAddr>, http: SocketAddr, roles: &BTreeSet<Role>, config: &Config) {
    let host = |addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    };
    let names: Vec<&str> = roles.iter().map(|r| role_name(*r)).collect();
    info!(?mqtt, %http, roles = ?names, data_dir = %config.data_dir.display(), "meterstack is up");
    // One machine-readable line on stdout, for scripts and tests.
    let mqtt = mqtt
        .map(|a| format!(" mqtt={}", host(a)))
        .unwrap_or_default();
    println!(
        "meterstack ready{mqtt} http=http://{} roles={}",
        host(http),
        names.join(",")
    );
}

/// Waits for SIGINT or SIGTERM and names it.
pub(crate) async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}
