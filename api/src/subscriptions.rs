//! `/api/v1/subscriptions`: webhook subscriptions (operators), their secrets, dead-letter
//! replay and delivery log; and `/api/v1/alerts/events`, the pull feed for consumers that
//! cannot receive webhooks (a long poll over the same events the webhooks carry).

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use meterstack_core::egress::EgressError;
use meterstack_core::store::keys::ApiKey;
use meterstack_core::store::webhooks::{DeliveryState, SubscriptionFilter, SubscriptionPatch};
use serde::Deserialize;
use serde_json::json;

use crate::alerts::who;
use crate::error::{bad_request, store_error};
use crate::{ApiError, AppState};

type ApiResult = Result<Response, ApiError>;

/// The longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// How often a long poll looks for events committed by other processes.
const RECHECK: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewSubscription {
    url: String,
    #[serde(default)]
    description: String,
    #[serde(flatten)]
    filter: SubscriptionFilter,
}

fn refused(e: EgressError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_target", e.to_string())
}

pub(crate) async fn create(
    State(state): State<AppState>,
    key: Option<axum::Extension<ApiKey>>,
    body: Result<Json<NewSubscription>, JsonRejection>,
) -> ApiResult {
    let Json(new) = body.map_err(bad_request)?;
    let url = state.webhooks.egress.check_url(&new.url).map_err(refused)?;
    let (subscription, secret) = state
        .store
        .create_subscription(url.as_str(), &new.description, &new.filter, &who(key))
        .await
        .map_err(store_error)?;
    // The secret is shown this once.
    Ok((
        StatusCode::CREATED,
        Json(json!({ "subscription": subscription, "secret": secret })),
    )
        .into_response())
}

pub(crate) async fn list(State(state): State<AppState>) -> ApiResult {
    let subscriptions = state.store.subscriptions().await.map_err(store_error)?;
    Ok(Json(json!({ "subscriptions": subscriptions })).into_response())
}

pub(crate) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let sub = state.store.subscription(&id).await.map_err(store_error)?;
    Ok(Json(sub).into_response())
}

pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<SubscriptionPatch>, JsonRejection>,
) -> ApiResult {
    let Json(mut patch) = body.map_err(bad_request)?;
    if let Some(url) = &patch.url {
        patch.url = Some(
            state
                .webhooks
                .egress
                .check_url(url)
                .map_err(refused)?
                .to_string(),
        );
    }
    let sub = state
        .store
        .update_subscription(&id, &patch)
        .await
        .map_err(store_error)?;
    Ok(Json(sub).into_response())
}

pub(crate) async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    state
        .store
        .delete_subscription(&id)
        .await
        .map_err(store_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn rotate(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let (subscription, secret) = state
        .store
        .rotate_secret(&id, state.webhooks.rotation_overlap)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "subscription": subscription, "secret": secret })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayParams {
    from: DateTime<Utc>,
}

pub(crate) async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<ReplayParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params.map_err(bad_request)?;
    match state.store.replay(&id, params.from).await {
        Ok(n) => Ok(Json(json!({ "requeued": n })).into_response()),
        Err(meterstack_core::store::StoreError::Conflict(message)) => {
            Err(ApiError::new(StatusCode::CONFLICT, "conflict", message))
        }
        Err(e) => Err(store_error(e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryParams {
    state: Option<DeliveryState>,
    /// Sequence number to continue before (from `next`).
    before: Option<i64>,
    limit: Option<u32>,
}

pub(crate) async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<DeliveryParams>, QueryRejection>,
) -> ApiResult {
    let Query(p) = params.map_err(bad_request)?;
    let limit = crate::page_size(p.limit);
    let rows = state
        .store
        .list_deliveries(&id, p.state, p.before, limit)
        .await
        .map_err(store_error)?;
    let next = crate::next_cursor(&rows, limit, |d| d.seq);
    Ok(Json(json!({ "deliveries": rows, "next": next })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttemptParams {
    /// Only the attempts of this event.
    seq: Option<i64>,
    /// Continue before this time (from `next`).
    before: Option<DateTime<Utc>>,
    limit: Option<u32>,
}

pub(crate) async fn attempts(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<AttemptParams>, QueryRejection>,
) -> ApiResult {
    let Query(p) = params.map_err(bad_request)?;
    let limit = crate::page_size(p.limit);
    let rows = state
        .store
        .list_attempts(&id, p.seq, p.before, limit)
        .await
        .map_err(store_error)?;
    let next = crate::next_cursor(&rows, limit, |a| a.at);
    Ok(Json(json!({ "attempts": rows, "next": next })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    /// The cursor: the `next` of the previous answer (0, or absent, from the beginning).
    after: Option<i64>,
    /// How long to wait for an event when there is none (`20s`; at most 30 s).
    wait: Option<String>,
    limit: Option<u32>,
}

/// `GET /api/v1/alerts/events?after=&wait=20s`: events after the cursor, oldest first;
/// waits up to `wait` when there are none. At least once: a consumer that stores `next`
/// after processing a page never misses an event.
pub(crate) async fn events(
    State(state): State<AppState>,
    params: Result<Query<EventParams>, QueryRejection>,
) -> ApiResult {
    let Query(p) = params.map_err(bad_request)?;
    let wait = match p.wait.as_deref() {
        None => Duration::ZERO,
        Some(w) => {
            meterstack_core::duration::parse(w).map_err(|e| bad_request(format!("wait: {e}")))?
        }
    };
    if wait > MAX_WAIT {
        return Err(bad_request(format!(
            "wait may be at most {}",
            meterstack_core::duration::format(MAX_WAIT)
        )));
    }
    let after = p.after.unwrap_or(0);
    if after < 0 {
        return Err(bad_request("after must be a cursor (0 or more)"));
    }
    let page = state
        .store
        .wait_events(after, p.limit.unwrap_or(100), wait, RECHECK)
        .await
        .map_err(store_error)?;
    Ok(Json(page).into_response())
}
