//! The operations of the AMQP management node `$management` (OASIS "AMQP
//! Management Version 1.0", working draft 16), protocol-neutral: the
//! protocol layer reads a request's fields out of the message into a
//! [`Request`], [`answer`] decides, and the protocol layer encodes the
//! [`Answer`] or maps the [`ManagementError`] to a status code.
//!
//! The manageable entities are queues, of type [`QUEUE_TYPE`] (alias
//! [`QUEUE_TYPE_ALIAS`]); a queue's identity is its name and its attributes
//! are the admin API's ([`QueueInfo`]) plus the standard `identity` and
//! `type`. Supported: READ of one queue, QUERY of all (paged with `offset`
//! and `count`), and the discovery operations GET-TYPES, GET-ATTRIBUTES and
//! GET-OPERATIONS. A principal sees only the queues it may `manage`.

use std::collections::HashSet;

use super::access::{Permission, Principal};
use super::broker::Broker;
use super::queue_info::{AttributeValue, QueueInfo};

/// The entity type of a queue.
pub const QUEUE_TYPE: &str = "ordo:queue";

/// The short name a request may use for [`QUEUE_TYPE`].
pub const QUEUE_TYPE_ALIAS: &str = "queue";

/// The type of the management node itself (the spec's name), which node
/// operations (QUERY, GET-*) are addressed to.
pub const NODE_TYPE: &str = "org.amqp.management";

/// Standard operations this node does not perform (answered "not
/// implemented" rather than "bad request").
const NOT_IMPLEMENTED: &[&str] = &[
    "CREATE",
    "UPDATE",
    "DELETE",
    "GET-ANNOTATIONS",
    "GET-MGMT-NODES",
    "REGISTER",
    "DEREGISTER",
];

/// A request's fields, as the protocol layer read them from the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// `operation`: READ, QUERY, GET-TYPES, ...
    pub operation: Option<String>,
    /// `type`: the type of the entity operated on (for node operations,
    /// the node's own type, or absent).
    pub entity_type: Option<String>,
    /// `name` of the entity (READ).
    pub name: Option<String>,
    /// `identity` of the entity (READ; a queue's identity is its name).
    pub identity: Option<String>,
    /// `entityType`: restricts QUERY and GET-* to one type.
    pub query_type: Option<String>,
    /// `offset`: the first result of a QUERY to return (default 0).
    pub offset: Option<u64>,
    /// `count`: how many results of a QUERY to return (default all).
    pub count: Option<u64>,
    /// `attributeNames` of a QUERY's body: which attributes, in which
    /// order (empty: all).
    pub attribute_names: Vec<String>,
}

/// A type's operations, each with its argument names.
pub type Operations = Vec<(String, Vec<String>)>;

/// What a successful request answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// READ: the entity's attributes, by name.
    Entity(Vec<(String, AttributeValue)>),
    /// QUERY: the attribute names and one row of values per entity.
    Table {
        /// Attribute names, the order of each row's values.
        attributes: Vec<String>,
        /// One row per entity, in a stable order (queue names, sorted).
        rows: Vec<Vec<AttributeValue>>,
    },
    /// GET-TYPES: each type with the types it extends.
    Types(Vec<(String, Vec<String>)>),
    /// GET-ATTRIBUTES: each type with its attribute names.
    Attributes(Vec<(String, Vec<String>)>),
    /// GET-OPERATIONS: each type with its operations and their arguments.
    Operations(Vec<(String, Operations)>),
}

/// Why a request was not answered with a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagementError {
    /// The request is malformed or names an unknown operation, type or
    /// argument (status 400).
    #[error("{0}")]
    BadRequest(String),
    /// The principal may not manage that entity (status 403).
    #[error("{principal} may not manage '{name}'")]
    Forbidden {
        /// Who asked.
        principal: String,
        /// The entity.
        name: String,
    },
    /// No entity of that name (status 404).
    #[error("no queue named '{name}'")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// A standard operation this node does not perform (status 501).
    #[error("{operation} is not implemented by this management node")]
    NotImplemented {
        /// The operation.
        operation: String,
    },
}

fn bad(message: impl Into<String>) -> ManagementError {
    ManagementError::BadRequest(message.into())
}

/// Which type a request's `type` or `entityType` names.
fn known_type(name: &str) -> Option<&'static str> {
    match name {
        QUEUE_TYPE | QUEUE_TYPE_ALIAS => Some(QUEUE_TYPE),
        NODE_TYPE => Some(NODE_TYPE),
        _ => None,
    }
}

fn unknown_type(name: &str) -> ManagementError {
    bad(format!(
        "unknown entity type '{name}' (this node manages {QUEUE_TYPE}, alias {QUEUE_TYPE_ALIAS})"
    ))
}

/// The attributes of a queue entity: `name`, the standard `identity` and
/// `type`, then the rest of [`QueueInfo`]'s.
pub fn queue_attributes() -> Vec<&'static str> {
    let mut names = vec!["name", "identity", "type"];
    names.extend(QueueInfo::ATTRIBUTES.iter().filter(|a| **a != "name"));
    names
}

/// One attribute of a queue entity; null if it has no such attribute.
fn attribute(info: &QueueInfo, name: &str) -> AttributeValue {
    match name {
        "identity" => AttributeValue::String(info.name.clone()),
        "type" => AttributeValue::String(QUEUE_TYPE.to_owned()),
        _ => info.attribute(name).unwrap_or(AttributeValue::Null),
    }
}

/// Performs a request on behalf of `principal`.
pub fn answer(
    broker: &Broker,
    principal: &Principal,
    request: &Request,
) -> Result<Answer, ManagementError> {
    let Some(operation) = request.operation.as_deref() else {
        return Err(bad(
            "the request names no operation (application property `operation`)",
        ));
    };
    match operation {
        "READ" => read(broker, principal, request),
        "QUERY" => query(broker, principal, request),
        "GET-TYPES" => {
            let only = node_operation(request)?;
            Ok(Answer::Types(
                [QUEUE_TYPE]
                    .into_iter()
                    .filter(|t| only.is_none_or(|o| o == *t))
                    .map(|t| (t.to_owned(), Vec::new()))
                    .collect(),
            ))
        }
        "GET-ATTRIBUTES" => {
            let only = node_operation(request)?;
            let names = queue_attributes().into_iter().map(str::to_owned).collect();
            Ok(Answer::Attributes(
                [(QUEUE_TYPE, names)]
                    .into_iter()
                    .filter(|(t, _)| only.is_none_or(|o| o == *t))
                    .map(|(t, names)| (t.to_owned(), names))
                    .collect(),
            ))
        }
        "GET-OPERATIONS" => {
            let only = node_operation(request)?;
            Ok(Answer::Operations(
                operations()
                    .into_iter()
                    .filter(|(t, _)| only.is_none_or(|o| o == t))
                    .collect(),
            ))
        }
        op if NOT_IMPLEMENTED.contains(&op) => Err(ManagementError::NotImplemented {
            operation: op.to_owned(),
        }),
        op => Err(bad(format!("unknown operation '{op}'"))),
    }
}

/// Checks a node operation's `type` (absent, the node's type, or a queue
/// type) and returns the type its `entityType` restricts it to.
fn node_operation(request: &Request) -> Result<Option<&'static str>, ManagementError> {
    if let Some(t) = request.entity_type.as_deref() {
        known_type(t).ok_or_else(|| unknown_type(t))?;
    }
    request
        .query_type
        .as_deref()
        .map(|t| known_type(t).ok_or_else(|| unknown_type(t)))
        .transpose()
}

/// The operations of each type, with their arguments.
fn operations() -> Vec<(String, Operations)> {
    let op = |name: &str, args: &[&str]| {
        (
            name.to_owned(),
            args.iter().map(|a| (*a).to_owned()).collect(),
        )
    };
    vec![
        (
            QUEUE_TYPE.to_owned(),
            vec![op("READ", &["name", "identity"])],
        ),
        (
            NODE_TYPE.to_owned(),
            vec![
                op(
                    "QUERY",
                    &["entityType", "offset", "count", "attributeNames"],
                ),
                op("GET-TYPES", &["entityType"]),
                op("GET-ATTRIBUTES", &["entityType"]),
                op("GET-OPERATIONS", &["entityType"]),
            ],
        ),
    ]
}

/// READ: one queue's attributes.
fn read(
    broker: &Broker,
    principal: &Principal,
    request: &Request,
) -> Result<Answer, ManagementError> {
    match request.entity_type.as_deref() {
        Some(t) if known_type(t) == Some(QUEUE_TYPE) => {}
        Some(t) => return Err(unknown_type(t)),
        None => {
            return Err(bad(
                "READ needs the entity's type (application property `type`)",
            ))
        }
    }
    let name = match (&request.name, &request.identity) {
        (Some(n), Some(i)) if n != i => {
            return Err(bad(format!(
                "name '{n}' and identity '{i}' name different queues"
            )))
        }
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => return Err(bad(
            "READ needs the queue's name or identity (application property `name` or `identity`)",
        )),
    };
    // Permission first, as the admin API does: a refusal tells nothing of
    // whether the queue exists.
    if !broker.allows(principal, Permission::Manage, name) {
        return Err(ManagementError::Forbidden {
            principal: principal.display().to_owned(),
            name: name.clone(),
        });
    }
    let queue = broker
        .existing_queue(name)
        .ok_or_else(|| ManagementError::NotFound { name: name.clone() })?;
    let info = queue.info();
    Ok(Answer::Entity(
        queue_attributes()
            .into_iter()
            .map(|a| (a.to_owned(), attribute(&info, a)))
            .collect(),
    ))
}

/// QUERY: chosen attributes of every queue the principal may manage, in
/// name order, from `offset`, at most `count`.
fn query(
    broker: &Broker,
    principal: &Principal,
    request: &Request,
) -> Result<Answer, ManagementError> {
    let only = node_operation(request)?;
    let attributes: Vec<String> = if request.attribute_names.is_empty() {
        queue_attributes().into_iter().map(str::to_owned).collect()
    } else {
        let mut seen = HashSet::new();
        if let Some(dup) = request
            .attribute_names
            .iter()
            .find(|a| !seen.insert(a.as_str()))
        {
            return Err(bad(format!("attributeNames lists '{dup}' twice")));
        }
        request.attribute_names.clone()
    };
    let offset = usize::try_from(request.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let count = request
        .count
        .map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(usize::MAX));
    let rows = if only.is_some_and(|t| t != QUEUE_TYPE) {
        Vec::new()
    } else {
        broker
            .queues()
            .iter()
            .filter(|q| broker.allows(principal, Permission::Manage, q.name()))
            .skip(offset)
            .take(count)
            .map(|q| {
                let info = q.info();
                attributes.iter().map(|a| attribute(&info, a)).collect()
            })
            .collect()
    };
    Ok(Answer::Table { attributes, rows })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::core::access::{AccessRule, AccessRules};
    use crate::core::{BrokerOptions, Message};

    fn broker() -> Arc<Broker> {
        let broker = Broker::new(BrokerOptions::default());
        let orders = broker.queue("orders").unwrap();
        for _ in 0..3 {
            orders
                .publish(Arc::new(Message::from_bare(Bytes::from_static(b"abcd"))))
                .unwrap();
        }
        broker.queue("ops.audit").unwrap();
        broker
    }

    fn request(operation: &str) -> Request {
        Request {
            operation: Some(operation.to_owned()),
            ..Request::default()
        }
    }

    fn read(name: &str) -> Request {
        Request {
            entity_type: Some(QUEUE_TYPE.into()),
            name: Some(name.into()),
            ..request("READ")
        }
    }

    fn value<'a>(answer: &'a Answer, name: &str) -> &'a AttributeValue {
        let Answer::Entity(attributes) = answer else {
            panic!("not an entity: {answer:?}");
        };
        &attributes.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn alice() -> Principal {
        Principal {
            user: Some("alice".into()),
            groups: vec![],
        }
    }

    /// alice manages `ops.#` only.
    fn restrict(broker: &Broker) {
        broker.set_access(
            AccessRules::new(vec![AccessRule {
                pattern: "ops.#".into(),
                manage: vec!["alice".into()],
                ..AccessRule::default()
            }])
            .unwrap(),
        );
    }

    #[test]
    fn read_answers_a_queues_attributes() {
        let b = broker();
        let answer = answer(&b, &Principal::anonymous(), &read("orders")).unwrap();
        assert_eq!(value(&answer, "messages"), &AttributeValue::Count(3));
        assert_eq!(value(&answer, "enqueued"), &AttributeValue::Count(3));
        assert_eq!(value(&answer, "bytes"), &AttributeValue::Count(12));
        assert_eq!(value(&answer, "active_consumer"), &AttributeValue::Null);
        assert_eq!(value(&answer, "exclusive"), &AttributeValue::Bool(false));
        assert_eq!(
            value(&answer, "identity"),
            &AttributeValue::String("orders".into())
        );
        assert_eq!(
            value(&answer, "type"),
            &AttributeValue::String(QUEUE_TYPE.into())
        );
        let Answer::Entity(attributes) = &answer else {
            unreachable!()
        };
        let names: Vec<&str> = attributes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, queue_attributes());
        // The alias and identity work as well.
        let by_identity = Request {
            entity_type: Some("queue".into()),
            name: None,
            identity: Some("orders".into()),
            ..read("orders")
        };
        // (Every attribute but the oldest message's age, which moves with
        // the clock between the two reads.)
        let timeless = |answer: Answer| match answer {
            Answer::Entity(mut attributes) => {
                attributes.retain(|(n, _)| n != "oldest_message_age_ms");
                attributes
            }
            other => panic!("not an entity: {other:?}"),
        };
        assert_eq!(
            timeless(super::answer(&b, &Principal::anonymous(), &by_identity).unwrap()),
            timeless(answer)
        );
    }

    #[test]
    fn read_refusals() {
        let b = broker();
        let who = Principal::anonymous();
        let err = |r: Request| super::answer(&b, &who, &r).unwrap_err();
        assert_eq!(
            err(read("nope")),
            ManagementError::NotFound {
                name: "nope".into()
            }
        );
        assert!(matches!(
            err(Request {
                entity_type: None,
                ..read("orders")
            }),
            ManagementError::BadRequest(_)
        ));
        assert!(matches!(
            err(Request {
                entity_type: Some("ordo:topic".into()),
                ..read("orders")
            }),
            ManagementError::BadRequest(m) if m.contains("ordo:topic")
        ));
        assert!(matches!(
            err(Request {
                name: None,
                ..read("orders")
            }),
            ManagementError::BadRequest(_)
        ));
        assert!(matches!(
            err(Request {
                identity: Some("other".into()),
                ..read("orders")
            }),
            ManagementError::BadRequest(_)
        ));
        assert!(matches!(
            err(Request::default()),
            ManagementError::BadRequest(_)
        ));
        assert!(
            matches!(err(request("FROB")), ManagementError::BadRequest(m) if m.contains("FROB"))
        );
        assert_eq!(
            err(request("DELETE")),
            ManagementError::NotImplemented {
                operation: "DELETE".into()
            }
        );
    }

    #[test]
    fn manage_permission_decides_what_is_seen() {
        let b = broker();
        restrict(&b);
        // Forbidden even where the queue does not exist: nothing leaks.
        for name in ["orders", "nope"] {
            assert_eq!(
                answer(&b, &alice(), &read(name)).unwrap_err(),
                ManagementError::Forbidden {
                    principal: "alice".into(),
                    name: name.into()
                }
            );
        }
        assert!(answer(&b, &alice(), &read("ops.audit")).is_ok());
        let Answer::Table { rows, .. } = answer(
            &b,
            &alice(),
            &Request {
                attribute_names: vec!["name".into()],
                ..request("QUERY")
            },
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(rows, vec![vec![AttributeValue::String("ops.audit".into())]]);
        let Answer::Table { rows, .. } =
            answer(&b, &Principal::anonymous(), &request("QUERY")).unwrap()
        else {
            panic!()
        };
        assert!(rows.is_empty(), "anonymous manages nothing: {rows:?}");
    }

    #[test]
    fn query_selects_attributes_and_pages() {
        let b = broker();
        let who = Principal::anonymous();
        let q = |r: Request| match answer(&b, &who, &r).unwrap() {
            Answer::Table { attributes, rows } => (attributes, rows),
            other => panic!("{other:?}"),
        };
        let (attributes, rows) = q(request("QUERY"));
        assert_eq!(attributes, queue_attributes());
        // DLQ, ops.audit, orders: sorted by name.
        let names: Vec<&AttributeValue> = rows.iter().map(|r| &r[0]).collect();
        let s = |v: &str| AttributeValue::String(v.into());
        assert_eq!(names, [&s("DLQ"), &s("ops.audit"), &s("orders")]);
        let chosen = Request {
            attribute_names: vec!["messages".into(), "name".into(), "colour".into()],
            query_type: Some("queue".into()),
            entity_type: Some(NODE_TYPE.into()),
            offset: Some(2),
            count: Some(5),
            ..request("QUERY")
        };
        let (attributes, rows) = q(chosen.clone());
        assert_eq!(attributes, ["messages", "name", "colour"]);
        assert_eq!(
            rows,
            vec![vec![
                AttributeValue::Count(3),
                s("orders"),
                AttributeValue::Null
            ]]
        );
        let (_, rows) = q(Request {
            offset: Some(0),
            count: Some(1),
            ..chosen.clone()
        });
        assert_eq!(rows.len(), 1);
        let (_, rows) = q(Request {
            offset: Some(u64::MAX),
            ..chosen.clone()
        });
        assert!(rows.is_empty());
        // The node itself is not queried as a queue.
        let (_, rows) = q(Request {
            query_type: Some(NODE_TYPE.into()),
            ..chosen.clone()
        });
        assert!(rows.is_empty());
        for bad in [
            Request {
                attribute_names: vec!["name".into(), "name".into()],
                ..chosen.clone()
            },
            Request {
                query_type: Some("ordo:topic".into()),
                ..chosen.clone()
            },
            Request {
                entity_type: Some("ordo:topic".into()),
                ..chosen.clone()
            },
        ] {
            assert!(matches!(
                answer(&b, &who, &bad),
                Err(ManagementError::BadRequest(_))
            ));
        }
    }

    #[test]
    fn discovery_operations() {
        let b = broker();
        let who = Principal::anonymous();
        assert_eq!(
            answer(&b, &who, &request("GET-TYPES")).unwrap(),
            Answer::Types(vec![(QUEUE_TYPE.into(), vec![])])
        );
        let Answer::Attributes(types) = answer(&b, &who, &request("GET-ATTRIBUTES")).unwrap()
        else {
            panic!()
        };
        assert_eq!(types[0].0, QUEUE_TYPE);
        assert_eq!(types[0].1, queue_attributes());
        let Answer::Operations(types) = answer(&b, &who, &request("GET-OPERATIONS")).unwrap()
        else {
            panic!()
        };
        assert_eq!(types[0].1[0].0, "READ");
        assert_eq!(types[1].0, NODE_TYPE);
        let only_node = Request {
            query_type: Some(NODE_TYPE.into()),
            ..request("GET-OPERATIONS")
        };
        let Answer::Operations(types) = answer(&b, &who, &only_node).unwrap() else {
            panic!()
        };
        assert_eq!(types.len(), 1);
        assert!(matches!(
            answer(
                &b,
                &who,
                &Request {
                    query_type: Some("x".into()),
                    ..request("GET-TYPES")
                }
            ),
            Err(ManagementError::BadRequest(_))
        ));
    }
}
