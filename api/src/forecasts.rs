//! Forecasts for the dashboard: `GET /api/v1/meters/{id}/forecast`, `GET
//! /api/v1/feeders/{id}/forecast` and `GET /api/v1/models`.
//!
//! Without `as_of`, the answer is the stored forecast (the `ml` role's newest). With
//! `as_of=T`, it is what meterstack would have forecast at T — the newest registered model
//! whose training data ended by T, fed only data before T — or 409 when no model had been
//! trained by then (never a model that saw the future).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, DurationRound, Utc};
use meterstack_core::store::forecasts::{ForecastHour, Subject};
use meterstack_ml::MlError;
use meterstack_ml::inference;
use meterstack_pipeline::Registry;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{bad_request, store_error};
use crate::query::instant;
use crate::{ApiError, AppState};

/// Query of the forecast routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForecastParams {
    from: Option<String>,
    hours: Option<usize>,
    as_of: Option<String>,
}

/// The longest forecast one request may ask for.
const MAX_HOURS: usize = 168;

fn items(hours: &[ForecastHour]) -> Vec<Value> {
    hours
        .iter()
        .map(|h| json!({"ts": h.ts, "p10": h.p10, "p50": h.p50, "p90": h.p90}))
        .collect()
}

async fn answer(
    state: AppState,
    key: &'static str,
    id: String,
    subject: Subject,
    p: ForecastParams,
) -> Result<Response, ApiError> {
    let hours = p.hours.unwrap_or(48);
    if hours == 0 || hours > MAX_HOURS {
        return Err(bad_request(format!("`hours` must be 1 … {MAX_HOURS}")));
    }
    let as_of = p
        .as_of
        .as_deref()
        .map(|v| instant("as_of", v))
        .transpose()?;
    let hour = |t: DateTime<Utc>| t.duration_trunc(Duration::hours(1)).unwrap_or(t);
    let from = match p.from.as_deref() {
        Some(v) => hour(instant("from", v)?),
        None => hour(as_of.unwrap_or_else(Utc::now)),
    };
    let Some(t) = as_of else {
        let stored = state
            .store
            .forecast(&subject, from, from + Duration::hours(hours as i64))
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no forecast of {key} {id} from {from} (the ml role writes them after each ETL run)"),
                )
            })?;
        return Ok(Json(json!({
            key: id,
            "model_version": stored.model_version,
            "as_of": stored.made_at,
            "meters": stored.meters,
            "items": items(&stored.hours),
        }))
        .into_response());
    };
    let (Some(lake), Some(ml)) = (&state.lake, &state.forecasting) else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this process does not serve the lake",
        ));
    };
    let registry = Registry::load(&state.store).await.map_err(store_error)?;
    let made = inference::as_of(
        lake,
        &state.store,
        &ml.models,
        &registry,
        &ml.calendar,
        &subject,
        t,
        from,
        hours,
    )
    .await;
    let made = made.map_err(|e| match e {
        MlError::NoModel(_) => ApiError::new(StatusCode::CONFLICT, "no_model", e.to_string()),
        MlError::Invalid(_) | MlError::NoData(_) => bad_request(e.to_string()),
        other => {
            tracing::warn!(error = %other, "as-of forecast failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the forecast could not be computed; see the server log",
            )
        }
    })?;
    Ok(Json(json!({
        key: id,
        "model_version": made.model_version,
        "as_of": t,
        "meters": made.meters,
        "items": items(&made.hours),
    }))
    .into_response())
}

pub(crate) async fn meter(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<ForecastParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(bad_request)?;
    meterstack_core::MeterId::new(&id).map_err(|e| bad_request(format!("meter id {id:?}: {e}")))?;
    answer(state, "meter_id", id.clone(), Subject::Meter(id), p).await
}

pub(crate) async fn feeder(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<ForecastParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(bad_request)?;
    answer(state, "feeder", id.clone(), Subject::Feeder(id), p).await
}

pub(crate) async fn models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(ml) = &state.forecasting else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this process does not serve the lake",
        ));
    };
    let unavailable = |e: meterstack_ml::registry::RegistryError| {
        tracing::warn!(error = %e, "model registry");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the model registry could not be read",
        )
    };
    let current = ml.models.current().await.map_err(unavailable)?;
    let (metas, _) = ml.models.list().await.map_err(unavailable)?;
    let models: Vec<Value> = metas
        .into_iter()
        .rev()
        .map(|m| {
            let mut v = serde_json::to_value(&m).unwrap_or_default();
            v["current"] = (current.as_deref() == Some(m.version.as_str())).into();
            v
        })
        .collect();
    Ok(Json(json!({"current": current, "models": models})).into_response())
}
