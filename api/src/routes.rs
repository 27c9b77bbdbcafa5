//! Every route of the API, once: its method, path, the roles it admits and its handler. The
//! list builds both the router and the access policy ([`POLICY`]) that the middleware
//! ([`crate::auth`]) applies, and docs/ARCHITECTURE.md prints it ([`policy_table`]; a test
//! fails when the document and this list disagree).

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodFilter, on};
use meterstack_core::store::keys::Role;

use crate::auth::Admitted;
use crate::{AppState, alerts, billing, forecasts, keys, live, meters, query, subscriptions};

const PUBLIC: Admitted = &[];
const ANY_ROLE: Admitted = &[Role::Admin, Role::Operator, Role::Analyst, Role::Viewer];
const DATA_READERS: Admitted = &[Role::Admin, Role::Operator, Role::Analyst];
const ANALYSTS: Admitted = &[Role::Admin, Role::Analyst];
const OPERATORS: Admitted = &[Role::Admin, Role::Operator];
const ADMINS: Admitted = &[Role::Admin];

/// Declares [`POLICY`] and the two routers from one list: `process` routes every process
/// serves, `data` routes only the api role serves (the lake and the store are built for it).
macro_rules! routes {
    (
        process { $( $pm:ident $pp:literal => $ph:expr, $pr:expr; )* }
        data { $( $dm:ident $dp:literal => $dh:expr, $dr:expr; )* }
    ) => {
        /// Every route of the API with the roles it admits (empty: public).
        pub const POLICY: &[(Method, &str, Admitted)] = &[
            $( (Method::$pm, $pp, $pr), )*
            $( (Method::$dm, $dp, $dr), )*
        ];

        /// The routes every process serves: health and metrics.
        pub(crate) fn process_routes() -> Router<AppState> {
            Router::new() $( .route($pp, on(MethodFilter::$pm, $ph)) )*
        }

        /// The routes of the api role.
        pub(crate) fn data_routes() -> Router<AppState> {
            Router::new() $( .route($dp, on(MethodFilter::$dm, $dh)) )*
        }
    };
}

routes! {
    process {
        GET "/healthz" => crate::healthz, PUBLIC;
        GET "/readyz" => crate::readyz, PUBLIC;
        GET "/metrics" => crate::metrics, ANY_ROLE;
    }
    data {
        POST "/api/v1/query" => query::handle, ANALYSTS;
        GET "/api/v1/meters" => meters::list, DATA_READERS;
        POST "/api/v1/meters" => meters::create, OPERATORS;
        GET "/api/v1/meters/{id}" => meters::show, DATA_READERS;
        PATCH "/api/v1/meters/{id}" => meters::update, OPERATORS;
        DELETE "/api/v1/meters/{id}" => meters::delete, OPERATORS;
        GET "/api/v1/meters/{id}/readings" => query::meter_readings, ANY_ROLE;
        GET "/api/v1/meters/{id}/forecast" => forecasts::meter, ANY_ROLE;
        GET "/api/v1/feeders/{id}/forecast" => forecasts::feeder, ANY_ROLE;
        GET "/api/v1/models" => forecasts::models, DATA_READERS;
        GET "/api/v1/meters/{id}/bill" => billing::bill, ANY_ROLE;
        GET "/api/v1/tariffs" => billing::list, ANY_ROLE;
        POST "/api/v1/tariffs" => billing::import, OPERATORS;
        GET "/api/v1/tariffs/{id}" => billing::show, ANY_ROLE;
        POST "/api/v1/meters/{id}/secret" => meters::new_secret, OPERATORS;
        POST "/api/v1/meters/{id}/commands" => meters::command, OPERATORS;
        GET "/api/v1/meters/{id}/certificates" => meters::certificates, OPERATORS;
        POST "/api/v1/certificates/{serial}/revoke" => meters::revoke_certificate, OPERATORS;
        GET "/api/v1/alerts" => alerts::list, ANY_ROLE;
        GET "/api/v1/alerts/events" => subscriptions::events, ANY_ROLE;
        GET "/api/v1/alerts/{id}" => alerts::show, ANY_ROLE;
        POST "/api/v1/alerts/{id}/ack" => alerts::acknowledge, OPERATORS;
        POST "/api/v1/alerts/{id}/resolve" => alerts::resolve, OPERATORS;
        GET "/api/v1/subscriptions" => subscriptions::list, OPERATORS;
        POST "/api/v1/subscriptions" => subscriptions::create, OPERATORS;
        GET "/api/v1/subscriptions/{id}" => subscriptions::show, OPERATORS;
        PATCH "/api/v1/subscriptions/{id}" => subscriptions::update, OPERATORS;
        DELETE "/api/v1/subscriptions/{id}" => subscriptions::delete, OPERATORS;
        POST "/api/v1/subscriptions/{id}/rotate" => subscriptions::rotate, OPERATORS;
        POST "/api/v1/subscriptions/{id}/replay" => subscriptions::replay, OPERATORS;
        GET "/api/v1/subscriptions/{id}/deliveries" => subscriptions::deliveries, OPERATORS;
        GET "/api/v1/subscriptions/{id}/attempts" => subscriptions::attempts, OPERATORS;
        GET "/api/v1/live" => live::upgrade, ANY_ROLE;
        GET "/" => live::index, PUBLIC;
        GET "/assets/{name}" => live::asset, PUBLIC;
        GET "/api/v1/keys" => keys::list, ADMINS;
        POST "/api/v1/keys" => keys::create, ADMINS;
        DELETE "/api/v1/keys/{id}" => keys::revoke, ADMINS;
    }
}

/// [`POLICY`] as the Markdown table docs/ARCHITECTURE.md shows: one row per route.
pub fn policy_table() -> String {
    let mut out =
        String::from("| route | admin | operator | analyst | viewer |\n|---|---|---|---|---|\n");
    for (method, path, roles) in POLICY {
        let cells: Vec<&str> = Role::ALL
            .iter()
            .map(|r| {
                if roles.is_empty() {
                    "public"
                } else if roles.contains(r) {
                    "✓"
                } else {
                    ""
                }
            })
            .collect();
        out.push_str(&format!("| `{method} {path}` | {} |\n", cells.join(" | ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_md_shows_the_policy_the_router_is_built_from() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ARCHITECTURE.md");
        let doc = std::fs::read_to_string(path).expect("docs/ARCHITECTURE.md");
        let (begin, end) = ("<!-- routes:begin -->\n", "<!-- routes:end -->");
        let start = doc.find(begin).expect("the routes:begin marker") + begin.len();
        let stop = doc[start..].find(end).expect("the routes:end marker") + start;
        assert_eq!(
            &doc[start..stop],
            policy_table(),
            "docs/ARCHITECTURE.md's route table differs from api/src/routes.rs; paste policy_table()'s output between the markers"
        );
    }

    #[test]
    fn every_route_is_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for (method, path, _) in POLICY {
            assert!(
                seen.insert((method.as_str(), *path)),
                "{method} {path} twice"
            );
        }
    }
}
