//! The audit of reads: every query API request that passed the token check
//! queues one `data.read` line: who (the token id, or `anonymous`), which
//! route, which device, which window and series, and the answer's status.
//! Never the data returned.
//!
//! ```text
//! {"seq":7,"at":"…","actor":"7b21e0d4","action":"data.read",
//!  "details":{"route":"/v1/devices/{id}/points","device":"dev-1","name":"temp",
//!             "from":"1700000000","to":"1700003600","status":200},"prev":"…"}
//! ```
//!
//! Query parameters are copied as sent, and only the known ones (`name`,
//! `from`, `to`, `step`, `limit`): an unknown one is refused with 400 anyway.

use std::collections::HashMap;

use axum::extract::{MatchedPath, Query, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::auth::Actor;
use crate::audit::{Details, ACTOR_ANONYMOUS};
use crate::state::AppState;

/// The query parameters a read line keeps.
const KEPT: [&str; 5] = ["name", "from", "to", "step", "limit"];

/// Middleware inside `require_read`: answers, then queues the read's line.
pub async fn audit_read(
    State(state): State<AppState>,
    route: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let Some(audit) = state.audit().cloned() else {
        return next.run(request).await;
    };
    let actor = request
        .extensions()
        .get::<Actor>()
        .map_or_else(|| ACTOR_ANONYMOUS.to_owned(), |a| a.0.clone());
    let mut details = Details::new();
    details.insert("route".into(), route.as_str().into());
    if route.as_str().starts_with("/v1/devices/{id}") {
        // /v1/devices/{id}/...: the third segment.
        if let Some(device) = request.uri().path().split('/').nth(3) {
            details.insert("device".into(), device.into());
        }
    }
    if let Ok(Query(params)) = Query::<HashMap<String, String>>::try_from_uri(request.uri()) {
        for key in KEPT {
            if let Some(value) = params.get(key) {
                details.insert(key.into(), value.clone().into());
            }
        }
    }
    let response = next.run(request).await;
    details.insert("status".into(), response.status().as_u16().into());
    audit.record_read(&actor, details).await;
    response
}
