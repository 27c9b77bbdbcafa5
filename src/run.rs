//! `meterstack up` and `meterstack run --roles …`: the roles of the platform in one process.
//!
//! Roles: `broker` (MQTT gate, embedded rumqttd, bridge to `readings.raw`), `sink` (raw zone),
//! `pipeline` (validation, intervals, windows, alerts), `etl` (raw → trusted zone), `alerts`
//! (alert store, webhook delivery), `ml` (training, forecasts), `api` (SQL over HTTP, the REST
//! API, the live feed). Every process also serves `/healthz`, `/readyz` and `/metrics`.
//! `up` runs them all. Start order follows the data backwards (sink, API, then broker) so the
//! process reports ready only when a reading can complete its path. Shutdown (SIGINT/SIGTERM)
//! follows the data forwards: the MQTT gate closes every meter connection, the bridge drains
//! the broker onto the bus, the sink drains the bus and flushes Parquet, HTTP stops, and the
//! bus flushes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use meterstack_api::AppState;
use meterstack_core::component::{Component, Context};
use meterstack_core::health::Health;
use meterstack_core::store::SqlStore;
use meterstack_core::store::keys::Role as ApiRole;
use meterstack_lake::query::Lake;
use meterstack_pipeline::sinks::alerts::AlertRecorder;
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
    /// Stream processing: `readings.raw` → clean readings, aggregates, alerts.
    Pipeline,
    /// The ETL raw → trusted zone, with compaction and retention, on `lake.etl.schedule`
    /// (run it in one process only).
    Etl,
    /// SQL over HTTP (`POST /api/v1/query`).
    Api,
    /// The alert store and alert delivery: the `alerts` topic's lifecycle kept in the SQL
    /// store (`/api/v1/alerts`), webhook delivery of its events, and reminders.
    Alerts,
    /// Forecasting: retrains on `ml.retrain_after`, forecasts every meter after each ETL run
    /// into the SQL store (run it in one process only).
    Ml,
}

impl Role {
    pub(crate) const ALL: [Role; 7] = [
        Role::Broker,
        Role::Sink,
        Role::Pipeline,
        Role::Etl,
        Role::Api,
        Role::Alerts,
        Role::Ml,
    ];
}

/// A task a role runs, and how to stop it.
struct Task {
    name: &'static str,
    stop: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Task {
    /// Runs `component` until its own stop signal.
    fn spawn(component: Box<dyn Component>) -> Self {
        let stop = CancellationToken::new();
        let name = component.name();
        let token = stop.clone();
        Self {
            name,
            handle: tokio::spawn(async move {
                component.run(token).await.map_err(|e| anyhow::anyhow!(e))
            }),
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
    // Every meter connection takes three descriptors (see the gate): use what the system
    // allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) if roles.contains(&Role::Broker) && n / 3 < config.mqtt.max_connections as u64 => {
            warn!(
                open_files = n,
                meters = n / 3,
                max_connections = config.mqtt.max_connections,
                "the open-file limit holds fewer meter connections than mqtt.max_connections (each takes three descriptors); raise it (e.g. systemd LimitNOFILE)"
            );
        }
        Ok(n) => info!(open_files = n, "open-file limit"),
        Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
    }
    let health = Arc::new(Health::default());
    health.register("http");
    for role in roles {
        health.register(role_name(*role));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let store = config
        .store
        .build(&config.data_dir)
        .await
        .context("cannot open the SQL store")?;
    // The broker and the sink use the bus, and the API (commands to meters) when the bus is
    // shared; an api-only process must not hold the embedded log's lock.
    let needs_bus = roles.contains(&Role::Broker)
        || roles.contains(&Role::Sink)
        || roles.contains(&Role::Pipeline)
        || roles.contains(&Role::Alerts)
        || config.bus.backend == meterstack_core::bus::BusBackend::Kafka;
    let bus = if needs_bus {
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
    let ctx = Context {
        bus,
        topics: config.bus.topics.clone(),
        objects: config.lake.build(&config.data_dir)?,
        store,
        health: health.clone(),
    };
    bootstrap_admin_key(&ctx.store, &config.data_dir).await?;

    // Each role's components, built from their config and the one context. Data flows
    // broker → pipeline → sink → lake → api; the list is in that order for shutdown.
    let mut mqtt_addrs = None;
    let mut components: Vec<Box<dyn Component>> = Vec::new();
    for role in [
        Role::Broker,
        Role::Alerts,
        Role::Ml,
        Role::Etl,
        Role::Pipeline,
        Role::Sink,
    ] {
        if !roles.contains(&role) {
            continue;
        }
        match role {
            Role::Broker => {
                let broker = config.mqtt.start(&ctx, config.dev).await?;
                mqtt_addrs = Some(broker.addrs);
                components.push(Box::new(broker));
            }
            Role::Alerts => {
                components.push(Box::new(AlertRecorder::build(&ctx)?));
                let dispatcher = config
                    .webhooks
                    .build(&ctx)
                    .context("cannot start webhook delivery")?;
                components.push(Box::new(dispatcher));
            }
            Role::Etl => {
                components.push(Box::new(config.lake.etl.component(&config.pipeline, &ctx)))
            }
            Role::Ml => components.push(Box::new(
                config
                    .ml
                    .component(&config.http.query, &ctx)
                    .context("cannot start forecasting")?,
            )),
            Role::Pipeline => components.push(Box::new(
                config
                    .pipeline
                    .build(&ctx)
                    .await
                    .context("cannot start the pipeline")?,
            )),
            Role::Sink => components.push(Box::new(
                config.lake.raw_sink.build(&config.ingest, &ctx).await?,
            )),
            Role::Api => {}
        }
        health.set_ready(role_name(role), true);
    }

    let state = AppState {
        lake: if roles.contains(&Role::Api) {
            Some(
                Lake::new(ctx.objects.clone(), config.http.query.clone())?
                    .with_store(ctx.store.clone()),
            )
        } else {
            None
        },
        health: health.clone(),
        metrics: Arc::new(move || metrics.render()),
        store: ctx.store.clone(),
        bus: ctx.bus.clone(),
        topics: ctx.topics.clone(),
        max_body_bytes: config.http.max_body_bytes,
        webhooks: meterstack_api::WebhookSettings {
            egress: Arc::new(config.webhooks.egress()),
            rotation_overlap: config.webhooks.rotation_overlap,
        },
        live: meterstack_api::live::Hub::new(
            config.http.live.clone(),
            ctx.bus.clone(),
            ctx.topics.clone(),
            ctx.store.clone(),
            config.pipeline.interval,
        ),
        forecasting: if roles.contains(&Role::Api) {
            Some(meterstack_api::Forecasting {
                models: meterstack_ml::registry::ModelRegistry::new(ctx.objects.clone()),
                calendar: meterstack_ml::Calendar::new(&config.ml.calendar)
                    .map_err(anyhow::Error::msg)?,
            })
        } else {
            None
        },
        billing: meterstack_api::Billing {
            tz: config.billing.tz().map_err(anyhow::Error::msg)?,
            step: chrono::Duration::from_std(config.pipeline.interval)?,
        },
    };
    let server = config
        .http
        .bind(state)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
    let http_addr = server.local_addr()?;
    let https = server.is_tls();
    components.push(Box::new(server));
    health.set_ready("http", true);
    if roles.contains(&Role::Api) {
        health.set_ready("api", true);
    }
    let mut tasks: Vec<Task> = components.into_iter().map(Task::spawn).collect();

    announce(mqtt_addrs, http_addr, https, roles, &config);

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
    if let Some(bus) = &ctx.bus
        && let Err(e) = bus.flush().await
    {
        error!(error = %e, "bus flush at shutdown failed");
        ok = false;
    }
    ctx.store.close().await;
    info!("shutdown complete");
    anyhow::ensure!(ok, "a component failed; see the log");
    Ok(())
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Broker => "broker",
        Role::Sink => "sink",
        Role::Pipeline => "pipeline",
        Role::Etl => "etl",
        Role::Api => "api",
        Role::Alerts => "alerts",
        Role::Ml => "ml",
    }
}

/// On the first start, creates an admin API key, prints it once and writes it to
/// `<data-dir>/admin-api-key` (mode 0600). Later starts find an admin key and do nothing.
#[allow(clippy::print_stdout)]
async fn bootstrap_admin_key(store: &SqlStore, data_dir: &Path) -> anyhow::Result<()> {
    if store.has_admin_key().await? {
        return Ok(());
    }
    let (key, plaintext) = store
        .create_api_key(ApiRole::Admin, "created on first start")
        .await?;
    let path = data_dir.join("admin-api-key");
    meterstack_core::files::write_synced(&path, &format!("{plaintext}\n"), true)
        .with_context(|| format!("cannot write {}", path.display()))?;
    warn!(key_id = %key.key_id, path = %path.display(), "created the first admin API key");
    println!(
        "meterstack admin API key (shown once; also in {}): {plaintext}",
        path.display()
    );
    Ok(())
}

#[allow(clippy::print_stdout)]
fn announce(
    mqtt: Option<meterstack_broker::Addresses>,
    http: SocketAddr,
    https: bool,
    roles: &BTreeSet<Role>,
    config: &Config,
) {
    let host = |addr: SocketAddr| {
        if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        }
    };
    let names: Vec<&str> = roles.iter().map(|r| role_name(*r)).collect();
    info!(?mqtt, %http, https, roles = ?names, data_dir = %config.data_dir.display(), "meterstack is up");
    // One machine-readable line on stdout, for scripts and tests.
    let mqtt = mqtt.map_or(String::new(), |a| {
        let tcp = a
            .tcp
            .map(|t| format!(" mqtt={}", host(t)))
            .unwrap_or_default();
        let tls = a
            .tls
            .map(|t| format!(" mqtts={}", host(t)))
            .unwrap_or_default();
        format!("{tcp}{tls}")
    });
    let scheme = if https { "https" } else { "http" };
    if config.dev {
        warn!("DEVELOPMENT MODE (--dev): meters are accepted WITHOUT CREDENTIALS");
    }
    println!(
        "meterstack ready{mqtt} http={scheme}://{} roles={}{}",
        host(http),
        names.join(","),
        if config.dev { " dev=true" } else { "" }
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
