//! `/api/v1/alerts`: the alert lifecycle (open → acknowledged → resolved) kept in the SQL
//! store; list with filters (`state`, `type`, `severity`, `meter`, `feeder`, `from`, `to`,
//! `limit`, `after`), show one, acknowledge, resolve. Who acted is the API key
//! (`name (key_id)`).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meterstack_core::store::StoreError;
use meterstack_core::store::alerts::{AlertFilter, StoredAlert, Transition};
use meterstack_core::store::keys::ApiKey;
use serde_json::json;

use crate::error::{bad_request, store_error};
use crate::{ApiError, AppState};

type ApiResult = Result<Response, ApiError>;

pub(crate) async fn list(
    State(state): State<AppState>,
    filter: Result<Query<AlertFilter>, QueryRejection>,
) -> ApiResult {
    let Query(filter) = filter.map_err(bad_request)?;
    let limit = crate::page_size(filter.limit);
    let alerts = state
        .store
        .list_alerts(&filter)
        .await
        .map_err(store_error)?;
    let next = crate::next_cursor(&alerts, limit, |a| a.alert_id.clone());
    Ok(Json(json!({ "alerts": alerts, "next": next })).into_response())
}

pub(crate) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    match state.store.alert(&id).await.map_err(store_error)? {
        Some(a) => Ok(Json(a).into_response()),
        None => Err(not_found(&id)),
    }
}

pub(crate) async fn acknowledge(
    State(state): State<AppState>,
    Path(id): Path<String>,
    key: Option<axum::Extension<ApiKey>>,
) -> ApiResult {
    let result = state.store.acknowledge_alert(&id, &who(key)).await;
    answer(&id, result)
}

pub(crate) async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    key: Option<axum::Extension<ApiKey>>,
) -> ApiResult {
    let result = state.store.resolve_alert(&id, &who(key)).await;
    answer(&id, result)
}

/// Who acted: the API key as `name (key_id)`.
pub(crate) fn who(key: Option<axum::Extension<ApiKey>>) -> String {
    key.map_or_else(
        || "unknown".to_owned(),
        |axum::Extension(k)| format!("{} ({})", k.name, k.key_id),
    )
}

/// The alert and whether this request changed it (`changed: false` for a repeat).
fn answer(
    id: &str,
    result: meterstack_core::store::Result<(StoredAlert, Option<Transition>)>,
) -> ApiResult {
    match result {
        Ok((alert, transition)) => Ok(Json(json!({
            "alert": alert,
            "changed": transition.is_some(),
        }))
        .into_response()),
        Err(StoreError::NotFound(_)) => Err(not_found(id)),
        Err(StoreError::Conflict(message)) => {
            Err(ApiError::new(StatusCode::CONFLICT, "conflict", message))
        }
        Err(e) => Err(store_error(e)),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("alert {id} not found"),
    )
}
