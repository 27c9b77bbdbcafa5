//! `/api/v1/keys`: API keys (admin only).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use meterstack_core::store::keys::Role;
use serde::Deserialize;
use serde_json::json;

use crate::error::{bad_request, store_error};
use crate::{ApiError, AppState};

/// Body of `POST /api/v1/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewKey {
    role: Role,
    #[serde(default)]
    name: String,
}

pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let keys = state.store.api_keys().await.map_err(store_error)?;
    Ok(Json(json!({ "keys": keys })).into_response())
}

/// Creates a key and answers its plaintext, once.
pub(crate) async fn create(
    State(state): State<AppState>,
    body: Result<Json<NewKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(new) = body.map_err(bad_request)?;
    let (key, plaintext) = state
        .store
        .create_api_key(new.role, &new.name)
        .await
        .map_err(store_error)?;
    let mut body = serde_json::to_value(&key).map_err(bad_request)?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("key".into(), json!(plaintext));
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = state.store.revoke_api_key(&id).await.map_err(store_error)?;
    Ok(Json(key).into_response())
}
