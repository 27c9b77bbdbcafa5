//! `POST /api/v1/query`: SQL over the lake.
//!
//! Request: `{"sql": "SELECT …"}`. Response: a JSON array with one object per row, nulls
//! explicit, timestamps in RFC 3339. Errors: 400 `invalid_request` (body is not the JSON
//! above, whatever its Content-Type), 413 `body_too_large`, 400 `invalid_query` (syntax, unknown table or column, a
//! statement that is not a read-only query, a type error), 400 `result_too_large`
//! (more than `http.query.max_rows` rows), 504 `query_timeout`, 503 `resources_exhausted`,
//! 500 `query_failed` (the server's fault; details go to its log only).

use std::time::Instant;

use arrow::json::writer::{JsonArray, WriterBuilder};
use arrow::record_batch::RecordBatch;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;
use futures::StreamExt;
use meterstack_core::metrics::QUERIES;
use serde::Deserialize;
use tracing::{debug, error};

use crate::{ApiError, AppState};

/// The request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// One read-only SQL statement.
    pub sql: String,
}

/// The handler.
pub async fn handle(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = answer(&state, body).await;
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
    match result {
        Ok(body) => ([(CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn answer(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<u8>, ApiError> {
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
    if request.sql.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "`sql` is empty",
        ));
    }
    let limit = state.query.max_rows;
    let batches = tokio::time::timeout(state.query.timeout, run(state, &request.sql, limit))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "query_timeout",
                format!(
                    "the query ran longer than {}",
                    meterstack_core::duration::format(state.query.timeout)
                ),
            )
        })??;
    to_json(&batches).map_err(|e| internal(&e))
}

async fn run(state: &AppState, sql: &str, max_rows: usize) -> Result<Vec<RecordBatch>, ApiError> {
    let Some(lake) = &state.lake else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_served",
            "this process does not run the api role",
        ));
    };
    let frame = lake.plan(sql).await.map_err(|e| match e {
        meterstack_lake::Error::Query(e) => classify(&e),
        other => internal(&other),
    })?;
    let mut stream = frame.execute_stream().await.map_err(|e| classify(&e))?;
    let mut batches = Vec::new();
    let mut rows = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| classify(&e))?;
        rows += batch.num_rows();
        if rows > max_rows {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "result_too_large",
                format!("the result has more than {max_rows} rows; add a LIMIT or aggregate"),
            ));
        }
        batches.push(batch);
    }
    Ok(batches)
}

/// Sorts a query engine error into the caller's fault or ours.
fn classify(e: &DataFusionError) -> ApiError {
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
            "the query needs more memory than is available; narrow it",
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

/// Rows as a JSON array of objects, nulls explicit.
fn to_json(batches: &[RecordBatch]) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let mut out = writer.into_inner();
    if out.is_empty() {
        out.extend_from_slice(b"[]");
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
