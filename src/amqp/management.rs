//! The AMQP management node `$management` (OASIS "AMQP Management Version
//! 1.0", working draft 16) on the wire: a producer link whose target is
//! `$management` (or an anonymous-relay message whose `to` is) carries
//! requests; each is answered with a response message routed to its
//! `reply-to`. What a request does is `core::management`'s decision; this
//! module reads requests out of messages, encodes responses and routes them.
//!
//! A response carries the request's `correlation-id` (its `message-id` when
//! it has none, as the specification says), `statusCode` (int) and
//! `statusDescription` application properties and an amqp-value body.
//!
//! Where a response goes, by the request's `reply-to`:
//! 1. a receiver of this connection attached with source `$management` (the
//!    pattern of Azure and Qpid management clients) has a reply queue of its
//!    own, found by the receiver's target address, or its link name when it
//!    has none; it lives as long as the link and only this connection's
//!    requests reach it, so two clients may use the same reply address;
//! 2. otherwise an existing node of that name: a dynamic receiver's queue
//!    (Proton's usual pattern) or any queue, to which the requester needs
//!    the `send` permission, as a relayed message would.
//!
//! A request that cannot be answered (no `reply-to`, or one that names no
//! node) is rejected; one that can is accepted once its response is queued,
//! whatever its status code.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use fe2o3_amqp::types::definitions::{AmqpError as Condition, Error as AmqpError};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, MessageId, Properties, TargetArchetype,
};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};

use super::address;
use super::error::{self, cond};
use super::message;
use super::session::{send_rejected, Ctx, Session};
use crate::core::access::Permission;
use crate::core::management::{self as ops, Answer, ManagementError, Request};
use crate::core::{AttributeValue, Message, Node, Queue};
use crate::store::Ticket;

/// The management node's address.
pub const ADDRESS: &str = "$management";

/// Whether an address names the management node (with or without a
/// `queue://` prefix or options; [`no_options`] refuses the latter).
pub fn is_address(addr: &str) -> bool {
    address::parse(addr, None).is_ok_and(|node| node.name == ADDRESS)
}

/// Refuses address options on `$management`.
pub fn no_options(addr: &str) -> Result<(), AmqpError> {
    match address::parse(addr, None) {
        Ok(node) if node.options.is_empty() => Ok(()),
        _ => Err(cond::invalid_field(format!(
            "{ADDRESS} takes no address options: '{addr}'"
        ))),
    }
}

/// The reply queues of this connection's receivers attached to
/// `$management`, by reply address. Owned by the connection; an entry whose
/// link went (its queue deleted) is dropped at the next attach or ignored.
#[derive(Debug, Default)]
pub struct ReplyQueues {
    /// Reply address → the link's queue.
    by_address: HashMap<String, Arc<Queue>>,
}

impl ReplyQueues {
    /// The live reply queue of `address`.
    fn get(&self, address: &str) -> Option<Arc<Queue>> {
        self.by_address
            .get(address)
            .filter(|q| !q.is_deleted())
            .cloned()
    }

    /// Registers a receiver's reply queue; refused while another receiver
    /// of this connection uses the same address.
    fn insert(&mut self, address: String, queue: Arc<Queue>) -> Result<(), AmqpError> {
        self.by_address.retain(|_, q| !q.is_deleted());
        if self.by_address.contains_key(&address) {
            return Err(error::error(
                Condition::ResourceLocked,
                format!(
                    "another receiver of this connection gets {ADDRESS} replies for '{address}'"
                ),
            ));
        }
        self.by_address.insert(address, queue);
        Ok(())
    }
}

/// A consumer attaches with source `$management`: it gets a reply queue of
/// its own, registered under its target address (or link name). The queue
/// goes with the link (the caller's cleanup deletes it).
pub(super) fn attach_replies(attach: &Attach, ctx: &mut Ctx<'_>) -> Result<Arc<Queue>, AmqpError> {
    let address = match attach.target.as_deref() {
        Some(TargetArchetype::Target(t)) => t.address.clone(),
        _ => None,
    }
    .unwrap_or_else(|| attach.name.clone());
    let queue = ctx.broker.create_dynamic_queue(ctx.connection);
    if let Err(e) = ctx.replies.insert(address.clone(), Arc::clone(&queue)) {
        ctx.broker.delete_queue(&queue);
        return Err(e);
    }
    tracing::info!(link = %attach.name, reply_to = %address, queue = queue.name(), "management replies attached");
    Ok(queue)
}

/// Where a response goes and what it answers.
#[derive(Debug, Clone, Default, PartialEq)]
struct Envelope {
    /// The request's `reply-to`.
    reply_to: Option<String>,
    /// The request's `correlation-id`, else its `message-id`.
    correlation_id: Option<MessageId>,
}

/// Reads a request from a bare message: its envelope (or why the message
/// cannot be answered at all), and its fields or why they are malformed
/// (answered with status 400).
fn read_request(bare: &[u8]) -> Result<(Envelope, Result<Request, String>), String> {
    let mut envelope = Envelope::default();
    let mut application = None;
    for (code, section) in message::sections(bare) {
        match code {
            0x73 => {
                super::wellformed::check_exact(section)
                    .map_err(|e| format!("malformed properties: {e}"))?;
                let p: Properties = serde_amqp::from_slice(section)
                    .map_err(|e| format!("malformed properties: {e}"))?;
                envelope.reply_to = p.reply_to;
                envelope.correlation_id = p.correlation_id.or(p.message_id);
            }
            0x74 => {
                application = Some(
                    super::wellformed::check_exact(section)
                        .map_err(|e| e.to_string())
                        .and_then(|()| {
                            serde_amqp::from_slice::<ApplicationProperties>(section)
                                .map_err(|e| e.to_string())
                        })
                        .map_err(|e| format!("malformed application properties: {e}")),
                );
            }
            _ => {}
        }
    }
    let request = match application {
        None => Err("a management request needs application properties (`operation`, ...)".into()),
        Some(Err(e)) => Err(e),
        Some(Ok(properties)) => request_fields(&properties, bare),
    };
    Ok((envelope, request))
}

/// The request's fields from its application properties and (for QUERY)
/// its body.
fn request_fields(properties: &ApplicationProperties, bare: &[u8]) -> Result<Request, String> {
    let text = |key: &str| -> Result<Option<String>, String> {
        match properties.0.get(key) {
            None | Some(SimpleValue::Null) => Ok(None),
            Some(SimpleValue::String(s)) => Ok(Some(s.clone())),
            Some(SimpleValue::Symbol(s)) => Ok(Some(s.as_str().to_owned())),
            Some(other) => Err(format!(
                "application property `{key}` must be a string, not {other:?}"
            )),
        }
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        let signed = |n: i64| {
            u64::try_from(n).map_err(|_| format!("application property `{key}` is negative"))
        };
        match properties.0.get(key) {
            None | Some(SimpleValue::Null) => Ok(None),
            Some(SimpleValue::Ubyte(n)) => Ok(Some(u64::from(*n))),
            Some(SimpleValue::Ushort(n)) => Ok(Some(u64::from(*n))),
            Some(SimpleValue::Uint(n)) => Ok(Some(u64::from(*n))),
            Some(SimpleValue::Ulong(n)) => Ok(Some(*n)),
            Some(SimpleValue::Byte(n)) => signed(i64::from(*n)).map(Some),
            Some(SimpleValue::Short(n)) => signed(i64::from(*n)).map(Some),
            Some(SimpleValue::Int(n)) => signed(i64::from(*n)).map(Some),
            Some(SimpleValue::Long(n)) => signed(*n).map(Some),
            Some(other) => Err(format!(
                "application property `{key}` must be an integer, not {other:?}"
            )),
        }
    };
    let mut request = Request {
        operation: text("operation")?,
        entity_type: text("type")?,
        name: text("name")?,
        identity: text("identity")?,
        query_type: text("entityType")?,
        offset: number("offset")?,
        count: number("count")?,
        attribute_names: Vec::new(),
    };
    if request.operation.as_deref() == Some("QUERY") {
        request.attribute_names = attribute_names(bare)?;
    }
    Ok(request)
}

/// `attributeNames` from a QUERY's amqp-value map body (absent: all).
fn attribute_names(bare: &[u8]) -> Result<Vec<String>, String> {
    let Some(encoded) = message::amqp_value(bare) else {
        return Ok(Vec::new());
    };
    super::wellformed::check_exact(encoded).map_err(|e| format!("malformed body: {e}"))?;
    let body: Value =
        serde_amqp::from_slice(encoded).map_err(|e| format!("malformed body: {e}"))?;
    let as_text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let map = match body {
        Value::Null => return Ok(Vec::new()),
        Value::Map(map) => map,
        _ => return Err("the body of a QUERY must be a map".into()),
    };
    let Some(names) = map
        .iter()
        .find(|(k, _)| as_text(k).as_deref() == Some("attributeNames"))
        .map(|(_, v)| v)
    else {
        return Ok(Vec::new());
    };
    let items: &[Value] = match names {
        Value::List(items) => items,
        Value::Array(items) => &items.0,
        Value::Null => &[],
        _ => return Err("attributeNames must be a list of strings".into()),
    };
    items
        .iter()
        .map(|v| as_text(v).ok_or_else(|| "attributeNames must be a list of strings".to_string()))
        .collect()
}

/// An attribute value as AMQP: counts as `long`, names as `string`.
fn attribute_value(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::String(s) => Value::String(s.clone()),
        AttributeValue::Count(n) => Value::Long(i64::try_from(*n).unwrap_or(i64::MAX)),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null => Value::Null,
    }
}

fn string_map(entries: impl IntoIterator<Item = (String, Value)>) -> Value {
    let mut map = OrderedMap::new();
    for (k, v) in entries {
        map.insert(Value::String(k), v);
    }
    Value::Map(map)
}

fn strings(items: &[String]) -> Value {
    Value::List(items.iter().cloned().map(Value::String).collect())
}

/// A successful answer's body.
fn answer_body(answer: &Answer) -> Value {
    match answer {
        Answer::Entity(attributes) => string_map(
            attributes
                .iter()
                .map(|(k, v)| (k.clone(), attribute_value(v))),
        ),
        Answer::Table { attributes, rows } => string_map([
            ("attributeNames".to_owned(), strings(attributes)),
            (
                "results".to_owned(),
                Value::List(
                    rows.iter()
                        .map(|row| Value::List(row.iter().map(attribute_value).collect()))
                        .collect(),
                ),
            ),
        ]),
        Answer::Types(types) | Answer::Attributes(types) => {
            string_map(types.iter().map(|(t, names)| (t.clone(), strings(names))))
        }
        Answer::Operations(types) => string_map(types.iter().map(|(t, operations)| {
            (
                t.clone(),
                string_map(
                    operations
                        .iter()
                        .map(|(op, args)| (op.clone(), strings(args))),
                ),
            )
        })),
    }
}

/// The status code and description of an outcome.
fn status(result: &Result<Answer, ManagementError>) -> (i32, String) {
    match result {
        Ok(_) => (200, "OK".into()),
        Err(e) => {
            let code = match e {
                ManagementError::BadRequest(_) => 400,
                ManagementError::Forbidden { .. } => 403,
                ManagementError::NotFound { .. } => 404,
                ManagementError::NotImplemented { .. } => 501,
            };
            (code, e.to_string())
        }
    }
}

/// Encodes the response to a request: properties (`to` = its reply-to,
/// `correlation-id`), application properties (`statusCode`,
/// `statusDescription`, and `count` for a QUERY), and an amqp-value body
/// (null for an error).
fn encode_response(
    envelope: &Envelope,
    result: &Result<Answer, ManagementError>,
) -> Result<Vec<u8>, serde_amqp::Error> {
    let (code, description) = status(result);
    let properties = Properties {
        to: envelope.reply_to.clone(),
        correlation_id: envelope.correlation_id.clone(),
        ..Properties::default()
    };
    let mut application = ApplicationProperties::default();
    application
        .0
        .insert("statusCode".to_owned(), SimpleValue::Int(code));
    application.0.insert(
        "statusDescription".to_owned(),
        SimpleValue::String(description),
    );
    if let Ok(Answer::Table { rows, .. }) = result {
        let count = i32::try_from(rows.len()).unwrap_or(i32::MAX);
        application
            .0
            .insert("count".to_owned(), SimpleValue::Int(count));
    }
    let body = result.as_ref().map_or(Value::Null, answer_body);
    let mut out = serde_amqp::to_vec(&properties)?;
    out.extend(serde_amqp::to_vec(&application)?);
    out.extend(serde_amqp::to_vec(&AmqpValue(body))?);
    Ok(out)
}

/// The node a response to `reply_to` goes to (see the module's doc).
fn reply_node(reply_to: &str, ctx: &Ctx<'_>) -> Result<Node, AmqpError> {
    if let Some(queue) = ctx.replies.get(reply_to) {
        return Ok(Node::Queue(queue));
    }
    let node = address::parse(reply_to, None).map_err(|e| cond::invalid_field(e.to_string()))?;
    if !node.options.is_empty() || node.name == ADDRESS {
        return Err(cond::invalid_field(format!(
            "reply-to '{reply_to}' cannot take a response"
        )));
    }
    if !ctx.broker.exists(&node.name, node.kind) {
        return Err(cond::not_found(format!(
            "reply-to '{reply_to}' names no node: attach a receiver first (dynamic, or with source {ADDRESS})"
        )));
    }
    ctx.authorize(Permission::Send, &node.name, node.kind)?;
    ctx.broker
        .resolve(&node.name, node.kind, &[])
        .map_err(|e| error::from_core(&e))
}

/// Answers a request and queues the response; the journal ticket to wait
/// for, if the response was stored.
fn handle(request: &Message, ctx: &Ctx<'_>) -> Result<Option<Ticket>, AmqpError> {
    let (envelope, fields) = read_request(&request.bare).map_err(cond::decode)?;
    let Some(reply_to) = envelope.reply_to.as_deref() else {
        return Err(cond::invalid_field(
            "a management request needs properties.reply-to",
        ));
    };
    let node = reply_node(reply_to, ctx)?;
    let result = fields
        .as_ref()
        .map_err(|e| ManagementError::BadRequest(e.clone()))
        .and_then(|r| ops::answer(ctx.broker, ctx.principal, r));
    let (code, description) = status(&result);
    match (&result, &fields) {
        (Err(ManagementError::Forbidden { name, .. }), _) => tracing::warn!(
            user = ctx.principal.display(),
            queue = %name,
            "management: manage denied"
        ),
        (Ok(_), Ok(r)) => tracing::debug!(
            user = ctx.principal.display(),
            operation = r.operation.as_deref(),
            entity_type = r.entity_type.as_deref(),
            name = r.name.as_deref().or(r.identity.as_deref()),
            reply_to,
            status = code,
            "management request answered"
        ),
        _ => tracing::debug!(
            user = ctx.principal.display(),
            reply_to,
            status = code,
            description = %description,
            "management request refused"
        ),
    }
    let bytes = encode_response(&envelope, &result)
        .map_err(|e| cond::internal(format!("cannot encode the response: {e}")))?;
    let response = message::parse(Bytes::from(bytes))
        .map_err(|e| cond::internal(format!("cannot read the response: {e}")))?;
    node.publish(Arc::new(response))
        .map_err(|e| error::from_core(&e))
}

impl Session {
    /// A request to `$management` (parsed, neither oversized nor in a
    /// transaction): answered, then settled.
    pub(super) fn on_management(
        &mut self,
        delivery_id: u32,
        settled: bool,
        request: &Message,
        ctx: &mut Ctx<'_>,
    ) {
        match handle(request, ctx) {
            Ok(None) if !settled => self.accepted.push(delivery_id),
            Ok(Some(ticket)) if !settled => self.stored_accepts.push_back((ticket, delivery_id)),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(condition = ?e.condition, description = ?e.description, "management request rejected");
                if !settled {
                    send_rejected(ctx.out, self.channel, delivery_id, e);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "management_tests.rs"]
mod tests;
