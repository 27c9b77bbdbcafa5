use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to an HTTP client: `{"error":{"code":…,"message":…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable machine-readable code.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The answer to a failed store operation: the client's fault (404, 409, 400) or the
/// store's (503), never its internals.
pub(crate) fn store_error(e: meterstack_core::store::StoreError) -> ApiError {
    use meterstack_core::store::StoreError;
    match e {
        StoreError::NotFound(what) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        ),
        StoreError::Conflict(what) => ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("{what} already exists"),
        ),
        StoreError::Invalid(message) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
        other => {
            tracing::error!(error = %other, "SQL store failure");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the SQL store is unavailable; try again",
            )
        }
    }
}

/// A request body or query string that did not parse.
pub(crate) fn bad_request(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string())
}
