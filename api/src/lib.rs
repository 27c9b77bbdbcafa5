//! The HTTP API: health, Prometheus metrics and SQL over HTTP.
//!
//! In: HTTP requests; the lake's query engine ([`meterstack_lake::query::Lake`]); the process
//! [`Health`]; a renderer of the metrics registry.
//! Out: JSON responses. Every error leaves through [`ApiError`]: a status, a stable code and a
//! human message, never an internal detail.

mod config;
mod error;
pub mod query;

pub use config::{HttpConfig, QueryConfig};
pub use error::ApiError;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use meterstack_core::health::Health;
use meterstack_core::metrics::HTTP_REQUESTS;
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
    /// Query limits.
    pub query: QueryConfig,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("lake", &self.lake)
            .field("health", &self.health)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

/// The API's routes.
pub fn router(state: AppState, config: &HttpConfig) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if state.lake.is_some() {
        router = router.route("/api/v1/query", post(query::handle));
    }
    router
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes))
        .layer(middleware::from_fn(count_requests))
        .with_state(state)
}

/// A bound HTTP server, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl HttpConfig {
    /// Binds the listen address (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(&self, state: AppState) -> std::io::Result<Server> {
        let listener = TcpListener::bind(self.listen).await?;
        Ok(Server {
            listener,
            router: router(state, self),
        })
    }
}

impl Server {
    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests.
    pub async fn serve(self, shutdown: CancellationToken) -> std::io::Result<()> {
        info!(addr = %self.local_addr()?, "HTTP API listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint in this process (POST /api/v1/query needs the api role)",
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
