//! Seeds of `fuzz_connection`: scripts of frames after the protocol
//! headers (producers, consumers with filters, topics, dynamic nodes,
//! transactions, split transfers, errors).

use super::*;

/// A consumer's source with a JMS selector, a session (group) filter and
/// no-local.
pub(super) fn filtered_source(address: &str) -> Source {
    Source::builder()
        .address(address)
        .add_to_filter(
            "jms-selector",
            Described {
                descriptor: Descriptor::Name(Symbol::from("apache.org:selector-filter:string")),
                value: Value::String("color = 'red' AND JMSPriority > 3".into()),
            },
        )
        .add_to_filter_using_legacy_format(
            "com.microsoft:session-filter",
            Value::String("g".into()),
        )
        .build()
}

pub(super) fn coordinator(handle: u32) -> Attach {
    let mut a = attach(
        "txn-controller",
        handle,
        Role::Sender,
        Source::builder()
            .outcomes(Array(vec![Symbol::from("amqp:accepted:list")]))
            .build(),
        None,
    );
    a.target = Some(Box::new(TargetArchetype::Coordinator(Coordinator {
        capabilities: Some(Array(vec![TxnCapability::LocalTransactions])),
    })));
    a
}

/// The id of the connection's first declared transaction.
pub(super) fn first_txn() -> Binary {
    Binary::from(1u64.to_be_bytes().to_vec())
}

pub(super) fn in_txn(mut t: Transfer) -> Transfer {
    t.state = Some(DeliveryState::TransactionalState(TransactionalState {
        txn_id: first_txn(),
        outcome: None,
    }));
    t
}

pub fn connection_seeds() -> Vec<Seed> {
    let full = full_message();
    let text = text_message("hello");
    let o = frame(0, &open(65536, None));
    let small = frame(0, &open(512, Some(2000)));
    let b = frame(0, &begin());
    let e = frame(0, &end());
    let c = frame(0, &close());
    let produce = [
        frame(0, &producer(0, "q")),
        frame_with(0, &transfer(0, 0, false, false), &full),
        frame_with(0, &transfer(0, 1, true, false), &text),
    ]
    .concat();
    let consume = [
        frame(0, &consumer(1, Source::builder().address("q").build())),
        frame(0, &credit(1, 10, false)),
        frame(0, &settle(0, 0, DeliveryState::Accepted(Accepted {}))),
        frame(0, &settle(1, 1, DeliveryState::Released(Released {}))),
    ]
    .concat();
    let outcomes = [
        frame(0, &producer(0, "q?queue.max-delivery-attempts=2")),
        frame_with(0, &transfer(0, 0, false, false), &text),
        frame_with(0, &transfer(0, 1, false, false), &text),
        frame_with(0, &transfer(0, 2, false, false), &text),
        frame(0, &consumer(1, Source::builder().address("q").build())),
        frame(0, &credit(1, 5, false)),
        frame(
            0,
            &settle(
                0,
                0,
                DeliveryState::Modified(Modified {
                    delivery_failed: Some(true),
                    undeliverable_here: None,
                    message_annotations: None,
                }),
            ),
        ),
        frame(
            0,
            &settle(
                1,
                1,
                DeliveryState::Rejected(Rejected {
                    error: Some(AmqpErrorInfo::new(AmqpError::InternalError, None, None)),
                }),
            ),
        ),
        frame(0, &credit(1, 5, true)),
        frame(0, &detach(1)),
    ]
    .concat();
    let groups = [
        frame(0, &producer(0, "orders")),
        frame_with(0, &transfer(0, 0, true, false), &grouped_message("g", 1)),
        frame_with(0, &transfer(0, 1, true, false), &grouped_message("h", 1)),
        frame_with(0, &transfer(0, 2, true, false), &full),
        frame(
            0,
            &consumer(1, filtered_source("orders?consumer.priority=5")),
        ),
        frame(0, &credit(1, 3, false)),
    ]
    .concat();
    let split: Vec<u8> = {
        let (a, rest) = full.split_at(20);
        let (b2, c2) = rest.split_at(40);
        [
            frame(0, &producer(0, "q")),
            frame_with(0, &transfer(0, 0, false, true), a),
            frame_with(0, &continuation(0, true), b2),
            frame_with(0, &continuation(0, false), c2),
            frame_with(0, &transfer(0, 1, false, true), a),
            frame(
                0,
                &Transfer {
                    aborted: true,
                    ..continuation(0, false)
                },
            ),
        ]
        .concat()
    };
    // Deliveries left unfinished (`more = true` to the end): one long one
    // in many frames, several interleaved over links and sessions, one in a
    // format Ordo refuses, one past the fuzzing broker's assembly cap.
    let chunk = vec![0x40u8; 480];
    let unfinished: Vec<u8> = std::iter::once(frame(0, &producer(0, "q")))
        .chain(std::iter::once(frame_with(
            0,
            &transfer(0, 0, false, true),
            &chunk,
        )))
        .chain((0..100).map(|_| frame_with(0, &continuation(0, true), &chunk)))
        .collect::<Vec<_>>()
        .concat();
    let interleaved: Vec<u8> = [
        frame(0, &producer(0, "q")),
        frame(0, &producer(1, "r")),
        frame_with(0, &transfer(0, 0, false, true), a_part(&full)),
        frame_with(0, &transfer(1, 1, true, true), a_part(&full)),
        frame_with(0, &continuation(0, true), a_part(&full)),
        frame_with(0, &continuation(1, true), a_part(&full)),
    ]
    .concat();
    let odd_format: Vec<u8> = [
        frame(0, &producer(0, "q")),
        frame_with(
            0,
            &Transfer {
                message_format: Some(0x8001_3700),
                ..transfer(0, 0, false, true)
            },
            a_part(&full),
        ),
        frame_with(0, &continuation(0, false), a_part(&full)),
        frame_with(0, &transfer(0, 1, false, false), &full),
    ]
    .concat();
    let transactions = [
        frame(0, &coordinator(2)),
        frame_with(
            0,
            &transfer(2, 0, false, false),
            &encode(&AmqpValue(Declare { global_id: None })),
        ),
        frame(0, &producer(0, "q")),
        frame_with(0, &in_txn(transfer(0, 1, false, false)), &text),
        frame(0, &consumer(1, Source::builder().address("q").build())),
        frame(0, &credit(1, 2, false)),
        frame(
            0,
            &settle(
                0,
                0,
                DeliveryState::TransactionalState(TransactionalState {
                    txn_id: first_txn(),
                    outcome: Some(Accepted {}.into()),
                }),
            ),
        ),
        frame_with(
            0,
            &transfer(2, 2, false, false),
            &encode(&AmqpValue(Discharge {
                txn_id: first_txn(),
                fail: Some(false),
            })),
        ),
    ]
    .concat();
    let topics = {
        let durable = Source::builder()
            .address("topic://prices")
            .durable(TerminusDurability::UnsettledState)
            .expiry_policy(TerminusExpiryPolicy::Never)
            .build();
        let mut subscriber = consumer(1, durable);
        subscriber.name = "sub-1".into();
        let shared = Source::builder()
            .address("prices.*")
            .capabilities(Array(vec![Symbol::from("topic"), Symbol::from("shared")]))
            .build();
        [
            frame(0, &subscriber),
            frame(0, &credit(1, 10, false)),
            frame(0, &consumer(2, shared)),
            frame(0, &credit(2, 10, false)),
            frame(0, &producer(0, "topic://prices")),
            frame_with(0, &transfer(0, 0, true, false), &full),
            frame(
                0,
                &Detach {
                    closed: false,
                    ..detach(1)
                },
            ),
        ]
        .concat()
    };
    let dynamic = [
        frame(0, &consumer(1, Source::builder().dynamic(true).build())),
        frame(0, &credit(1, 1, false)),
    ]
    .concat();
    let relay = [
        frame(
            0,
            &attach(
                "relay",
                0,
                Role::Sender,
                Source::builder().build(),
                Some(Target::builder().build()),
            ),
        ),
        frame_with(0, &transfer(0, 0, false, false), &addressed_message("q")),
        frame_with(0, &transfer(0, 1, false, false), &text),
    ]
    .concat();
    let two_sessions = [
        frame(3, &begin()),
        frame(3, &producer(0, "q")),
        frame_with(3, &transfer(0, 0, true, false), &text),
        frame(3, &end()),
    ]
    .concat();
    let seq = |parts: &[&[u8]]| parts.concat();
    vec![
        ("open-close", seq(&[&o, &c])),
        ("open-begin-end-close", seq(&[&o, &b, &heartbeat(), &e, &c])),
        (
            "produce",
            seq(&[&o, &b, &produce, &frame(0, &detach(0)), &e, &c]),
        ),
        (
            "produce-consume",
            seq(&[&o, &b, &produce, &consume, &e, &c]),
        ),
        (
            "produce-consume-small-frames",
            seq(&[&small, &b, &produce, &consume]),
        ),
        ("outcomes", seq(&[&o, &b, &outcomes, &c])),
        ("groups-selector", seq(&[&o, &b, &groups])),
        ("multi-frame-and-aborted", seq(&[&o, &b, &split])),
        ("multi-frame-unfinished-long", seq(&[&o, &b, &unfinished])),
        (
            "multi-frame-unfinished-interleaved",
            seq(&[&o, &b, &interleaved]),
        ),
        ("multi-frame-unknown-format", seq(&[&o, &b, &odd_format])),
        ("transactions", seq(&[&o, &b, &transactions, &e])),
        ("topics", seq(&[&o, &b, &topics])),
        ("dynamic", seq(&[&o, &b, &dynamic])),
        ("anonymous-relay", seq(&[&o, &b, &relay])),
        ("two-sessions", seq(&[&o, &b, &two_sessions, &c])),
        // After an Open (the engine target's second pass sends one first).
        ("after-open-produce-consume", seq(&[&b, &produce, &consume])),
        ("after-open-transactions", seq(&[&b, &transactions])),
        ("after-open-groups-selector", seq(&[&b, &groups])),
        // Broken ones.
        ("open-twice", seq(&[&o, &o])),
        ("begin-before-open", seq(&[&b])),
        (
            "transfer-unknown-handle",
            seq(&[&o, &b, &frame_with(0, &transfer(7, 0, false, false), &text)]),
        ),
        (
            "frame-on-unknown-channel",
            seq(&[&o, &frame(5, &producer(0, "q"))]),
        ),
        (
            "duplicate-handle",
            seq(&[
                &o,
                &b,
                &frame(0, &producer(0, "q")),
                &frame(0, &producer(0, "r")),
            ]),
        ),
        (
            "bad-address-option",
            seq(&[
                &o,
                &b,
                &frame(
                    0,
                    &consumer(1, Source::builder().address("q?nope=1").build()),
                ),
            ]),
        ),
        (
            "undecodable-body",
            seq(&[
                &o,
                &[0, 0, 0, 14, 2, 0, 0, 0, 0x00, 0x53, 0x10, 0xc0, 0xff, 0x05],
            ]),
        ),
        (
            "malformed-message",
            seq(&[
                &o,
                &b,
                &frame(0, &producer(0, "q")),
                &frame_with(
                    0,
                    &transfer(0, 0, false, false),
                    b"\x00\x53\x75\xb0\xff\xff\xff\xff",
                ),
            ]),
        ),
    ]
}

/// The first 20 bytes of an encoded message (a frame's worth of it).
fn a_part(full: &[u8]) -> &[u8] {
    &full[..20.min(full.len())]
}
