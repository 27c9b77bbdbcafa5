//! The HTTP API: health, Prometheus metrics, SQL over HTTP, the meter registry and API keys.
//!
//! In: HTTP(S) requests carrying API keys ([`auth`]); the lake's query engine
//! ([`meterstack_lake::query::Lake`]); the SQL store; the bus (commands to meters); the process
//! [`Health`]; a renderer of the metrics registry.
//! Out: JSON responses. Every error leaves through [`ApiError`]: a status, a stable code and a
//! human message, never an internal detail.

mod alerts;
pub mod auth;
mod billing;
mod config;
mod error;
mod forecasts;
mod keys;
pub mod live;
mod meters;
pub mod query;
pub mod routes;
mod subscriptions;
mod tls;

pub use config::{HttpConfig, HttpTlsConfig, QueryConfig};
pub use error::ApiError;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use axum::{Json, Router};
use meterstack_core::bus::{Bus, TopicNames};
use meterstack_core::health::Health;
use meterstack_core::metrics::HTTP_REQUESTS;
use meterstack_core::store::SqlStore;
use meterstack_lake::query::Lake;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Renders the metrics registry in Prometheus text format.
pub type MetricsRender = Arc<dyn Fn() -> String + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The lake's query engine, if this process serves queries (role `api`).
    pub lake: Option<Lake>,
    /// Readiness of the process.
    pub health: Arc<Health>,
    /// The metrics renderer.
    pub metrics: MetricsRender,
    /// The SQL store: registry and API keys.
    pub store: SqlStore,
    /// The bus, if this process has one (commands to meters are appended to it).
    pub bus: Option<Arc<dyn Bus>>,
    /// Bus topic names.
    pub topics: TopicNames,
    /// Largest request body accepted (`http.max_body_bytes`).
    pub max_body_bytes: usize,
    /// What webhook subscriptions may target, and secret rotation.
    pub webhooks: WebhookSettings,
    /// The live feed.
    pub live: live::Hub,
    /// The model registry and calendar, for forecasts `as_of` a past time (role `api`).
    pub forecasting: Option<Forecasting>,
    /// The utility's time zone and the interval length, for bills.
    pub billing: Billing,
}

/// What the bill routes need beyond the store and the lake.
#[derive(Debug, Clone, Copy)]
pub struct Billing {
    /// The utility's time zone (`billing.timezone`).
    pub tz: chrono_tz::Tz,
    /// The trusted zone's interval length (`pipeline.interval`).
    pub step: chrono::Duration,
}

/// What the forecast routes need beyond the store.
#[derive(Debug, Clone)]
pub struct Forecasting {
    /// The model registry.
    pub models: meterstack_ml::registry::ModelRegistry,
    /// The utility's calendar.
    pub calendar: meterstack_ml::Calendar,
}

/// The webhook settings the API applies to subscriptions.
#[derive(Debug, Clone, Default)]
pub struct WebhookSettings {
    /// The SSRF guard for target URLs.
    pub egress: Arc<meterstack_core::egress::EgressPolicy>,
    /// How long the previous secret keeps signing after a rotation.
    pub rotation_overlap: std::time::Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("lake", &self.lake)
            .field("health", &self.health)
            .field("store", &self.store)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

/// The page size of a list endpoint: `limit`, 1–1000, 100 by default.
pub(crate) fn page_size(limit: Option<u32>) -> u32 {
    limit.unwrap_or(100).clamp(1, 1000)
}

/// The `next` cursor of a page of `size`: the last row's, when the page is full.
pub(crate) fn next_cursor<T, C>(rows: &[T], size: u32, cursor: impl Fn(&T) -> C) -> Option<C> {
    (rows.len() == size as usize)
        .then(|| rows.last().map(cursor))
        .flatten()
}

/// The API's routes ([`routes`]): every process serves health and metrics; the data routes
/// belong to the api role (the lake is built only for it).
pub fn router(state: AppState, config: &HttpConfig) -> Router {
    let mut router = routes::process_routes();
    if state.lake.is_some() {
        router = router.merge(routes::data_routes());
    }
    router
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

/// A bound HTTP server, not yet serving.
pub struct Server {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    live: live::Hub,
}

#[async_trait::async_trait]
impl meterstack_core::component::Component for Server {
    fn name(&self) -> &'static str {
        "HTTP"
    }

    async fn run(
        self: Box<Self>,
        stop: CancellationToken,
    ) -> Result<(), meterstack_core::component::BoxError> {
        Ok((*self).serve(stop).await?)
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Why the HTTP server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address is taken or not ours.
    #[error("cannot listen for HTTP: {0}")]
    Io(#[from] std::io::Error),
    /// The certificate or key is unusable.
    #[error("HTTPS: {0}")]
    Tls(#[from] meterstack_core::tls::TlsError),
}

impl HttpConfig {
    /// Binds the listen address (port 0 picks a free port; see [`Server::local_addr`]),
    /// with TLS if `http.tls.cert` is set.
    pub async fn bind(&self, state: AppState) -> Result<Server, BindError> {
        let tls = if self.tls.enabled() {
            Some(meterstack_core::tls::server_config(
                &self.tls.cert,
                &self.tls.key,
                None,
                false,
                &[b"http/1.1"],
            )?)
        } else {
            None
        };
        let listener = TcpListener::bind(self.listen).await?;
        Ok(Server {
            listener,
            tls,
            live: state.live.clone(),
            router: router(state, self),
        })
    }
}

impl Server {
    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Whether the server speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let addr = self.local_addr()?;
        // Upgraded connections outlive the server's graceful shutdown: close them here.
        let (live, stop) = (self.live.clone(), shutdown.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            live.shutdown();
        });
        match self.tls {
            Some(config) => {
                info!(%addr, "HTTPS API listening");
                let listener = tls::TlsListener::new(self.listener, config, shutdown.clone());
                axum::serve(listener, self.router)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
            None => {
                info!(%addr, "HTTP API listening");
                axum::serve(self.listener, self.router)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint in this process (the SQL and registry endpoints need the api role)",
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let ready = state.health.is_ready();
    let body = serde_json::json!({
        "ready": ready,
        "draining": state.health.is_draining(),
        "components": state.health.components(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        (state.metrics)(),
    )
        .into_response()
}

async fn count_requests(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let class = match response.status().as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(HTTP_REQUESTS, "status" => class).increment(1);
    response
}
