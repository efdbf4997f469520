//! Engine tests: one connection's state machine driven frame by frame, with
//! no socket. The test plays the client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use fe2o3_amqp::frames::amqp::{Frame, FrameBody};
use fe2o3_amqp::types::definitions::{
    AmqpError, ConnectionError, ErrorCondition, LinkError, ReceiverSettleMode, Role,
    SenderSettleMode, SessionError,
};
use fe2o3_amqp::types::messaging::{
    Accepted, AmqpValue, Data, DeliveryState, Header, Properties, Released, Source, Target,
};
use fe2o3_amqp::types::performatives::{
    Attach, Begin, ChannelMax, Close, Detach, Disposition, End, Flow, MaxFrameSize, Open, Transfer,
};
use fe2o3_amqp::types::primitives::{Binary, Value};

use super::*;
use crate::amqp::frame::{next_amqp, write_frame};
use crate::core::{Broker, BrokerOptions};

/// The client side of an engine test.
struct Peer {
    conn: Connection,
    broker: Arc<Broker>,
    now: Instant,
}

impl Peer {
    fn new() -> Self {
        Self::with_config(EngineConfig::default())
    }

    fn with_config(config: EngineConfig) -> Self {
        let broker = Broker::new(BrokerOptions::default());
        let now = Instant::now();
        let conn = Connection::new(Arc::new(config), Arc::clone(&broker), now);
        Self { conn, broker, now }
    }

    fn send<P: serde::Serialize>(&mut self, channel: u16, p: &P) {
        self.send_with_payload(channel, p, &[]);
    }

    fn send_with_payload<P: serde::Serialize>(&mut self, channel: u16, p: &P, payload: &[u8]) {
        let mut input = BytesMut::new();
        write_frame(&mut input, false, channel, p, payload);
        self.conn.handle_input(&mut input, self.now);
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let mut input = BytesMut::from(bytes);
        self.conn.handle_input(&mut input, self.now);
    }

    /// Every frame the engine wrote since the last call.
    fn recv(&mut self) -> Vec<Frame> {
        let mut out = self.conn.output().split();
        let mut frames = Vec::new();
        while let Some(f) = next_amqp(&mut out, u32::MAX).expect("engine writes valid frames") {
            frames.push(f);
        }
        assert!(out.is_empty());
        frames
    }

    fn open(&mut self, max_frame: u32) -> Open {
        self.send(0, &open(max_frame));
        match self.recv().remove(0).body {
            FrameBody::Open(o) => o,
            other => panic!("expected open, got {other:?}"),
        }
    }

    fn begin(&mut self, channel: u16, incoming_window: u32) -> Begin {
        self.send(channel, &begin(incoming_window));
        match self.recv().remove(0).body {
            FrameBody::Begin(b) => b,
            other => panic!("expected begin, got {other:?}"),
        }
    }

    /// Opens, begins channel 0 and attaches a producer (handle 0) and a
    /// consumer (handle 1) to `queue`, both named "link".
    fn setup(&mut self, queue: &str, max_frame: u32, incoming_window: u32) {
        self.open(max_frame);
        self.begin(0, incoming_window);
        self.send(0, &attach("link", 0, Role::Sender, queue));
        let frames = self.recv();
        assert!(matches!(frames[0].body, FrameBody::Attach(_)), "{frames:?}");
        assert!(matches!(frames[1].body, FrameBody::Flow(_)), "{frames:?}");
        self.send(0, &attach("link", 1, Role::Receiver, queue));
        let frames = self.recv();
        assert!(matches!(frames[0].body, FrameBody::Attach(_)), "{frames:?}");
    }

    fn publish(&mut self, delivery_id: u32, payload: &[u8]) {
        self.send_with_payload(0, &transfer(0, Some(delivery_id), false), payload);
    }
}

fn open(max_frame: u32) -> Open {
    Open {
        container_id: "test-client".into(),
        hostname: None,
        max_frame_size: MaxFrameSize(max_frame),
        channel_max: ChannelMax(10),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

fn begin(incoming_window: u32) -> Begin {
    Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window,
        outgoing_window: 10_000,
        handle_max: 100.into(),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

fn attach(name: &str, handle: u32, role: Role, address: &str) -> Attach {
    Attach {
        name: name.into(),
        handle: handle.into(),
        role,
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: Some(Box::new(Source::builder().address(address).build())),
        target: Some(Box::new(Target::builder().address(address).build().into())),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: Some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

fn transfer(handle: u32, delivery_id: Option<u32>, more: bool) -> Transfer {
    Transfer {
        handle: handle.into(),
        delivery_id,
        delivery_tag: delivery_id.map(|d| Binary::from(d.to_be_bytes().to_vec())),
        message_format: Some(0),
        settled: Some(false),
        more,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    }
}

fn credit(handle: u32, delivery_count: u32, link_credit: u32, drain: bool) -> Flow {
    Flow {
        next_incoming_id: Some(0),
        incoming_window: 10_000,
        next_outgoing_id: 0,
        outgoing_window: 10_000,
        handle: Some(handle.into()),
        delivery_count: Some(delivery_count),
        link_credit: Some(link_credit),
        available: None,
        drain,
        echo: false,
        properties: None,
    }
}

fn settle(first: u32, last: u32, state: DeliveryState) -> Disposition {
    Disposition {
        role: Role::Receiver,
        first,
        last: Some(last),
        settled: true,
        state: Some(state),
        batchable: false,
    }
}

fn message(text: &str) -> Vec<u8> {
    serde_amqp::to_vec(&AmqpValue(Value::String(text.into()))).unwrap()
}

/// (delivery id, payload) of each delivery in `frames`, reassembling
/// multi-frame transfers and checking continuation rules.
fn deliveries(frames: &[Frame]) -> Vec<(u32, Bytes)> {
    let mut out = Vec::new();
    let mut partial: Option<(u32, BytesMut)> = None;
    for f in frames {
        if let FrameBody::Transfer {
            performative,
            payload,
        } = &f.body
        {
            let (id, mut bytes) = match partial.take() {
                Some((id, b)) => {
                    assert!(
                        performative.delivery_id.is_none() || performative.delivery_id == Some(id)
                    );
                    (id, b)
                }
                None => (
                    performative.delivery_id.expect("first frame has an id"),
                    BytesMut::new(),
                ),
            };
            bytes.put_slice(payload);
            if performative.more {
                partial = Some((id, bytes));
            } else {
                out.push((id, bytes.freeze()));
            }
        }
    }
    assert!(partial.is_none(), "a delivery was left unfinished");
    out
}

fn close_error(frames: &[Frame]) -> Option<ErrorCondition> {
    frames.iter().find_map(|f| match &f.body {
        FrameBody::Close(c) => c.error.as_ref().map(|e| e.condition.clone()),
        _ => None,
    })
}

#[test]
fn open_answers_with_product_version_and_limits() {
    let mut peer = Peer::new();
    let open = peer.open(4096);
    let props = open.properties.expect("properties");
    let get = |k: &str| {
        props
            .iter()
            .find(|(s, _)| s.as_str() == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("product"), Some(Value::String("Ordo".into())));
    assert_eq!(
        get("version"),
        Some(Value::String(env!("CARGO_PKG_VERSION").into()))
    );
    assert_eq!(open.max_frame_size.0, 1 << 20);
    // Half the 60 s threshold (AMQP 2.4.5).
    assert_eq!(open.idle_time_out, Some(30_000));
}

#[test]
fn send_then_receive_in_order_over_one_link_name() {
    let mut peer = Peer::new();
    peer.setup("q", 65536, 10_000);
    let mut input = BytesMut::new();
    for i in 0..3u32 {
        write_frame(
            &mut input,
            false,
            0,
            &transfer(0, Some(i), false),
            &message(&format!("m{i}")),
        );
    }
    peer.conn.handle_input(&mut input, peer.now);
    // One accepted disposition covers all three, read together.
    let frames = peer.recv();
    let dispositions: Vec<&Disposition> = frames
        .iter()
        .filter_map(|f| match &f.body {
            FrameBody::Disposition(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(dispositions.len(), 1);
    assert_eq!((dispositions[0].first, dispositions[0].last), (0, Some(2)));
    assert!(matches!(
        dispositions[0].state,
        Some(DeliveryState::Accepted(_))
    ));
    peer.send(0, &credit(1, 0, 10, false));
    let got = deliveries(&peer.recv());
    let bodies: Vec<Bytes> = got.iter().map(|(_, b)| b.clone()).collect();
    assert_eq!(bodies, vec![message("m0"), message("m1"), message("m2")]);
    peer.send(0, &settle(0, 2, DeliveryState::Accepted(Accepted {})));
    assert_eq!(peer.broker.existing_queue("q").unwrap().stats().unacked, 0);
}

#[test]
fn peer_incoming_window_of_one_is_respected() {
    let mut peer = Peer::new();
    peer.setup("w", 65536, 1);
    for i in 0..3u32 {
        peer.publish(i, &message("x"));
    }
    peer.recv();
    let mut first = credit(1, 0, 10, false);
    first.incoming_window = 1;
    peer.send(0, &first);
    assert_eq!(
        deliveries(&peer.recv()).len(),
        1,
        "only one frame fits the window"
    );
    // The client took transfer 0 and opens its window by one again.
    let mut widen = credit(1, 1, 9, false);
    widen.next_incoming_id = Some(1);
    widen.incoming_window = 1;
    peer.send(0, &widen);
    let frames = peer.recv();
    let transfers = deliveries(&frames);
    assert_eq!(transfers.len(), 1);
    assert_eq!(transfers[0].0, 1);
}

#[test]
fn one_mebibyte_messages_cross_512_byte_frames_both_ways() {
    let mut peer = Peer::with_config(EngineConfig {
        max_frame_size: 512,
        ..EngineConfig::default()
    });
    peer.setup("big", 512, 100_000);
    let body: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let msg = serde_amqp::to_vec(&Data(Binary::from(body))).unwrap();
    // Producer side: split into frames of at most 512 bytes.
    let chunk = 400;
    let mut input = BytesMut::new();
    let pieces: Vec<&[u8]> = msg.chunks(chunk).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let first = i == 0;
        let mut t = transfer(0, first.then_some(0), i + 1 < pieces.len());
        if !first {
            t.delivery_tag = None;
            t.message_format = None;
            t.settled = None;
        }
        write_frame(&mut input, false, 0, &t, piece);
    }
    peer.conn.handle_input(&mut input, peer.now);
    let frames = peer.recv();
    assert!(frames
        .iter()
        .any(|f| matches!(&f.body, FrameBody::Disposition(d) if d.first == 0)));
    // Consumer side: every frame we write fits 512 bytes, each counted.
    peer.send(0, &credit(1, 0, 1, false));
    let mut out = peer.conn.output().split();
    let mut frames = Vec::new();
    while let Some(f) = next_amqp(&mut out, 512).expect("every frame within 512 bytes") {
        frames.push(f);
    }
    let got = deliveries(&frames);
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].1[..], &msg[..]);
    let transfers = frames
        .iter()
        .filter(|f| matches!(f.body, FrameBody::Transfer { .. }))
        .count();
    assert!(transfers > 2000, "{transfers} frames");
}

#[test]
fn released_message_comes_back_first() {
    let mut peer = Peer::new();
    peer.setup("r", 65536, 10_000);
    peer.publish(0, &message("a"));
    peer.publish(1, &message("b"));
    peer.recv();
    peer.send(0, &credit(1, 0, 1, false));
    assert_eq!(deliveries(&peer.recv())[0].1, message("a"));
    peer.send(0, &settle(0, 0, DeliveryState::Released(Released {})));
    peer.send(0, &credit(1, 1, 2, false));
    let got: Vec<Bytes> = deliveries(&peer.recv()).into_iter().map(|d| d.1).collect();
    assert_eq!(got.len(), 2);
    // "a" again, now with a header saying it was acquired before.
    assert!(got[0].ends_with(&message("a")));
    let header: Header = serde_amqp::from_slice(&got[0]).unwrap();
    assert_eq!((header.delivery_count, header.first_acquirer), (0, false));
    assert_eq!(got[1], message("b"));
}

#[test]
fn detached_consumer_returns_messages_with_delivery_count() {
    let mut peer = Peer::new();
    peer.setup("lost", 65536, 10_000);
    peer.publish(0, &message("a"));
    peer.recv();
    peer.send(0, &credit(1, 0, 1, false));
    assert_eq!(deliveries(&peer.recv()).len(), 1);
    peer.send(
        0,
        &Detach {
            handle: 1.into(),
            closed: true,
            error: None,
        },
    );
    assert!(matches!(peer.recv()[0].body, FrameBody::Detach(_)));
    peer.send(0, &attach("other", 2, Role::Receiver, "lost"));
    peer.recv();
    peer.send(0, &credit(2, 0, 1, false));
    let got = deliveries(&peer.recv());
    let header: Header = serde_amqp::from_slice(&got[0].1).unwrap();
    assert_eq!(header.delivery_count, 1);
    assert!(!header.first_acquirer);
}

#[test]
fn drain_with_nothing_queued_completes_at_once() {
    let mut peer = Peer::new();
    peer.setup("d", 65536, 10_000);
    peer.send(0, &credit(1, 0, 5, true));
    let frames = peer.recv();
    let flow = frames
        .iter()
        .find_map(|f| match &f.body {
            FrameBody::Flow(fl) if fl.handle == Some(1.into()) => Some(fl.clone()),
            _ => None,
        })
        .expect("a flow answers the drain");
    assert_eq!(
        (flow.delivery_count, flow.link_credit, flow.drain),
        (Some(5), Some(0), true)
    );
}

#[test]
fn transfer_on_unknown_handle_ends_the_session() {
    let mut peer = Peer::new();
    peer.setup("u", 65536, 10_000);
    peer.send_with_payload(0, &transfer(42, Some(0), false), &message("x"));
    let frames = peer.recv();
    let end = frames
        .iter()
        .find_map(|f| match &f.body {
            FrameBody::End(End { error }) => error.clone(),
            _ => None,
        })
        .expect("session ended with an error");
    assert_eq!(
        end.condition,
        ErrorCondition::SessionError(SessionError::UnattachedHandle)
    );
}

#[test]
fn malformed_message_is_rejected_with_decode_error() {
    let mut peer = Peer::new();
    peer.setup("bad", 65536, 10_000);
    peer.publish(0, b"\x00\x53\x77\xb1\xff\xff");
    let frames = peer.recv();
    let state = frames
        .iter()
        .find_map(|f| match &f.body {
            FrameBody::Disposition(d) => d.state.clone(),
            _ => None,
        })
        .expect("a disposition");
    match state {
        DeliveryState::Rejected(r) => {
            assert_eq!(
                r.error.unwrap().condition,
                ErrorCondition::AmqpError(AmqpError::DecodeError)
            )
        }
        other => panic!("expected rejected, got {other:?}"),
    }
    assert_eq!(peer.broker.existing_queue("bad").unwrap().stats().depth, 0);
}

#[test]
fn oversized_message_is_rejected_and_the_link_carries_on() {
    let mut peer = Peer::with_config(EngineConfig {
        max_message_size: 100,
        ..EngineConfig::default()
    });
    peer.setup("small", 65536, 10_000);
    let big = serde_amqp::to_vec(&Data(Binary::from(vec![0u8; 200]))).unwrap();
    let mut input = BytesMut::new();
    // One single-frame and one multi-frame oversized message, then a good one.
    write_frame(&mut input, false, 0, &transfer(0, Some(0), false), &big);
    write_frame(
        &mut input,
        false,
        0,
        &transfer(0, Some(1), true),
        &big[..150],
    );
    write_frame(&mut input, false, 0, &transfer(0, None, false), &big[150..]);
    write_frame(
        &mut input,
        false,
        0,
        &transfer(0, Some(2), false),
        &message("fits"),
    );
    peer.conn.handle_input(&mut input, peer.now);
    let mut states = std::collections::BTreeMap::new();
    for f in peer.recv() {
        match f.body {
            FrameBody::Disposition(d) => {
                for id in d.first..=d.last.unwrap_or(d.first) {
                    states.insert(id, d.state.clone());
                }
            }
            FrameBody::Detach(d) => panic!("the link must survive: {d:?}"),
            _ => {}
        }
    }
    for id in [0, 1] {
        match &states[&id] {
            Some(DeliveryState::Rejected(r)) => assert_eq!(
                r.error.as_ref().unwrap().condition,
                ErrorCondition::LinkError(LinkError::MessageSizeExceeded)
            ),
            other => panic!("delivery {id}: {other:?}"),
        }
    }
    assert!(matches!(states[&2], Some(DeliveryState::Accepted(_))));
    assert_eq!(
        peer.broker.existing_queue("small").unwrap().stats().depth,
        1
    );
}

#[test]
fn frame_over_max_frame_size_closes_with_framing_error() {
    let mut peer = Peer::with_config(EngineConfig {
        max_frame_size: 1024,
        ..EngineConfig::default()
    });
    peer.open(1024);
    let mut raw = BytesMut::new();
    raw.put_u32(4096);
    raw.put_slice(&[2, 0, 0, 0]);
    peer.send_raw(&raw);
    assert_eq!(
        close_error(&peer.recv()),
        Some(ErrorCondition::ConnectionError(
            ConnectionError::FramingError
        ))
    );
    assert!(peer.conn.is_finished());
}

#[test]
fn short_frame_size_closes_without_panicking() {
    let mut peer = Peer::new();
    peer.open(4096);
    peer.send_raw(&[0, 0, 0, 5, 2, 0, 0, 0, 0]);
    assert_eq!(
        close_error(&peer.recv()),
        Some(ErrorCondition::ConnectionError(
            ConnectionError::FramingError
        ))
    );
}

#[test]
fn garbage_performative_closes_with_decode_error() {
    let mut peer = Peer::new();
    peer.open(4096);
    peer.send_raw(&[0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x99, 0x45]);
    assert_eq!(
        close_error(&peer.recv()),
        Some(ErrorCondition::AmqpError(AmqpError::DecodeError))
    );
}

#[test]
fn heartbeats_at_half_the_peer_idle_timeout_and_idle_peers_are_closed() {
    let mut peer = Peer::with_config(EngineConfig {
        idle_timeout: Some(Duration::from_secs(10)),
        ..EngineConfig::default()
    });
    let mut o = open(4096);
    o.idle_time_out = Some(4000);
    peer.send(0, &o);
    peer.recv();
    peer.conn.tick(peer.now + Duration::from_millis(1000));
    assert!(peer.recv().is_empty());
    peer.conn.tick(peer.now + Duration::from_millis(2000));
    let frames = peer.recv();
    assert_eq!(frames.len(), 1);
    assert!(matches!(frames[0].body, FrameBody::Empty));
    peer.conn.tick(peer.now + Duration::from_millis(10_001));
    assert_eq!(
        close_error(&peer.recv()),
        Some(ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded))
    );
}

#[test]
fn close_is_answered_and_unsettled_messages_return() {
    let mut peer = Peer::new();
    peer.setup("c", 65536, 10_000);
    peer.publish(0, &message("a"));
    peer.send(0, &credit(1, 0, 1, false));
    peer.recv();
    let q = peer.broker.existing_queue("c").unwrap();
    assert_eq!(q.stats().unacked, 1);
    peer.send(0, &Close { error: None });
    assert!(matches!(peer.recv()[0].body, FrameBody::Close(_)));
    assert!(peer.conn.is_finished());
    assert_eq!((q.stats().depth, q.stats().unacked), (1, 0));
}

#[test]
fn rcv_settle_mode_second_gets_our_settlement() {
    let mut peer = Peer::new();
    peer.open(65536);
    peer.begin(0, 10_000);
    peer.send(0, &attach("p", 0, Role::Sender, "s2"));
    peer.recv();
    let mut a = attach("c", 1, Role::Receiver, "s2");
    a.rcv_settle_mode = ReceiverSettleMode::Second;
    peer.send(0, &a);
    peer.recv();
    peer.publish(0, &message("a"));
    peer.send(0, &credit(1, 0, 1, false));
    let id = deliveries(&peer.recv())[0].0;
    let mut d = settle(id, id, DeliveryState::Accepted(Accepted {}));
    d.settled = false;
    peer.send(0, &d);
    let frames = peer.recv();
    let ours = frames
        .iter()
        .find_map(|f| match &f.body {
            FrameBody::Disposition(d) => Some(d.clone()),
            _ => None,
        })
        .expect("broker settles");
    assert!(ours.settled);
    assert_eq!(ours.role, Role::Sender);
    assert_eq!(peer.broker.existing_queue("s2").unwrap().stats().unacked, 0);
}

#[test]
fn producer_gets_credit_topped_up() {
    let mut peer = Peer::with_config(EngineConfig {
        producer_credit: 4,
        ..EngineConfig::default()
    });
    peer.setup("credit", 65536, 10_000);
    for i in 0..3 {
        peer.publish(i, &message("x"));
    }
    let flows: Vec<Flow> = peer
        .recv()
        .into_iter()
        .filter_map(|f| match f.body {
            FrameBody::Flow(fl) => Some(fl),
            _ => None,
        })
        .collect();
    let last = flows.last().expect("credit was topped up");
    assert_eq!(last.handle, Some(0.into()));
    assert_eq!(last.link_credit, Some(4));
}

#[test]
fn transfer_without_credit_detaches_with_transfer_limit_exceeded() {
    let mut peer = Peer::with_config(EngineConfig {
        producer_credit: 1,
        ..EngineConfig::default()
    });
    peer.setup("limit", 65536, 10_000);
    // Both transfers arrive in one read, before any top-up.
    let mut input = BytesMut::new();
    write_frame(
        &mut input,
        false,
        0,
        &transfer(0, Some(0), false),
        &message("a"),
    );
    write_frame(
        &mut input,
        false,
        0,
        &transfer(0, Some(1), false),
        &message("b"),
    );
    peer.conn.handle_input(&mut input, peer.now);
    let detach = peer
        .recv()
        .into_iter()
        .find_map(|f| match f.body {
            FrameBody::Detach(d) => d.error,
            _ => None,
        })
        .expect("detached");
    assert_eq!(
        detach.condition,
        ErrorCondition::LinkError(LinkError::TransferLimitExceeded)
    );
}

#[test]
fn unknown_queue_with_auto_create_off_is_refused_with_not_found() {
    let broker = Broker::new(BrokerOptions {
        auto_create: false,
        predeclared: vec![],
        ..BrokerOptions::default()
    });
    let mut peer = Peer::new();
    peer.conn = Connection::new(Arc::new(EngineConfig::default()), broker, peer.now);
    peer.open(4096);
    peer.begin(0, 100);
    peer.send(0, &attach("x", 0, Role::Receiver, "nowhere"));
    let frames = peer.recv();
    match (&frames[0].body, &frames[1].body) {
        (FrameBody::Attach(a), FrameBody::Detach(d)) => {
            assert!(a.source.is_none());
            assert_eq!(
                d.error.as_ref().unwrap().condition,
                ErrorCondition::AmqpError(AmqpError::NotFound)
            );
        }
        other => panic!("{other:?}"),
    }
    // The peer's detach is answered by nothing, and the handle is free again.
    peer.send(
        0,
        &Detach {
            handle: 0.into(),
            closed: true,
            error: None,
        },
    );
    assert!(peer.recv().is_empty());
}

#[test]
fn first_frame_not_open_is_refused() {
    let mut peer = Peer::new();
    peer.send(0, &begin(10));
    let frames = peer.recv();
    assert!(matches!(frames[0].body, FrameBody::Open(_)));
    assert_eq!(
        close_error(&frames),
        Some(ErrorCondition::AmqpError(AmqpError::IllegalState))
    );
}

#[test]
fn message_sections_pass_through_byte_for_byte() {
    let mut peer = Peer::new();
    peer.setup("bytes", 65536, 10_000);
    let props =
        serde_amqp::to_vec(&Properties::builder().message_id(1u64).subject("s").build()).unwrap();
    let body = serde_amqp::to_vec(&AmqpValue(Value::List(vec![
        Value::Int(1),
        Value::String("two".into()),
    ])))
    .unwrap();
    let msg = [props, body].concat();
    peer.publish(0, &msg);
    peer.send(0, &credit(1, 0, 1, false));
    let got = deliveries(&peer.recv());
    assert_eq!(&got[0].1[..], &msg[..]);
}

mod hostile;
mod links;
mod paging;
