//! `meterstack up`: every role in one process.
//!
//! Start order: bus → lake sink → HTTP API → MQTT broker and bridge; the process reports ready
//! once all serve. Shutdown (SIGINT/SIGTERM) runs in data-flow order: the MQTT gate closes
//! every meter connection, the bridge drains the broker onto the bus, the sink drains the bus
//! and flushes Parquet, then the API stops.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use meterstack_api::AppState;
use meterstack_core::health::Health;
use meterstack_lake::query::Lake;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::telemetry;

/// Runs every role until SIGINT or SIGTERM, then shuts down without losing accepted readings.
pub(crate) async fn up(config: Config) -> anyhow::Result<()> {
    let metrics = telemetry::init_metrics()?;
    let health = Arc::new(Health::default());
    for component in ["raw_sink", "http", "mqtt"] {
        health.register(component);
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let raw_topic = config.bus.topics.readings_raw.clone();
    let bus = config.bus.build(&config.data_dir)?;
    let store = config.lake.build(&config.data_dir)?;
    let lake = Lake::new(store.clone())?;

    let sink = config
        .lake
        .raw_sink
        .build(&config.ingest, bus.as_ref(), &raw_topic, store)
        .await?;
    let sink_stop = CancellationToken::new();
    let sink_task = tokio::spawn(sink.run(sink_stop.clone()));
    health.set_ready("raw_sink", true);

    let state = AppState {
        lake,
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
    let http_stop = CancellationToken::new();
    let http_task = tokio::spawn(server.serve(http_stop.clone()));
    health.set_ready("http", true);

    let broker = config.mqtt.start(bus.clone(), &raw_topic).await?;
    let mqtt_addr = broker.addr;
    let broker_stop = CancellationToken::new();
    let mut broker_task = tokio::spawn(broker.run(broker_stop.clone()));
    health.set_ready("mqtt", true);

    announce(mqtt_addr, http_addr, &config);

    let mut sink_task = sink_task;
    let mut http_task = http_task;
    let failed = tokio::select! {
        signal = shutdown_signal() => {
            info!(signal, "shutting down: draining the broker, the bus and the sink");
            false
        }
        r = &mut sink_task => { log_exit("raw sink", r); true }
        r = &mut http_task => { log_exit("HTTP API", r.map(|r| r.map_err(anyhow::Error::from))); true }
        r = &mut broker_task => { log_exit("MQTT broker", r.map(Ok::<(), anyhow::Error>)); true }
    };
    health.set_draining();
    // A second signal skips the graceful shutdown.
    tokio::spawn(async {
        let signal = shutdown_signal().await;
        warn!(signal, "second signal: exiting without draining");
        std::process::exit(130);
    });

    broker_stop.cancel();
    if !broker_task.is_finished() {
        broker_task.await.context("MQTT broker task")?;
    }
    sink_stop.cancel();
    if !sink_task.is_finished() {
        sink_task.await.context("raw sink task")??;
    }
    if let Err(e) = bus.flush().await {
        error!(error = %e, "bus flush at shutdown failed");
    }
    http_stop.cancel();
    if !http_task.is_finished() {
        http_task.await.context("HTTP task")??;
    }
    info!("shutdown complete");
    anyhow::ensure!(!failed, "a component stopped unexpectedly");
    Ok(())
}

fn log_exit<E: std::fmt::Display>(what: &str, r: Result<Result<(), E>, tokio::task::JoinError>) {
    match r {
        Ok(Ok(())) => error!(component = what, "stopped unexpectedly"),
        Ok(Err(e)) => error!(component = what, error = %e, "failed"),
        Err(e) => error!(component = what, error = %e, "panicked"),
    }
}

#[allow(clippy::print_stdout)]
fn announce(mqtt: SocketAddr, http: SocketAddr, config: &Config) {
    let host = |addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    };
    info!(%mqtt, %http, data_dir = %config.data_dir.display(), "meterstack is up");
    // One machine-readable line on stdout, for scripts and tests.
    println!(
        "meterstack ready mqtt={} http=http://{}",
        host(mqtt),
        host(http)
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
