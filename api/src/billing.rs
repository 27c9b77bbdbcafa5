//! Tariffs and bills: `GET/POST /api/v1/tariffs`, `GET /api/v1/tariffs/{id}` and
//! `GET /api/v1/meters/{id}/bill?from=YYYY-MM-DD&to=YYYY-MM-DD` (local dates, both included).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use meterstack_billing::{BillError, BillingError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{bad_request, store_error};
use crate::{ApiError, AppState};

type ApiResult = Result<Response, ApiError>;

fn billing_error(e: BillingError) -> ApiError {
    match e {
        BillingError::Store(e) => store_error(e),
        BillingError::Invalid(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_tariff", e.to_string())
        }
        BillingError::NoTariff(_) => {
            ApiError::new(StatusCode::CONFLICT, "no_tariff", e.to_string())
        }
        BillingError::Bill(BillError::Missing { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "incomplete_data", e.to_string())
        }
        BillingError::Bill(BillError::NotEffective { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "tariff_not_effective", e.to_string())
        }
        BillingError::Bill(BillError::Dates { .. }) => bad_request(e),
        BillingError::Bill(BillError::BadInterval(..)) => {
            ApiError::new(StatusCode::CONFLICT, "bad_data", e.to_string())
        }
        BillingError::Tariff { .. } | BillingError::Source(_) => {
            tracing::error!(error = %e, "a bill could not be made");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the bill could not be made; see the server log",
            )
        }
    }
}

/// Query of `POST /api/v1/tariffs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportParams {
    id: Option<String>,
    effective_from: Option<NaiveDate>,
}

/// Imports the body (a URDB record or the native form, JSON or TOML) as a new version.
pub(crate) async fn import(
    State(state): State<AppState>,
    params: Result<Query<ImportParams>, QueryRejection>,
    body: Bytes,
) -> ApiResult {
    let Query(p) = params.map_err(bad_request)?;
    let text = std::str::from_utf8(&body).map_err(|_| bad_request("the body is not UTF-8"))?;
    let v =
        meterstack_billing::import_tariff(&state.store, text, p.id.as_deref(), p.effective_from)
            .await
            .map_err(billing_error)?;
    Ok((StatusCode::CREATED, Json(summary(&v))).into_response())
}

fn summary(v: &meterstack_core::store::tariffs::TariffVersion) -> Value {
    json!({
        "tariff_id": v.tariff_id,
        "version": v.version,
        "effective_from": v.effective_from,
        "effective_to": v.effective_to,
        "name": v.name,
        "currency": v.currency,
        "imported_at": v.imported_at,
    })
}

/// Every version of every tariff, without documents.
pub(crate) async fn list(State(state): State<AppState>) -> ApiResult {
    let versions = state
        .store
        .tariff_versions(None)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "items": versions.iter().map(summary).collect::<Vec<_>>() })).into_response())
}

/// One tariff's versions with their documents.
pub(crate) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let versions = state
        .store
        .tariff_versions(Some(&id))
        .await
        .map_err(store_error)?;
    if versions.is_empty() {
        return Err(store_error(meterstack_core::store::StoreError::NotFound(
            format!("tariff {id}"),
        )));
    }
    let items: Vec<Value> = versions
        .iter()
        .map(|v| {
            let mut s = summary(v);
            s["document"] = serde_json::from_str(&v.document).unwrap_or(Value::Null);
            s
        })
        .collect();
    Ok(Json(json!({ "tariff_id": id, "versions": items })).into_response())
}

/// Query of the bill route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BillParams {
    from: NaiveDate,
    to: NaiveDate,
}

/// The longest period one bill may cover.
const MAX_DAYS: i64 = 400;

/// A meter's bill for local dates `from ..= to`.
pub(crate) async fn bill(
    State(state): State<AppState>,
    Path(id): Path<String>,
    params: Result<Query<BillParams>, QueryRejection>,
) -> ApiResult {
    let Query(p) = params.map_err(bad_request)?;
    use chrono::Datelike;
    if p.from.year() < 1900 || p.to.year() > 9999 {
        return Err(bad_request("dates must lie in the years 1900 … 9999"));
    }
    if p.from > p.to || (p.to - p.from).num_days() >= MAX_DAYS {
        return Err(bad_request(format!(
            "`from` must not be after `to`, and a bill covers at most {MAX_DAYS} days"
        )));
    }
    let Some(lake) = &state.lake else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this process does not serve the lake",
        ));
    };
    let b = &state.billing;
    let bill = meterstack_billing::meter_bill(lake, &state.store, b.tz, b.step, &id, p.from, p.to)
        .await
        .map_err(billing_error)?;
    Ok(Json(json!({
        "meter_id": id,
        "tariff_id": bill.tariff_id,
        "from": bill.from,
        "to": bill.to,
        "currency": bill.currency,
        "total": bill.total,
        "lines": bill.lines,
        "estimated_share": bill.estimated_share,
    }))
    .into_response())
}
