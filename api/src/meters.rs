//! `/api/v1/meters`: the meter registry (CRUD, paging, filters), meter secrets, certificates
//! and commands.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use meterstack_core::bus::Record;
use meterstack_core::reading::MeterId;
use meterstack_core::store::meters::{MeterFields, MeterFilter};
use meterstack_core::store::secret::random_hex;
use meterstack_core::wire::command::{Command, CommandMessage};
use serde::Deserialize;
use serde_json::json;

use crate::error::{bad_request, store_error};
use crate::{ApiError, AppState};

type ApiResult = Result<Response, ApiError>;

fn meter_id(id: &str) -> Result<MeterId, ApiError> {
    MeterId::new(id).map_err(|e| bad_request(format!("meter id {id:?}: {e}")))
}

/// Body of `POST /api/v1/meters`: `meter_id` and the [`MeterFields`].
#[derive(Debug, Deserialize)]
pub(crate) struct NewMeter {
    meter_id: String,
}

pub(crate) async fn list(
    State(state): State<AppState>,
    filter: Result<Query<MeterFilter>, QueryRejection>,
) -> ApiResult {
    let Query(filter) = filter.map_err(bad_request)?;
    let limit = crate::page_size(filter.limit);
    let meters = state
        .store
        .list_meters(&filter)
        .await
        .map_err(store_error)?;
    let next = crate::next_cursor(&meters, limit, |m| m.meter_id.to_string());
    Ok(Json(json!({ "meters": meters, "next": next })).into_response())
}

pub(crate) async fn create(
    State(state): State<AppState>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body.map_err(bad_request)?;
    // Parse in two steps so that unknown fields are reported by name.
    let new: NewMeter = serde_json::from_value(body.clone()).map_err(bad_request)?;
    let mut rest = body;
    if let Some(obj) = rest.as_object_mut() {
        obj.remove("meter_id");
    }
    let fields: MeterFields = serde_json::from_value(rest).map_err(bad_request)?;
    let id = meter_id(&new.meter_id)?;
    let meter = state
        .store
        .create_meter(&id, &fields)
        .await
        .map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(meter)).into_response())
}

pub(crate) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = meter_id(&id)?;
    let view = state
        .store
        .meter_view(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(view).into_response())
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<MeterFields>, JsonRejection>,
) -> ApiResult {
    let id = meter_id(&id)?;
    let Json(fields) = body.map_err(bad_request)?;
    let meter = state
        .store
        .update_meter(&id, &fields)
        .await
        .map_err(store_error)?;
    Ok(Json(meter).into_response())
}

pub(crate) async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = meter_id(&id)?;
    if state.store.delete_meter(&id).await.map_err(store_error)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(&id))
    }
}

/// Sets a new random secret and answers it, once; the store keeps only its Argon2 hash.
pub(crate) async fn new_secret(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let id = meter_id(&id)?;
    let secret = state
        .store
        .rotate_meter_secret(&id)
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "meter_id": id,
            "username": id,
            "secret": secret,
            "note": "shown once: configure it as the meter's MQTT password (username and client id = meter id)"
        })),
    )
        .into_response())
}

pub(crate) async fn certificates(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    let id = meter_id(&id)?;
    let certs = state.store.certificates(&id).await.map_err(store_error)?;
    Ok(Json(json!({ "certificates": certs })).into_response())
}

pub(crate) async fn revoke_certificate(
    State(state): State<AppState>,
    Path(serial): Path<String>,
) -> ApiResult {
    let serial = serial.to_ascii_lowercase();
    if serial.is_empty() || serial.len() > 64 || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_request("the serial is hex digits"));
    }
    let record = state
        .store
        .revoke_certificate(&serial)
        .await
        .map_err(store_error)?;
    Ok(Json(record).into_response())
}

/// Queues a command for the meter on the bus; the broker role publishes it.
pub(crate) async fn command(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<Command>, JsonRejection>,
) -> ApiResult {
    let id = meter_id(&id)?;
    let Json(command) = body.map_err(bad_request)?;
    command.validate().map_err(bad_request)?;
    if state.store.meter(&id).await.map_err(store_error)?.is_none() {
        return Err(not_found(&id));
    }
    let Some(bus) = &state.bus else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_bus",
            "this process has no bus to send commands on (run the api role on the Kafka bus, or with the broker)",
        ));
    };
    let message = CommandMessage {
        command_id: random_hex(8),
        issued_at: Utc::now(),
        command,
    };
    let value = serde_json::to_vec(&message).map_err(|e| bad_request(e.to_string()))?;
    bus.append(
        &state.topics.meter_commands,
        vec![Record {
            key: id.to_string(),
            value: value.into(),
            timestamp: message.issued_at,
            headers: Vec::new(),
        }],
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "cannot queue a meter command");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bus_unavailable",
            "the bus is unavailable; try again",
        )
    })?;
    Ok((StatusCode::ACCEPTED, Json(message)).into_response())
}

fn not_found(id: &MeterId) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("meter {id} is not registered"),
    )
}
