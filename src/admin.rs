//! The admin listener: a JSON HTTP API for operators (queues, consumers,
//! groups; purge, rebalance, release a held group), Prometheus metrics and
//! the API's OpenAPI description, and a web console (`/`) over the API. Requests authenticate with HTTP Basic as
//! one of the `[[users]]` (or go anonymous where `allow-anonymous` is on);
//! what a principal sees and changes is decided by the `manage` permission
//! of the `[[access]]` rules; failed logins count against the same
//! per-address limit as AMQP's. docs/OPERATIONS.md shows its use.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::amqp::io::ServeContext;
use crate::core::access::{Permission, Principal};
use crate::core::queue::{ConsumerView, GroupView};
use crate::core::Queue;

/// One queue in a listing (the same view `$management` answers with).
pub use crate::core::queue_info::QueueInfo;
use crate::store::Journal;

mod metrics;
mod operations;

/// The OpenAPI description of this API (served at /api/openapi.json).
pub const OPENAPI: &str = include_str!("admin/openapi.json");

/// Groups listed per queue unless the request asks for another limit.
const DEFAULT_GROUP_LIMIT: usize = 1000;

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    /// The broker and its credentials.
    pub ctx: Arc<ServeContext>,
    /// The store's writer (sync statistics).
    pub journal: Arc<Journal>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(console))
        .route("/metrics", get(metrics::metrics))
        .route("/api/openapi.json", get(openapi))
        .route("/api/overview", get(overview))
        .route("/api/connections", get(operations::connections))
        .route(
            "/api/connections/{id}",
            get(operations::connection).delete(operations::close_connection),
        )
        .route("/api/consumers", get(operations::consumers))
        .route("/api/topics", get(operations::topics))
        .route("/api/queues", get(queues))
        .route(
            "/api/queues/{name}",
            get(queue).patch(operations::change_settings),
        )
        .route("/api/queues/{name}/move", post(operations::move_messages))
        .route("/api/queues/{name}/consumers", get(consumers))
        .route("/api/queues/{name}/groups", get(groups))
        .route("/api/queues/{name}/purge", post(purge))
        .route("/api/queues/{name}/rebalance", post(rebalance))
        .route("/api/queues/{name}/groups/{group}/release", post(release))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            login_limit,
        ))
        .with_state(state)
}

/// Failed logins count against the per-address limit AMQP logins count
/// against (`sasl.max-failed-logins` within `sasl.failed-login-window`,
/// one limiter for both): past it, a request with credentials from that
/// address gets 429 without its credentials being checked, until the
/// window has passed. Serve the router with connect info
/// (`into_make_service_with_connect_info::<SocketAddr>`) for it to apply.
async fn login_limit(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let with_credentials = request.headers().contains_key(header::AUTHORIZATION);
    let Some(ip) = peer.filter(|_| with_credentials) else {
        return next.run(request).await;
    };
    let limiter = &state.ctx.limiter;
    if !limiter.allowed(ip, Instant::now()) {
        tracing::warn!(peer = %ip, "admin API: too many failed logins from this address; refused unchecked");
        let mut response = ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins from this address: try again later".into(),
        )
        .into_response();
        response.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(limiter.window().as_secs().max(1)),
        );
        return response;
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        limiter.failed(ip, Instant::now());
    }
    response
}

/// An error answer: a status and a JSON `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"ordo\""),
            );
        }
        response
    }
}

/// Who sent the request: HTTP Basic credentials checked like SASL PLAIN,
/// or anonymous where that is allowed.
async fn principal(state: &AdminState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let credentials = Arc::clone(&state.ctx.credentials.read());
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        if credentials.allow_anonymous() {
            return Ok(Principal::anonymous());
        }
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "log in with HTTP Basic as one of the [[users]]".into(),
        ));
    };
    let bad = || ApiError(StatusCode::UNAUTHORIZED, "bad credentials".into());
    let encoded = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or_else(bad)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    let (user, password) = (user.to_owned(), password.to_owned());
    let checker = Arc::clone(&credentials);
    let name = user.clone();
    let ok = tokio::task::spawn_blocking(move || checker.check_plain(&name, &password))
        .await
        .unwrap_or(false);
    if !ok {
        tracing::warn!(user = %user, "admin API: login failed");
        return Err(bad());
    }
    Ok(Principal {
        groups: credentials.groups(&user),
        user: Some(user),
    })
}

/// The queue `name`, if `who` may manage it.
async fn managed(
    state: &AdminState,
    headers: &HeaderMap,
    name: &str,
) -> Result<(Principal, Arc<Queue>), ApiError> {
    let who = principal(state, headers).await?;
    let broker = &state.ctx.broker;
    if !broker.allows(&who, Permission::Manage, name) {
        tracing::warn!(
            user = who.display(),
            queue = name,
            "admin API: manage denied"
        );
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{} may not manage {name}", who.display()),
        ));
    }
    let queue = broker
        .existing_queue(name)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no queue {name}")))?;
    Ok((who, queue))
}

/// The web console: one page that reads this API (src/admin/console.html).
const CONSOLE: &str = include_str!("admin/console.html");

async fn console(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    // Logging in here makes the browser send the credentials with the
    // page's API calls.
    principal(&state, &headers).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        CONSOLE,
    ))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn overview(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    principal(&state, &headers).await?;
    let broker = &state.ctx.broker;
    Ok(Json(serde_json::json!({
        "product": "Ordo",
        "version": env!("CARGO_PKG_VERSION"),
        "connections": state.ctx.connections.load(Ordering::Relaxed),
        "queues": broker.queues().len(),
        "topics": broker.topic_names().len(),
        "memory_bytes": broker.resident_bytes(),
        "memory_level": format!("{:?}", broker.memory_level()).to_lowercase(),
    })))
}

async fn queues(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Vec<QueueInfo>>, ApiError> {
    let who = principal(&state, &headers).await?;
    let broker = &state.ctx.broker;
    Ok(Json(
        broker
            .queues()
            .iter()
            .filter(|q| broker.allows(&who, Permission::Manage, q.name()))
            .map(|q| q.info())
            .collect(),
    ))
}

/// A queue with its consumers and groups.
#[derive(Debug, Serialize)]
struct QueueDetail {
    #[serde(flatten)]
    info: QueueInfo,
    consumers_list: Vec<ConsumerView>,
    groups_list: Vec<GroupView>,
    settings: crate::core::settings::QueueSettings,
}

async fn queue(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, queue) = managed(&state, &headers, &name).await?;
    let detail = QueueDetail {
        info: queue.info(),
        consumers_list: queue.consumers(),
        groups_list: queue.groups(DEFAULT_GROUP_LIMIT),
        settings: queue.settings(),
    };
    let mut value = serde_json::to_value(detail).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        // `consumers` and `groups` are counts in listings; the detail
        // carries the lists under the same names, counts under `*_count`.
        for key in ["consumers", "groups"] {
            if let Some(count) = map.remove(key) {
                map.insert(format!("{key}_count"), count);
            }
            if let Some(list) = map.remove(&format!("{key}_list")) {
                map.insert(key.to_owned(), list);
            }
        }
    }
    Ok(Json(value))
}

async fn consumers(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Vec<ConsumerView>>, ApiError> {
    let (_, queue) = managed(&state, &headers, &name).await?;
    Ok(Json(queue.consumers()))
}

/// `?limit=N` on the group listing.
#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn groups(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(limit): Query<Limit>,
) -> Result<Json<Vec<GroupView>>, ApiError> {
    let (_, queue) = managed(&state, &headers, &name).await?;
    Ok(Json(
        queue.groups(limit.limit.unwrap_or(DEFAULT_GROUP_LIMIT)),
    ))
}

async fn purge(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (who, queue) = managed(&state, &headers, &name).await?;
    let purged = queue.purge();
    tracing::info!(user = who.display(), queue = %name, purged, "queue purged");
    Ok(Json(serde_json::json!({ "purged": purged })))
}

async fn rebalance(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (who, queue) = managed(&state, &headers, &name).await?;
    let moved = queue.rebalance();
    tracing::info!(user = who.display(), queue = %name, moved, "groups rebalanced by an operator");
    Ok(Json(serde_json::json!({ "moved": moved })))
}

async fn release(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path((name, group)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (who, queue) = managed(&state, &headers, &name).await?;
    if !queue.release_held(&group) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("group {group} of {name} is not held"),
        ));
    }
    tracing::info!(user = who.display(), queue = %name, group = %group, "held group released by an operator");
    Ok(Json(serde_json::json!({ "released": group })))
}
