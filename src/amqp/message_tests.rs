use super::*;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Data, DeliveryAnnotations, Footer, MessageAnnotations,
    Properties,
};
use fe2o3_amqp::types::primitives::{Binary, Value};
use serde_amqp::to_vec;
use std::sync::Arc;

use crate::core::ConsumerId;

fn encode<T: serde::Serialize>(section: &T) -> Vec<u8> {
    to_vec(section).expect("encodes")
}

fn delivery(message: Message, delivery_count: u32, first_acquirer: bool) -> Delivery {
    Delivery {
        consumer: ConsumerId(1),
        delivery_id: 0,
        message: Arc::new(message),
        delivery_count,
        first_acquirer,
        settled: false,
        paged: None,
        release: None,
        group_first: false,
    }
}

fn flatten(p: &Payload) -> Vec<u8> {
    let mut out = BytesMut::new();
    p.copy_range(&mut out, 0, p.len());
    out.to_vec()
}

#[test]
fn bare_message_passes_through_and_delivery_annotations_are_dropped() {
    let da = encode(&DeliveryAnnotations::builder().insert("hop", 1i32).build());
    let ma = encode(&MessageAnnotations::builder().insert("x-opt-a", "b").build());
    let props = encode(
        &Properties::builder()
            .message_id(7u64)
            .group_id(String::from("g"))
            .build(),
    );
    let app = encode(
        &ApplicationProperties::builder()
            .insert("k", fe2o3_amqp::types::primitives::SimpleValue::Int(3))
            .build(),
    );
    let body = encode(&Data(Binary::from(vec![1u8, 2, 3])));
    let footer = encode(&Footer::builder().insert("f", 1i32).build());
    let bytes: Vec<u8> = [
        da.clone(),
        ma.clone(),
        props.clone(),
        app.clone(),
        body.clone(),
        footer.clone(),
    ]
    .concat();
    let m = parse(Bytes::from(bytes)).unwrap();
    assert!(!m.header.present);
    assert_eq!(&m.annotations[..], &ma[..]);
    assert_eq!(&m.bare[..], &[props, app, body, footer].concat()[..]);
    // First delivery, no header sent by the producer: no header added.
    let out = flatten(&delivery_payload(&delivery(m, 0, true)));
    assert_eq!(out, [ma, m_bare_of(&out)].concat());
}

fn m_bare_of(out: &[u8]) -> Vec<u8> {
    // Everything after the message annotations section.
    let (_, len) = section_at(out, 0).unwrap();
    out[len..].to_vec()
}

#[test]
fn header_is_parsed_and_rewritten_with_the_brokers_count() {
    let header = Header {
        durable: true,
        priority: Priority(7),
        ttl: Some(5000),
        first_acquirer: false,
        delivery_count: 2,
    };
    let body = encode(&AmqpValue(Value::String("hi".into())));
    let bytes = [encode(&header), body.clone()].concat();
    let m = parse(Bytes::from(bytes)).unwrap();
    assert_eq!(
        m.header,
        HeaderFields {
            durable: true,
            priority: 7,
            ttl: Some(5000),
            delivery_count: 2,
            present: true
        }
    );
    let out = flatten(&delivery_payload(&delivery(m, 3, false)));
    let h: Header = serde_amqp::from_slice(&out).unwrap();
    assert_eq!(
        (
            h.durable,
            h.priority.0,
            h.ttl,
            h.delivery_count,
            h.first_acquirer
        ),
        (true, 7, Some(5000), 3, false)
    );
    assert_eq!(&out[out.len() - body.len()..], &body[..]);
}

#[test]
fn redelivered_message_without_header_gets_one() {
    let body = encode(&AmqpValue(Value::Int(1)));
    let m = parse(Bytes::from(body.clone())).unwrap();
    let out = flatten(&delivery_payload(&delivery(m, 1, false)));
    let h: Header = serde_amqp::from_slice(&out).unwrap();
    assert_eq!(h.delivery_count, 1);
    assert!(out.ends_with(&body));
}

#[test]
fn message_without_body_is_fine() {
    let props = encode(&Properties::builder().subject("none").build());
    let m = parse(Bytes::from(props.clone())).unwrap();
    assert_eq!(&m.bare[..], &props[..]);
}

#[test]
fn symbolic_descriptors_are_understood() {
    // amqp:value:* with a symbolic descriptor, then a string value.
    let mut bytes = vec![0x00, 0xa3, 12];
    bytes.extend_from_slice(b"amqp:value:*");
    bytes.extend_from_slice(&[0xa1, 2, b'h', b'i']);
    let m = parse(Bytes::from(bytes.clone())).unwrap();
    assert_eq!(&m.bare[..], &bytes[..]);
}

#[test]
fn garbage_is_a_decode_error_not_a_panic() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0xff],
        vec![0x00],
        vec![0x00, 0x53],
        vec![0x00, 0x53, 0x77],
        vec![0x00, 0x53, 0x77, 0xb1, 0xff, 0xff, 0xff, 0xff],
        vec![0x00, 0x53, 0x99, 0x40],
        vec![0x00, 0x00, 0x00, 0x00],
        vec![0x00, 0x53, 0x70, 0xa1, 0x01, 0x41],
    ];
    for case in cases {
        assert!(parse(Bytes::from(case.clone())).is_err(), "{case:x?}");
    }
}

#[test]
fn sections_out_of_order_are_refused() {
    let body = encode(&Data(Binary::from(vec![1u8])));
    let props = encode(&Properties::builder().subject("s").build());
    assert_eq!(
        parse(Bytes::from([body.clone(), props].concat())),
        Err(MessageError::OutOfOrder(body.len()))
    );
}

#[test]
fn several_data_sections_are_allowed() {
    let a = encode(&Data(Binary::from(vec![1u8])));
    let b = encode(&Data(Binary::from(vec![2u8])));
    let m = parse(Bytes::from([a.clone(), b.clone()].concat())).unwrap();
    assert_eq!(&m.bare[..], &[a, b].concat()[..]);
}

#[test]
fn deeply_nested_descriptors_are_refused_without_exhausting_the_stack() {
    assert!(parse(Bytes::from(vec![0u8; 1 << 20])).is_err());
}

#[test]
fn scheduling_annotations_are_read_as_artemis_does() {
    use fe2o3_amqp::types::primitives::Timestamp;
    let body = encode(&Data(Binary::from(vec![1u8])));
    let parse_with = |ma: MessageAnnotations| {
        let bytes = [encode(&ma), body.clone()].concat();
        let m = parse(Bytes::from(bytes)).unwrap();
        m.routing.map(|r| (r.delivery_time, r.delivery_delay))
    };
    assert_eq!(
        parse_with(
            MessageAnnotations::builder()
                .insert("x-opt-delivery-time", 1_700_000_000_000i64)
                .build()
        ),
        Some((Some(1_700_000_000_000), None))
    );
    assert_eq!(
        parse_with(
            MessageAnnotations::builder()
                .insert(
                    "x-opt-delivery-time",
                    Timestamp::from_milliseconds(1_700_000_000_001)
                )
                .insert("x-opt-delivery-delay", 2500i32)
                .build()
        ),
        Some((Some(1_700_000_000_001), Some(2500)))
    );
    assert_eq!(
        parse_with(
            MessageAnnotations::builder()
                .insert("x-opt-delivery-delay", 30u64)
                .build()
        ),
        Some((None, Some(30)))
    );
    // Negative or non-numeric values schedule nothing.
    assert_eq!(
        parse_with(
            MessageAnnotations::builder()
                .insert("x-opt-delivery-delay", -5i64)
                .insert("x-opt-delivery-time", "soon")
                .build()
        ),
        None
    );
}

#[test]
fn duplicate_ids_come_from_amq_dupl_id_else_message_id() {
    let body = encode(&Data(Binary::from(vec![1u8])));
    let props = encode(
        &Properties::builder()
            .message_id(String::from("m-1"))
            .build(),
    );
    let with_id = parse(Bytes::from([props.clone(), body.clone()].concat())).unwrap();
    assert_eq!(duplicate_id(&with_id).as_deref(), Some(&b"\xa1\x03m-1"[..]));
    let app = encode(
        &ApplicationProperties::builder()
            .insert("_AMQ_DUPL_ID", String::from("d-9"))
            .build(),
    );
    let with_both = parse(Bytes::from([props, app, body.clone()].concat())).unwrap();
    assert_eq!(
        duplicate_id(&with_both).as_deref(),
        Some(&b"\xa1\x03d-9"[..])
    );
    let numeric = encode(&Properties::builder().message_id(7u64).build());
    let m = parse(Bytes::from([numeric, body.clone()].concat())).unwrap();
    assert_ne!(duplicate_id(&m), duplicate_id(&with_id));
    assert!(duplicate_id(&m).is_some());
    let bare = parse(Bytes::from(body)).unwrap();
    assert_eq!(duplicate_id(&bare), None);
}
