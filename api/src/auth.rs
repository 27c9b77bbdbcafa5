//! Who may call what: API keys (`Authorization: Bearer <key>`) and the role each route needs.
//!
//! [`POLICY`] (built in [`crate::routes`] from the same list as the router) maps every route to
//! the roles it admits; the middleware applies it to every routed request. No key, an unknown key or a
//! revoked key gets 401; a key whose role the route does not admit gets 403; both carry the
//! usual JSON error body.

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use meterstack_core::metrics::API_AUTH_REFUSED;
use meterstack_core::store::keys::{ApiKey, Role};

use crate::routes::POLICY;
use crate::{ApiError, AppState};

/// Roles admitted by a route; empty means public (no key needed).
pub type Admitted = &'static [Role];

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
