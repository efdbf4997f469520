//! Engine tests of what outside testing found: credit of 2³¹ and more,
//! unknown message formats, the broker's settlement of a rejection, the
//! attach of a refused consumer, `$` and URL addresses, and messages in
//! assembly against the memory limits.

use std::collections::BTreeMap;

use fe2o3_amqp::types::definitions::Error as ErrorFrame;
use fe2o3_amqp::types::messaging::{Modified, Rejected};

use super::*;

/// The state each incoming delivery was settled with, by delivery id.
fn settlements(frames: &[Frame]) -> BTreeMap<u32, Option<DeliveryState>> {
    let mut states = BTreeMap::new();
    for f in frames {
        if let FrameBody::Disposition(d) = &f.body {
            for id in d.first..=d.last.unwrap_or(d.first) {
                states.insert(id, d.state.clone());
            }
        }
    }
    states
}

/// The condition of a rejected state.
fn rejected_with(state: &Option<DeliveryState>) -> Option<ErrorCondition> {
    match state {
        Some(DeliveryState::Rejected(r)) => r.error.as_ref().map(|e| e.condition.clone()),
        other => panic!("not rejected: {other:?}"),
    }
}

/// The condition of the detach in `frames` (the test fails without one).
fn detach_condition(frames: &[Frame]) -> ErrorCondition {
    frames
        .iter()
        .find_map(|f| match &f.body {
            FrameBody::Detach(d) => d.error.as_ref().map(|e| e.condition.clone()),
            _ => None,
        })
        .expect("a detach with an error")
}

/// The link credit of every flow for `handle` in `frames`.
fn credits(frames: &[Frame], handle: u32) -> Vec<u32> {
    frames
        .iter()
        .filter_map(|f| match &f.body {
            FrameBody::Flow(flow) if flow.handle.as_ref().map(|h| h.0) == Some(handle) => {
                flow.link_credit
            }
            _ => None,
        })
        .collect()
}

#[test]
fn credit_of_two_to_the_31_and_more_is_credit() {
    for credit_given in [i32::MAX as u32, 1 << 31, u32::MAX] {
        let mut peer = Peer::new();
        peer.setup("big-credit", 65536, 10_000);
        for id in 0..20 {
            peer.publish(id, &message(&format!("m{id}")));
        }
        peer.recv();
        peer.send(0, &credit(1, 0, credit_given, false));
        assert_eq!(deliveries(&peer.recv()).len(), 20, "credit {credit_given}");
        // A later flow counting those 20 still leaves credit.
        peer.send(0, &credit(1, 20, credit_given, false));
        peer.publish(20, &message("m20"));
        assert_eq!(deliveries(&peer.recv()).len(), 1, "credit {credit_given}");
    }
}

#[test]
fn a_message_format_other_than_zero_is_refused_not_stored() {
    let mut peer = Peer::new();
    peer.setup("formats", 65536, 10_000);
    let mut batch = transfer(0, Some(0), false);
    batch.message_format = Some(0x8001_3700);
    peer.send_with_payload(0, &batch, &message("envelope"));
    // Multi-frame, in a format nobody knows: refused on its first frame,
    // the rest dropped.
    let mut odd = transfer(0, Some(1), true);
    odd.message_format = Some(7);
    peer.send_with_payload(0, &odd, &message("part")[..4]);
    peer.send_with_payload(0, &transfer(0, None, false), &message("part")[4..]);
    peer.publish(2, &message("plain"));
    let states = settlements(&peer.recv());
    for id in [0, 1] {
        assert_eq!(
            rejected_with(&states[&id]),
            Some(ErrorCondition::AmqpError(AmqpError::NotImplemented)),
            "delivery {id}"
        );
    }
    assert!(matches!(states[&2], Some(DeliveryState::Accepted(_))));
    peer.send(0, &credit(1, 0, 10, false));
    let got: Vec<Bytes> = deliveries(&peer.recv()).into_iter().map(|d| d.1).collect();
    assert_eq!(got, vec![Bytes::from(message("plain"))]);
}

#[test]
fn a_rejection_is_settled_plainly_and_its_error_goes_to_the_dead_letter() {
    let mut peer = Peer::new();
    peer.setup("rejects", 65536, 10_000);
    peer.publish(0, &message("bad"));
    peer.send(0, &credit(1, 0, 10, false));
    let (id, _) = deliveries(&peer.recv())[0].clone();
    let error = ErrorFrame {
        condition: ErrorCondition::Custom("app:bad-price".into()),
        description: Some("price is negative".into()),
        info: None,
    };
    peer.send(
        0,
        &Disposition {
            role: Role::Receiver,
            first: id,
            last: None,
            settled: false,
            state: Some(DeliveryState::Rejected(Rejected { error: Some(error) })),
            batchable: false,
        },
    );
    let ours = peer.recv();
    let settled: Vec<_> = ours
        .iter()
        .filter_map(|f| match &f.body {
            FrameBody::Disposition(d) if d.role == Role::Sender => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(settled.len(), 1, "{ours:?}");
    assert!(settled[0].settled);
    assert_eq!(
        settled[0].state,
        Some(DeliveryState::Rejected(Rejected { error: None }))
    );
    peer.send(0, &attach("dlq", 2, Role::Receiver, "DLQ"));
    peer.send(0, &credit(2, 0, 10, false));
    let got = deliveries(&peer.recv());
    let text = String::from_utf8_lossy(&got[0].1).into_owned();
    assert!(text.contains("x-opt-dead-letter-reason") && text.contains("app:bad-price"));
    assert!(text.contains("x-opt-dead-letter-description") && text.contains("price is negative"));
}

#[test]
fn every_attach_where_the_broker_sends_carries_an_initial_delivery_count() {
    let mut peer = Peer::new();
    peer.open(65536);
    peer.begin(0, 100);
    let mut bad_selector = attach("refused", 0, Role::Receiver, "q");
    let mut filters = fe2o3_amqp::types::messaging::FilterSet::new();
    filters.insert("jms-selector".into(), Value::String("a = = 1".into()));
    if let Some(source) = bad_selector.source.as_deref_mut() {
        source.filter = Some(filters);
    }
    peer.send(0, &bad_selector);
    peer.send(0, &attach("dollar", 1, Role::Receiver, "$cbs"));
    peer.send(0, &attach("fine", 2, Role::Receiver, "q"));
    let attaches: Vec<Attach> = peer
        .recv()
        .into_iter()
        .filter_map(|f| match f.body {
            FrameBody::Attach(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(attaches.len(), 3);
    for a in attaches {
        assert_eq!(a.role, Role::Sender);
        assert_eq!(a.initial_delivery_count, Some(0), "{}", a.name);
    }
}

#[test]
fn dollar_names_are_never_created_and_urls_name_their_node() {
    let mut peer = Peer::new();
    peer.open(65536);
    peer.begin(0, 100);
    peer.send(0, &attach("cbs", 0, Role::Sender, "$cbs"));
    assert_eq!(
        detach_condition(&peer.recv()),
        ErrorCondition::AmqpError(AmqpError::NotFound)
    );
    assert!(peer.broker.existing_queue("$cbs").is_none());
    peer.send(
        0,
        &attach("url", 1, Role::Sender, "amqps://127.0.0.1:5672/orders"),
    );
    peer.recv();
    assert!(peer.broker.existing_queue("orders").is_some());
    let long = "q".repeat(300);
    peer.send(0, &attach("long", 2, Role::Sender, &long));
    assert_eq!(
        detach_condition(&peer.recv()),
        ErrorCondition::AmqpError(AmqpError::InvalidField)
    );
    assert!(peer.broker.existing_queue(&long).is_none());
}

/// A transfer frame of `payload_len` filler bytes continuing delivery `id`
/// on the producer link (handle 0).
fn part(peer: &mut Peer, id: Option<u32>, more: bool, payload_len: usize) {
    peer.send_with_payload(0, &transfer(0, id, more), &vec![0x40u8; payload_len]);
}

#[test]
fn messages_in_assembly_count_in_the_memory_gauge_until_they_end() {
    let mut peer = Peer::new();
    peer.setup("assembly", 65536, 10_000);
    let gauge = Arc::clone(peer.broker.memory());
    part(&mut peer, Some(0), true, 10_000);
    part(&mut peer, None, true, 10_000);
    assert!(gauge.assembly() >= 20_000, "{}", gauge.assembly());
    // Aborted: given back.
    let mut abort = transfer(0, None, false);
    abort.aborted = true;
    peer.send(0, &abort);
    assert_eq!(gauge.assembly(), 0);
    // Left unfinished by a detach, then by the session's end.
    part(&mut peer, Some(1), true, 5_000);
    assert!(gauge.assembly() >= 5_000);
    peer.send(
        0,
        &Detach {
            handle: 0.into(),
            closed: true,
            error: None,
        },
    );
    assert_eq!(gauge.assembly(), 0);
    peer.send(0, &attach("again", 3, Role::Sender, "assembly"));
    peer.send_with_payload(0, &transfer(3, Some(2), true), &[0x40; 5_000]);
    assert!(gauge.assembly() >= 5_000);
    peer.send(0, &End { error: None });
    assert_eq!(gauge.assembly(), 0);
}

#[test]
fn assembly_past_its_cap_is_refused_with_resource_limit_exceeded() {
    let mut peer = Peer::new();
    peer.broker.set_memory_high_watermark(1 << 30);
    peer.broker.set_max_assembly_bytes(50_000);
    peer.setup("capped", 65536, 10_000);
    let gauge = Arc::clone(peer.broker.memory());
    let payload = serde_amqp::to_vec(&Data(Binary::from(vec![7u8; 80_000]))).unwrap();
    let mut input = BytesMut::new();
    for (i, chunk) in payload.chunks(10_000).enumerate() {
        let more = (i + 1) * 10_000 < payload.len();
        let id = (i == 0).then_some(0);
        write_frame(&mut input, false, 0, &transfer(0, id, more), chunk);
        peer.conn.handle_input(&mut input, peer.now);
        assert!(gauge.assembly() <= 50_000, "{}", gauge.assembly());
    }
    assert_eq!(gauge.assembly(), 0, "the refused message holds nothing");
    peer.publish(1, &message("small"));
    let states = settlements(&peer.recv());
    assert_eq!(
        rejected_with(&states[&0]),
        Some(ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded))
    );
    assert!(matches!(states[&1], Some(DeliveryState::Accepted(_))));
}

#[test]
fn at_the_mark_producers_lose_their_credit_but_what_they_sent_is_taken() {
    let mut peer = Peer::new();
    peer.broker.set_memory_high_watermark(30_000);
    peer.broker.set_max_assembly_bytes(1 << 20);
    // Small messages so far: the producer's credit, sized by the room
    // below the mark, is 3,750 / 100 = 37.
    for _ in 0..100 {
        peer.broker.memory().observe_message(100);
    }
    peer.setup("marked", 65536, 10_000);
    // A second producer streams a big message: memory reaches the mark.
    peer.send(0, &attach("streamer", 2, Role::Sender, "marked"));
    peer.recv();
    peer.send_with_payload(0, &transfer(2, Some(0), true), &[0x40; 32_000]);
    peer.conn.tick(peer.now);
    let frames = peer.recv();
    assert_eq!(credits(&frames, 0), vec![0], "credit revoked: {frames:?}");
    // Transfers the producer sent before it saw that are still taken.
    for id in 1..4 {
        peer.publish(id, &message("in flight"));
    }
    let frames = peer.recv();
    let states = settlements(&frames);
    for id in 1..4 {
        assert!(
            matches!(states[&id], Some(DeliveryState::Accepted(_))),
            "{frames:?}"
        );
    }
    assert!(!frames
        .iter()
        .any(|f| matches!(f.body, FrameBody::Detach(_))));
    // Memory below the mark again (the big message aborted): credit back.
    let mut abort = transfer(2, None, false);
    abort.aborted = true;
    peer.send(0, &abort);
    peer.now += Duration::from_millis(200);
    peer.conn.tick(peer.now);
    let frames = peer.recv();
    let granted = credits(&frames, 0);
    assert!(granted.len() == 1 && granted[0] > 3, "{frames:?}");
}

#[test]
fn producer_credit_is_sized_by_the_room_below_the_mark() {
    let mut peer = Peer::new();
    peer.broker.set_memory_high_watermark(4 << 20);
    peer.open(65536);
    peer.begin(0, 10_000);
    // Nothing seen yet: 64 KiB a message, an eighth of 4 MiB: 8 credits.
    peer.send(0, &attach("first", 0, Role::Sender, "sized"));
    assert_eq!(credits(&peer.recv(), 0), vec![8]);
    for _ in 0..200 {
        peer.broker.memory().observe_message(1024);
    }
    // Two producers now share the room: 512 KiB / (1 KiB × 2) = 256.
    peer.send(0, &attach("second", 1, Role::Sender, "sized"));
    assert_eq!(credits(&peer.recv(), 1), vec![256]);
    // Without a mark, the configured credit.
    let mut free = Peer::new();
    free.open(65536);
    free.begin(0, 10_000);
    free.send(0, &attach("free", 0, Role::Sender, "sized"));
    assert_eq!(credits(&free.recv(), 0), vec![1000]);
}

#[test]
fn modified_and_released_are_echoed_unchanged() {
    let mut peer = Peer::new();
    peer.setup("echo", 65536, 10_000);
    peer.publish(0, &message("a"));
    peer.send(0, &credit(1, 0, 10, false));
    let (id, _) = deliveries(&peer.recv())[0].clone();
    let modified = DeliveryState::Modified(Modified {
        delivery_failed: Some(true),
        undeliverable_here: None,
        message_annotations: None,
    });
    peer.send(
        0,
        &Disposition {
            role: Role::Receiver,
            first: id,
            last: None,
            settled: false,
            state: Some(modified.clone()),
            batchable: false,
        },
    );
    let echoed = peer.recv().into_iter().find_map(|f| match f.body {
        FrameBody::Disposition(d) if d.role == Role::Sender => d.state,
        _ => None,
    });
    assert_eq!(echoed, Some(modified));
}

#[test]
fn at_the_mark_a_message_in_assembly_gets_no_more_session_window() {
    let mut peer = Peer::with_config(EngineConfig {
        session_window: 8,
        ..EngineConfig::default()
    });
    peer.broker.set_memory_high_watermark(30_000);
    peer.broker.set_max_assembly_bytes(1 << 20);
    peer.setup("windows", 65536, 10_000);
    part(&mut peer, Some(0), true, 31_000);
    for _ in 0..5 {
        part(&mut peer, None, true, 10);
    }
    peer.conn.tick(peer.now);
    let widened = |frames: &[Frame]| {
        frames
            .iter()
            .any(|f| matches!(&f.body, FrameBody::Flow(flow) if flow.incoming_window == 8))
    };
    assert!(!widened(&peer.recv()), "the window stays short at the mark");
    // Below the mark (another message of the session completes elsewhere:
    // here the mark is raised), the window opens and the message goes on.
    peer.broker.set_memory_high_watermark(1 << 30);
    peer.now += Duration::from_millis(200);
    peer.conn.tick(peer.now);
    assert!(widened(&peer.recv()));
    part(&mut peer, None, false, 10);
    assert_eq!(peer.broker.memory().assembly(), 0);
}
