//! Who may call what: API keys (`Authorization: Bearer <key>`) and the role each route needs.
//!
//! [`POLICY`] is the one table of routes and roles; the middleware applies it to every routed
//! request, the tests walk it, and docs/ARCHITECTURE.md prints it. No key, an unknown key or a
//! revoked key gets 401; a key whose role the route does not admit gets 403; both carry the
//! usual JSON error body.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use meterstack_core::metrics::API_AUTH_REFUSED;
use meterstack_core::store::keys::{ApiKey, Role};

use crate::{ApiError, AppState};

/// Roles admitted by a route; empty means public (no key needed).
pub type Admitted = &'static [Role];

const PUBLIC: Admitted = &[];
const ANY_ROLE: Admitted = &[Role::Admin, Role::Operator, Role::Analyst, Role::Viewer];
const DATA_READERS: Admitted = &[Role::Admin, Role::Operator, Role::Analyst];
const ANALYSTS: Admitted = &[Role::Admin, Role::Analyst];
const OPERATORS: Admitted = &[Role::Admin, Role::Operator];
const ADMINS: Admitted = &[Role::Admin];

/// Every route of the API with the roles it admits.
pub const POLICY: &[(Method, &str, Admitted)] = &[
    (Method::GET, "/healthz", PUBLIC),
    (Method::GET, "/readyz", PUBLIC),
    (Method::GET, "/metrics", ANY_ROLE),
    (Method::POST, "/api/v1/query", ANALYSTS),
    (Method::GET, "/api/v1/meters", DATA_READERS),
    (Method::POST, "/api/v1/meters", OPERATORS),
    (Method::GET, "/api/v1/meters/{id}", DATA_READERS),
    (Method::GET, "/api/v1/meters/{id}/readings", ANY_ROLE),
    (Method::PATCH, "/api/v1/meters/{id}", OPERATORS),
    (Method::DELETE, "/api/v1/meters/{id}", OPERATORS),
    (Method::POST, "/api/v1/meters/{id}/secret", OPERATORS),
    (Method::POST, "/api/v1/meters/{id}/commands", OPERATORS),
    (Method::GET, "/api/v1/meters/{id}/certificates", OPERATORS),
    (
        Method::POST,
        "/api/v1/certificates/{serial}/revoke",
        OPERATORS,
    ),
    (Method::GET, "/api/v1/alerts", ANY_ROLE),
    (Method::GET, "/api/v1/alerts/{id}", ANY_ROLE),
    (Method::POST, "/api/v1/alerts/{id}/ack", OPERATORS),
    (Method::POST, "/api/v1/alerts/{id}/resolve", OPERATORS),
    (Method::GET, "/api/v1/alerts/events", ANY_ROLE),
    (Method::GET, "/api/v1/subscriptions", OPERATORS),
    (Method::POST, "/api/v1/subscriptions", OPERATORS),
    (Method::GET, "/api/v1/subscriptions/{id}", OPERATORS),
    (Method::PATCH, "/api/v1/subscriptions/{id}", OPERATORS),
    (Method::DELETE, "/api/v1/subscriptions/{id}", OPERATORS),
    (Method::POST, "/api/v1/subscriptions/{id}/rotate", OPERATORS),
    (Method::POST, "/api/v1/subscriptions/{id}/replay", OPERATORS),
    (
        Method::GET,
        "/api/v1/subscriptions/{id}/deliveries",
        OPERATORS,
    ),
    (
        Method::GET,
        "/api/v1/subscriptions/{id}/attempts",
        OPERATORS,
    ),
    (Method::GET, "/api/v1/live", ANY_ROLE),
    (Method::GET, "/", PUBLIC),
    (Method::GET, "/assets/{name}", PUBLIC),
    (Method::GET, "/api/v1/keys", ADMINS),
    (Method::POST, "/api/v1/keys", ADMINS),
    (Method::DELETE, "/api/v1/keys/{id}", ADMINS),
];

/// The roles `method` on `route` admits; `None` for a route not in the policy (refused).
pub fn admitted(method: &Method, route: &str) -> Option<Admitted> {
    POLICY
        .iter()
        .find(|(m, r, _)| m == method && *r == route)
        .map(|(_, _, roles)| *roles)
}

fn unauthorized(message: &str) -> Response {
    metrics::counter!(API_AUTH_REFUSED, "status" => "401").increment(1);
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        "Bearer".parse().unwrap_or_else(|_| unreachable_header()),
    );
    response
}

fn unreachable_header() -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_static("Bearer")
}

/// Middleware on every routed request: authenticates the key and checks the route's roles.
/// The key, once accepted, is in the request's extensions for handlers that record who acted.
pub(crate) async fn authorize(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let Some(roles) = admitted(request.method(), &route) else {
        // A route without a policy entry is a bug; refuse rather than expose it.
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "no policy for this route",
        )
        .into_response();
    };
    if roles.is_empty() {
        return next.run(request).await;
    }
    let presented = presented_key(request.headers());
    let method = request.method().clone();
    match check(&state, presented.as_deref(), &method, roles, &route).await {
        Ok(key) => {
            request.extensions_mut().insert(key);
            next.run(request).await
        }
        Err(refusal) => {
            // Read the (size-limited) body before answering, so the connection stays usable
            // for the client's next request.
            let _ = axum::body::to_bytes(request.into_body(), state.max_body_bytes).await;
            refusal
        }
    }
}

/// The API key of a request: `Authorization: Bearer <key>`, or, for browsers' WebSockets
/// (which cannot set headers), the subprotocol `bearer.<key>`.
fn presented_key(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(AUTHORIZATION) {
        return v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|v| v.trim().to_owned());
    }
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("bearer.").map(str::to_owned))
}

/// The key of an authorized request, or the refusal to answer.
async fn check(
    state: &AppState,
    presented: Option<&str>,
    method: &Method,
    roles: Admitted,
    route: &str,
) -> Result<ApiKey, Response> {
    let Some(presented) = presented else {
        return Err(unauthorized(
            "this endpoint needs an API key: Authorization: Bearer <key>",
        ));
    };
    let key: ApiKey = match state.store.authenticate_api_key(presented).await {
        Ok(Some(key)) => key,
        Ok(None) => return Err(unauthorized("the API key is unknown or revoked")),
        Err(e) => return Err(crate::error::store_error(e).into_response()),
    };
    if !roles.contains(&key.role) {
        metrics::counter!(API_AUTH_REFUSED, "status" => "403").increment(1);
        let needed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "role {} may not {} {route}; it needs one of: {}",
                key.role.as_str(),
                method,
                needed.join(", ")
            ),
        )
        .into_response());
    }
    Ok(key)
}
