//! Admin API routes beyond one queue's state: connections (list, inspect,
//! close), consumers across queues, topics and their subscriptions, moving
//! messages and changing a queue's run-time settings.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{managed, principal, AdminState, ApiError};
use crate::connections::ConnectionView;
use crate::core::access::{Permission, Principal};
use crate::core::queue::ConsumerView;
use crate::core::{MoveReport, MoveTo};
use crate::store::{Ticket, TicketStatus, Wake};
use std::sync::Arc;

/// Wakes a task when a journal ticket is durable.
struct Durable(tokio::sync::Notify);

impl Wake for Durable {
    fn wake(&self) {
        self.0.notify_one();
    }
}

/// Waits until `ticket` is durable, so an answer means the change is
/// stored; a store failure is a 500.
async fn durable(state: &AdminState, ticket: Option<Ticket>) -> Result<(), ApiError> {
    let Some(ticket) = ticket else {
        return Ok(());
    };
    let waker = Arc::new(Durable(tokio::sync::Notify::new()));
    loop {
        match state.journal.status(ticket) {
            TicketStatus::Durable => return Ok(()),
            TicketStatus::Failed { reason, .. } => {
                return Err(ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the store failed: {reason}"),
                ))
            }
            TicketStatus::Pending => {
                state.journal.wake_when(ticket, waker.clone());
                waker.0.notified().await;
            }
        }
    }
}

/// Whether `who` may see and close every connection: the `manage`
/// permission on every address (an `[[access]]` entry for `#` or `*`, or no
/// rules at all). Anyone else sees only their own.
fn manages_broker(state: &AdminState, who: &Principal) -> bool {
    state.ctx.broker.allows(who, Permission::Manage, "#")
}

fn visible(state: &AdminState, who: &Principal, c: &ConnectionView) -> bool {
    manages_broker(state, who) || (who.user.is_some() && c.user == who.user)
}

pub(super) async fn connections(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Vec<ConnectionView>>, ApiError> {
    let who = principal(&state, &headers).await?;
    let list = state.ctx.registry.list();
    Ok(Json(
        list.into_iter()
            .filter(|c| visible(&state, &who, c))
            .collect(),
    ))
}

/// The connection `id`, if `who` may see it.
async fn visible_connection(
    state: &AdminState,
    headers: &HeaderMap,
    id: u64,
) -> Result<(Principal, ConnectionView), ApiError> {
    let who = principal(state, headers).await?;
    let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no connection {id}"));
    let connection = state.ctx.registry.get(id).ok_or_else(not_found)?;
    if !visible(state, &who, &connection) {
        tracing::warn!(
            user = who.display(),
            connection = id,
            "admin API: connection not visible"
        );
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{} may not manage connection {id}", who.display()),
        ));
    }
    Ok((who, connection))
}

/// A connection with its consumers.
#[derive(Debug, Serialize)]
pub(super) struct ConnectionDetail {
    #[serde(flatten)]
    connection: ConnectionView,
    consumers: Vec<QueueConsumer>,
}

pub(super) async fn connection(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<ConnectionDetail>, ApiError> {
    let (who, connection) = visible_connection(&state, &headers, id).await?;
    let consumers = all_consumers(&state, &who)
        .into_iter()
        .filter(|c| c.consumer.connection == Some(id))
        .collect();
    Ok(Json(ConnectionDetail {
        connection,
        consumers,
    }))
}

pub(super) async fn close_connection(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (who, _) = visible_connection(&state, &headers, id).await?;
    // RabbitMQ's management API takes the reason in the same header.
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("closed by an operator ({})", who.display()));
    if !state.ctx.registry.close(id, reason.clone()) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no connection {id}"),
        ));
    }
    tracing::info!(user = who.display(), connection = id, reason = %reason, "connection close requested by an operator");
    Ok(Json(serde_json::json!({ "closed": id })))
}

/// A consumer with the queue it consumes from.
#[derive(Debug, Serialize)]
pub(super) struct QueueConsumer {
    queue: String,
    #[serde(flatten)]
    consumer: ConsumerView,
}

fn all_consumers(state: &AdminState, who: &Principal) -> Vec<QueueConsumer> {
    let broker = &state.ctx.broker;
    broker
        .queues()
        .iter()
        .filter(|q| broker.allows(who, Permission::Manage, q.name()))
        .flat_map(|q| {
            q.consumers().into_iter().map(|consumer| QueueConsumer {
                queue: q.name().to_owned(),
                consumer,
            })
        })
        .collect()
}

pub(super) async fn consumers(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Vec<QueueConsumer>>, ApiError> {
    let who = principal(&state, &headers).await?;
    Ok(Json(all_consumers(&state, &who)))
}

/// A topic and its subscriptions.
#[derive(Debug, Serialize)]
pub(super) struct TopicInfo {
    name: String,
    subscriptions: Vec<SubscriptionInfo>,
}

/// One subscription of a topic: its queue.
#[derive(Debug, Serialize)]
pub(super) struct SubscriptionInfo {
    queue: String,
    messages: usize,
    unsettled: usize,
    consumers: usize,
    durable: bool,
    selector: Option<String>,
}

pub(super) async fn topics(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<Vec<TopicInfo>>, ApiError> {
    let who = principal(&state, &headers).await?;
    let broker = &state.ctx.broker;
    Ok(Json(
        broker
            .topics()
            .iter()
            .filter(|t| broker.allows(&who, Permission::Manage, t.name()))
            .map(|t| TopicInfo {
                name: t.name().to_owned(),
                subscriptions: t
                    .subscriptions()
                    .iter()
                    .map(|q| {
                        let stats = q.stats();
                        SubscriptionInfo {
                            queue: q.name().to_owned(),
                            messages: stats.depth,
                            unsettled: stats.unacked,
                            consumers: stats.consumers,
                            durable: q.store_id().is_some()
                                || broker.has_durable_subscription(q.name()),
                            selector: q.subscription_selector(),
                        }
                    })
                    .collect(),
            })
            .collect(),
    ))
}

/// The body of a move.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MoveRequest {
    /// Where to: an address; absent, each message's original address.
    to: Option<String>,
    /// At most this many messages (default: all that wait).
    limit: Option<usize>,
}

pub(super) async fn move_messages(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Option<Json<MoveRequest>>,
) -> Result<Json<MoveReport>, ApiError> {
    let (who, queue) = managed(&state, &headers, &name).await?;
    let request = body.map(|Json(b)| b).unwrap_or_default();
    let broker = &state.ctx.broker;
    let to = match request.to {
        Some(to) if to == name => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("{name} cannot be moved to itself"),
            ))
        }
        Some(to) if to.is_empty() => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "`to` must name an address".into(),
            ))
        }
        Some(to) => {
            if !broker.allows(&who, Permission::Manage, &to) {
                return Err(ApiError(
                    StatusCode::FORBIDDEN,
                    format!("{} may not manage {to}", who.display()),
                ));
            }
            MoveTo::Address(to)
        }
        None => MoveTo::Original,
    };
    let (report, ticket) = broker.move_messages(&queue, &to, request.limit.unwrap_or(usize::MAX));
    durable(&state, ticket).await?;
    tracing::info!(user = who.display(), queue = %name, to = ?to, moved = report.moved, left = report.left, stopped = ?report.stopped, "messages moved by an operator");
    Ok(Json(report))
}

pub(super) async fn change_settings(
    State(state): State<AdminState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(body): Json<serde_json::Map<String, serde_json::Value>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (who, queue) = managed(&state, &headers, &name).await?;
    let mut changes = Vec::new();
    for (key, value) in body {
        let text = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("{key}: expected a string, number, boolean or null, not {other}"),
                ))
            }
        };
        changes.push((key, text));
    }
    let (settings, ticket) = state
        .ctx
        .broker
        .change_queue_settings(&queue, &changes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    durable(&state, ticket).await?;
    tracing::info!(user = who.display(), queue = %name, changes = ?changes, "queue settings changed by an operator");
    let mut answer = serde_json::to_value(queue.info()).unwrap_or_default();
    if let Some(map) = answer.as_object_mut() {
        map.insert(
            "settings".into(),
            serde_json::to_value(settings).unwrap_or_default(),
        );
    }
    Ok(Json(answer))
}
