//! Reading management requests and writing responses, with no broker.

use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, MessageId, Properties};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Symbol, Value};

use super::*;

fn encode(
    properties: Option<Properties>,
    app: &[(&str, SimpleValue)],
    body: Option<Value>,
) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(p) = properties {
        out.extend(serde_amqp::to_vec(&p).unwrap());
    }
    if !app.is_empty() {
        let mut a = ApplicationProperties::default();
        for (k, v) in app {
            a.0.insert((*k).to_owned(), v.clone());
        }
        out.extend(serde_amqp::to_vec(&a).unwrap());
    }
    if let Some(b) = body {
        out.extend(serde_amqp::to_vec(&AmqpValue(b)).unwrap());
    }
    out
}

fn props(reply_to: &str) -> Properties {
    Properties::builder()
        .message_id(MessageId::from(7u64))
        .reply_to(reply_to)
        .build()
}

fn s(v: &str) -> SimpleValue {
    SimpleValue::String(v.to_owned())
}

fn query_body(names: &[&str]) -> Value {
    let mut map = OrderedMap::new();
    map.insert(
        Value::String("attributeNames".into()),
        Value::List(names.iter().map(|n| Value::String((*n).into())).collect()),
    );
    Value::Map(map)
}

#[test]
fn a_read_request_is_read() {
    let bytes = encode(
        Some(props("replies")),
        &[
            ("operation", s("READ")),
            ("type", SimpleValue::Symbol(Symbol::from("ordo:queue"))),
            ("name", s("orders")),
        ],
        // READ ignores its body.
        Some(Value::Int(5)),
    );
    let (envelope, request) = read_request(&bytes).unwrap();
    assert_eq!(envelope.reply_to.as_deref(), Some("replies"));
    assert_eq!(envelope.correlation_id, Some(MessageId::from(7u64)));
    assert_eq!(
        request.unwrap(),
        Request {
            operation: Some("READ".into()),
            entity_type: Some("ordo:queue".into()),
            name: Some("orders".into()),
            ..Request::default()
        }
    );
}

#[test]
fn the_correlation_id_wins_over_the_message_id() {
    let p = Properties::builder()
        .message_id(MessageId::from(1u64))
        .correlation_id(MessageId::String("req-1".into()))
        .reply_to("r")
        .build();
    let (envelope, _) = read_request(&encode(Some(p), &[("operation", s("READ"))], None)).unwrap();
    assert_eq!(
        envelope.correlation_id,
        Some(MessageId::String("req-1".into()))
    );
}

#[test]
fn a_query_request_is_read() {
    let bytes = encode(
        Some(props("r")),
        &[
            ("operation", s("QUERY")),
            ("entityType", s("queue")),
            ("offset", SimpleValue::Uint(2)),
            ("count", SimpleValue::Long(10)),
        ],
        Some(query_body(&["name", "messages"])),
    );
    let request = read_request(&bytes).unwrap().1.unwrap();
    assert_eq!(request.query_type.as_deref(), Some("queue"));
    assert_eq!((request.offset, request.count), (Some(2), Some(10)));
    assert_eq!(request.attribute_names, ["name", "messages"]);
    // No body, a null body, an empty list: all attributes.
    for body in [None, Some(Value::Null), Some(query_body(&[]))] {
        let bytes = encode(Some(props("r")), &[("operation", s("QUERY"))], body);
        assert!(read_request(&bytes)
            .unwrap()
            .1
            .unwrap()
            .attribute_names
            .is_empty());
    }
}

#[test]
fn malformed_fields_are_bad_requests_not_failures() {
    let bad = |app: &[(&str, SimpleValue)], body: Option<Value>| {
        let (envelope, request) = read_request(&encode(Some(props("r")), app, body)).unwrap();
        assert_eq!(envelope.reply_to.as_deref(), Some("r"), "still answerable");
        request.unwrap_err()
    };
    assert!(bad(&[("operation", SimpleValue::Int(1))], None).contains("`operation`"));
    assert!(bad(
        &[("operation", s("QUERY")), ("offset", SimpleValue::Int(-1))],
        None
    )
    .contains("negative"));
    assert!(bad(&[("operation", s("QUERY")), ("count", s("ten"))], None).contains("integer"));
    assert!(bad(&[("operation", s("QUERY"))], Some(Value::Int(3))).contains("map"));
    let mut map = OrderedMap::new();
    map.insert(
        Value::String("attributeNames".into()),
        Value::List(vec![Value::Int(1)]),
    );
    assert!(bad(&[("operation", s("QUERY"))], Some(Value::Map(map))).contains("list of strings"));
    // No application properties at all.
    assert!(bad(&[], None).contains("application properties"));
}

#[test]
fn unreadable_properties_cannot_be_answered() {
    // A properties section whose list claims more bytes than there are.
    let bytes = [0x00, 0x53, 0x73, 0xc0, 0x02, 0x01, 0xa1];
    assert!(read_request(&bytes).is_err());
}

/// Decodes a response's sections.
fn decode(bytes: &[u8]) -> (Properties, ApplicationProperties, Value) {
    let sections: Vec<(u64, &[u8])> = message::sections(bytes).collect();
    assert_eq!(
        sections.len(),
        3,
        "properties, application properties, body"
    );
    let p: Properties = serde_amqp::from_slice(sections[0].1).unwrap();
    let a: ApplicationProperties = serde_amqp::from_slice(sections[1].1).unwrap();
    let AmqpValue(v): AmqpValue<Value> = serde_amqp::from_slice(sections[2].1).unwrap();
    (p, a, v)
}

fn envelope() -> Envelope {
    Envelope {
        reply_to: Some("replies".into()),
        correlation_id: Some(MessageId::String("c-1".into())),
    }
}

#[test]
fn a_read_response_carries_status_correlation_and_attributes() {
    let answer = Answer::Entity(vec![
        ("name".into(), AttributeValue::String("orders".into())),
        ("messages".into(), AttributeValue::Count(3)),
        ("exclusive".into(), AttributeValue::Bool(true)),
        ("active_consumer".into(), AttributeValue::Null),
    ]);
    let (p, a, body) = decode(&encode_response(&envelope(), &Ok(answer)).unwrap());
    assert_eq!(p.to.as_deref(), Some("replies"));
    assert_eq!(p.correlation_id, Some(MessageId::String("c-1".into())));
    assert_eq!(a.0.get("statusCode"), Some(&SimpleValue::Int(200)));
    assert_eq!(a.0.get("statusDescription"), Some(&s("OK")));
    let Value::Map(map) = body else {
        panic!("{body:?}")
    };
    let get = |k: &str| map.get(&Value::String(k.into())).unwrap().clone();
    assert_eq!(get("name"), Value::String("orders".into()));
    assert_eq!(get("messages"), Value::Long(3));
    assert_eq!(get("exclusive"), Value::Bool(true));
    assert_eq!(get("active_consumer"), Value::Null);
}

#[test]
fn a_query_response_has_names_results_and_count() {
    let answer = Answer::Table {
        attributes: vec!["name".into(), "messages".into()],
        rows: vec![
            vec![AttributeValue::String("a".into()), AttributeValue::Count(1)],
            vec![
                AttributeValue::String("b".into()),
                AttributeValue::Count(u64::MAX),
            ],
        ],
    };
    let (_, a, body) = decode(&encode_response(&envelope(), &Ok(answer)).unwrap());
    assert_eq!(a.0.get("count"), Some(&SimpleValue::Int(2)));
    let Value::Map(map) = body else {
        panic!("{body:?}")
    };
    assert_eq!(
        map.get(&Value::String("attributeNames".into())),
        Some(&Value::List(vec![
            Value::String("name".into()),
            Value::String("messages".into())
        ]))
    );
    assert_eq!(
        map.get(&Value::String("results".into())),
        Some(&Value::List(vec![
            Value::List(vec![Value::String("a".into()), Value::Long(1)]),
            Value::List(vec![Value::String("b".into()), Value::Long(i64::MAX)]),
        ]))
    );
}

#[test]
fn errors_map_to_status_codes_with_a_null_body() {
    for (error, code) in [
        (ManagementError::BadRequest("x".into()), 400),
        (
            ManagementError::Forbidden {
                principal: "bob".into(),
                name: "q".into(),
            },
            403,
        ),
        (ManagementError::NotFound { name: "q".into() }, 404),
        (
            ManagementError::NotImplemented {
                operation: "CREATE".into(),
            },
            501,
        ),
    ] {
        let description = error.to_string();
        let (_, a, body) = decode(&encode_response(&envelope(), &Err(error)).unwrap());
        assert_eq!(a.0.get("statusCode"), Some(&SimpleValue::Int(code)));
        assert_eq!(a.0.get("statusDescription"), Some(&s(&description)));
        assert_eq!(a.0.get("count"), None);
        assert_eq!(body, Value::Null);
    }
}

#[test]
fn discovery_answers_are_maps_of_types() {
    let body = answer_body(&Answer::Operations(vec![(
        "ordo:queue".into(),
        vec![("READ".into(), vec!["name".into()])],
    )]));
    let mut inner = OrderedMap::new();
    inner.insert(
        Value::String("READ".into()),
        Value::List(vec![Value::String("name".into())]),
    );
    let mut outer = OrderedMap::new();
    outer.insert(Value::String("ordo:queue".into()), Value::Map(inner));
    assert_eq!(body, Value::Map(outer));
}

#[test]
fn the_management_address_is_recognised() {
    assert!(is_address("$management"));
    assert!(is_address("queue://$management"));
    assert!(is_address("$management?x=1"));
    assert!(no_options("$management?x=1").is_err());
    assert!(no_options("$management").is_ok());
    assert!(!is_address("$management2"));
    assert!(!is_address("management"));
}
