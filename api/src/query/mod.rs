//! `POST /api/v1/query`: SQL over the lake, and `GET /api/v1/meters/{id}/readings`.
//!
//! Request: `{"sql": "SELECT … WHERE meter_id = $1", "params": ["m-1"], "format": "csv"}`
//! (`params` an array for `$1…` or an object for `$name`; `format` optional). The format is
//! `format` in the body, else `?format=`, else the `Accept` header, else JSON: `json` (an
//! array of objects, nulls explicit, timestamps RFC 3339), `jsonl`, `csv`, `arrow` (IPC
//! stream), `parquet`.
//!
//! Results stream. The first MiB is held back, so a query that fails early (most do) gets a
//! proper status: 400 `invalid_request` (the body is not the JSON above), 413
//! `body_too_large`, 400 `invalid_query` (syntax, unknown table or column, a statement that is
//! not a read-only query, a type error, a bad parameter), 400 `result_too_large`, 504
//! `query_timeout`, 503 `resources_exhausted` (the per-query memory limit), 503 `busy` (no
//! query slot within the timeout), 503 `lake_changed` (a file the query listed was replaced
//! or deleted meanwhile; run it again), 500 `query_failed` (the server's fault; details in its
//! log). A result that fails after its first MiB was sent is cut off: the response ends
//! without its final chunk, which every HTTP client reports as an error.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::error::DataFusionError;
use futures::StreamExt;
use meterstack_core::metrics::{QUERIES, QUERIES_RUNNING};
use meterstack_lake::query::{Format, ResultStream, params_from_json};
use serde::Deserialize;
use tracing::{debug, error, warn};

use crate::{ApiError, AppState};

/// Bytes of a result held back before the response starts.
const HOLD_BACK: usize = 1024 * 1024;

/// The request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One read-only SQL statement.
    pub sql: String,
    /// Values of `$1, $2, …` (an array) or `$name` (an object).
    #[serde(default)]
    pub params: serde_json::Value,
    /// The result format.
    #[serde(default)]
    pub format: Option<String>,
}

/// `?format=`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FormatParam {
    format: Option<String>,
}

fn choose_format(
    named: Option<&str>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Format, ApiError> {
    if let Some(name) = named.or(query) {
        return Format::parse(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("unknown format {name:?}; use json, jsonl, csv, arrow or parquet"),
            )
        });
    }
    Ok(headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::from_accept)
        .unwrap_or_default())
}

/// The handler of `POST /api/v1/query`.
pub async fn handle(
    State(state): State<AppState>,
    Query(param): Query<FormatParam>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = async {
        let body = body.map_err(|rejection| {
            let status = rejection.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "invalid_request"
            };
            ApiError::new(status, code, rejection.body_text())
        })?;
        // The body is JSON whatever Content-Type says, so `curl -d` works as is.
        let request: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("the body must be JSON like {{\"sql\": \"SELECT …\"}}: {e}"),
            )
        })?;
        let format = choose_format(request.format.as_deref(), param.format.as_deref(), &headers)?;
        if request.sql.trim().is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "`sql` is empty",
            ));
        }
        let params = params_from_json(&request.params).map_err(|e| classify(&e))?;
        respond(&state, &request.sql, params, format).await
    }
    .await;
    finish(result, started)
}

fn finish(result: Result<Response, ApiError>, started: Instant) -> Response {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) if e.status.is_client_error() => "invalid",
        Err(_) => "error",
    };
    metrics::counter!(QUERIES, "outcome" => outcome).increment(1);
    debug!(
        outcome,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "query answered"
    );
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Runs the query and streams its result, holding back the first MiB (see the module docs).
async fn respond(
    state: &AppState,
    sql: &str,
    params: Option<ParamValues>,
    format: Format,
) -> Result<Response, ApiError> {
    let Some(lake) = &state.lake else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_served",
            "this process does not run the api role",
        ));
    };
    let _running = Running::start();
    let mut result = lake
        .query(sql, params, format)
        .await
        .map_err(|e| classify(&e))?;
    let mut head = Vec::new();
    let mut held = 0;
    loop {
        match result.next_chunk().await {
            None => {
                let body: Vec<u8> = head.concat();
                return Ok(([(CONTENT_TYPE, format.media_type())], body).into_response());
            }
            Some(Err(e)) => return Err(classify(&e)),
            Some(Ok(chunk)) => {
                held += chunk.len();
                head.push(chunk);
                if held >= HOLD_BACK {
                    break;
                }
            }
        }
    }
    let rest = futures::stream::unfold(result, |mut r: ResultStream| async move {
        let chunk = r.next_chunk().await?;
        Some((
            chunk.map_err(|e| {
                metrics::counter!(QUERIES, "outcome" => "cut_off").increment(1);
                warn!(error = %e, "query result cut off after streaming began");
                std::io::Error::other(e.to_string())
            }),
            r,
        ))
    });
    let body = futures::stream::iter(head.into_iter().map(Ok::<_, std::io::Error>)).chain(rest);
    Ok((
        [(CONTENT_TYPE, format.media_type())],
        Body::from_stream(body),
    )
        .into_response())
}

/// Counts a query in `meterstack_queries_running` while it lives.
struct Running(metrics::Gauge);

impl Running {
    fn start() -> Self {
        let gauge = metrics::gauge!(QUERIES_RUNNING);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Sorts a lake error into the caller's fault or ours.
fn classify(e: &meterstack_lake::Error) -> ApiError {
    use meterstack_lake::Error as E;
    match e {
        E::Query(e) => classify_engine(e),
        E::Timeout(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "query_timeout", e.to_string()),
        E::TooLarge(_) => ApiError::new(StatusCode::BAD_REQUEST, "result_too_large", e.to_string()),
        E::Busy(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()),
        E::Changed(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "lake_changed",
            e.to_string(),
        ),
        E::Params(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string()),
        other => internal(other),
    }
}

/// Sorts a query engine error into the caller's fault or ours.
fn classify_engine(e: &DataFusionError) -> ApiError {
    use arrow::error::ArrowError as A;
    let root = e.find_root();
    let callers_fault = match root {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Execution(_) => true,
        DataFusionError::ArrowError(arrow, _) => matches!(
            arrow.as_ref(),
            A::CastError(_)
                | A::ParseError(_)
                | A::DivideByZero
                | A::ArithmeticOverflow(_)
                | A::InvalidArgumentError(_)
                | A::ComputeError(_)
        ),
        _ => false,
    };
    if callers_fault {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", root.to_string());
    }
    match root {
        DataFusionError::ResourcesExhausted(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "resources_exhausted",
            "the query needs more memory than one query may use (http.query.memory_limit_bytes); narrow it",
        ),
        _ => internal(e),
    }
}

fn internal(e: &dyn std::fmt::Display) -> ApiError {
    error!(error = %e, "query failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "query_failed",
        "the query failed on the server; its log has the details",
    )
}

/// `?from&to&resolution&format` of `GET /api/v1/meters/{id}/readings`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReadingsParams {
    from: Option<String>,
    to: Option<String>,
    resolution: Option<String>,
    format: Option<String>,
}

/// A query-string instant: RFC 3339, or a date (its UTC midnight).
pub(crate) fn instant(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        })
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("`{name}` must be an RFC 3339 time or a date (YYYY-MM-DD), not {value:?}"),
            )
        })
}

/// The handler of `GET /api/v1/meters/{id}/readings`: trusted readings of one meter over
/// `[from, to)` at `resolution` `15m` (default; interval rows with quality), `1h` or `1d`.
/// `to` defaults to now, `from` to one day, one week or 90 days before `to`.
pub async fn meter_readings(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(p): Query<ReadingsParams>,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let result = async {
        let meter = meterstack_core::MeterId::new(&id).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
        })?;
        let (table, columns, span) = match p.resolution.as_deref().unwrap_or("15m") {
            "15m" => (
                "readings",
                "meter_id, ts, energy_wh, export_wh, import_register_wh, power_w, voltage_v, quality, rule",
                TimeDelta::days(1),
            ),
            "1h" => ("readings_hourly", WINDOW_COLUMNS, TimeDelta::days(7)),
            "1d" => ("readings_daily", WINDOW_COLUMNS, TimeDelta::days(90)),
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    format!("`resolution` must be 15m, 1h or 1d, not {other:?}"),
                ));
            }
        };
        let to = p.to.as_deref().map(|v| instant("to", v)).transpose()?.unwrap_or_else(Utc::now);
        let from = p.from.as_deref().map(|v| instant("from", v)).transpose()?.unwrap_or(to - span);
        if from >= to {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "`from` must be before `to`",
            ));
        }
        let format = choose_format(p.format.as_deref(), None, &headers)?;
        // The date predicates prune partitions; the time predicates are exact.
        let sql = format!(
            "SELECT {columns} FROM {table} WHERE meter_id = $1 AND ts >= $2 AND ts < $3 \
             AND date >= $4 AND date <= $5 ORDER BY ts"
        );
        let ts = |t: DateTime<Utc>| {
            ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
        };
        let date = |t: DateTime<Utc>| ScalarValue::Utf8(Some(t.format("%Y-%m-%d").to_string()));
        let params = ParamValues::from(vec![
            ScalarValue::Utf8(Some(meter.as_str().to_owned())),
            ts(from),
            ts(to),
            date(from),
            date(to),
        ]);
        respond(&state, &sql, Some(params), format).await
    }
    .await;
    finish(result, started)
}

const WINDOW_COLUMNS: &str = "meter_id, ts, energy_wh, export_wh, peak_demand_w, max_power_w, \
     min_voltage_v, max_voltage_v, expected_intervals, measured_intervals, estimated_intervals";
