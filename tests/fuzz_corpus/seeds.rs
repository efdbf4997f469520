//! The seed inputs of each fuzz target, written by `write_seeds`: valid
//! frames, SASL exchanges, messages, connection scripts and selectors, and
//! near misses of each.

use bytes::BytesMut;
use fe2o3_amqp::frames::sasl::Frame as SaslFrame;
use fe2o3_amqp::types::definitions::{
    AmqpError, Error as AmqpErrorInfo, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    Accepted, AmqpSequence, AmqpValue, ApplicationProperties, Data, DeliveryAnnotations,
    DeliveryState, Footer, Header, MessageAnnotations, Modified, Properties, Rejected, Released,
    Source, Target, TargetArchetype, TerminusDurability, TerminusExpiryPolicy,
};
use fe2o3_amqp::types::performatives::{
    Attach, Begin, ChannelMax, Close, Detach, Disposition, End, Flow, MaxFrameSize, Open, Transfer,
};
use fe2o3_amqp::types::primitives::{
    Array, Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Value,
};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome, SaslResponse};
use fe2o3_amqp::types::transaction::{
    Coordinator, Declare, Discharge, TransactionalState, TxnCapability,
};
use ordo::amqp::frame::{write_frame, write_heartbeat};
use ordo::amqp::handshake::{AMQP_HEADER, SASL_HEADER};
use serde::Serialize;
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;

#[path = "connection_seeds.rs"]
mod connection;
pub use connection::connection_seeds;
use connection::{coordinator, filtered_source, in_txn};

/// A seed file: its name (without `.bin`) and its bytes.
pub type Seed = (&'static str, Vec<u8>);

/// One frame of `p` on `channel`.
fn frame<P: Serialize>(channel: u16, p: &P) -> Vec<u8> {
    frame_with(channel, p, &[])
}

/// One frame of `p` followed by `payload`.
fn frame_with<P: Serialize>(channel: u16, p: &P, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_frame(&mut out, false, channel, p, payload);
    out.to_vec()
}

fn sasl(f: SaslFrame) -> Vec<u8> {
    let mut out = BytesMut::new();
    write_frame(&mut out, true, 0, &f, &[]);
    out.to_vec()
}

fn heartbeat() -> Vec<u8> {
    let mut out = BytesMut::new();
    write_heartbeat(&mut out);
    out.to_vec()
}

fn open(max_frame: u32, idle_ms: Option<u32>) -> Open {
    Open {
        container_id: "seed-client".into(),
        hostname: Some("localhost".into()),
        max_frame_size: MaxFrameSize(max_frame),
        channel_max: ChannelMax(3),
        idle_time_out: idle_ms,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: Some(Array(vec![Symbol::from("ANONYMOUS-RELAY")])),
        desired_capabilities: None,
        properties: None,
    }
}

fn begin() -> Begin {
    Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 100,
        outgoing_window: 100,
        handle_max: 7.into(),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// An attach of ours: `Role::Sender` is a producer (the broker receives),
/// `Role::Receiver` a consumer.
fn attach(name: &str, handle: u32, role: Role, source: Source, target: Option<Target>) -> Attach {
    let initial_delivery_count = matches!(role, Role::Sender).then_some(0);
    Attach {
        name: name.into(),
        handle: handle.into(),
        role,
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: Some(Box::new(source)),
        target: target.map(|t| Box::new(t.into())),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count,
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

fn producer(handle: u32, address: &str) -> Attach {
    attach(
        "producer",
        handle,
        Role::Sender,
        Source::builder().build(),
        Some(Target::builder().address(address).build()),
    )
}

fn consumer(handle: u32, source: Source) -> Attach {
    attach(
        "consumer",
        handle,
        Role::Receiver,
        source,
        Some(Target::builder().build()),
    )
}

fn transfer(handle: u32, id: u32, settled: bool, more: bool) -> Transfer {
    Transfer {
        handle: handle.into(),
        delivery_id: Some(id),
        delivery_tag: Some(Binary::from(id.to_be_bytes().to_vec())),
        message_format: Some(0),
        settled: Some(settled),
        more,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    }
}

/// A later frame of a multi-frame delivery.
fn continuation(handle: u32, more: bool) -> Transfer {
    Transfer {
        delivery_id: None,
        delivery_tag: None,
        message_format: None,
        settled: None,
        ..transfer(handle, 0, false, more)
    }
}

fn credit(handle: u32, link_credit: u32, drain: bool) -> Flow {
    Flow {
        next_incoming_id: Some(0),
        incoming_window: 100,
        next_outgoing_id: 0,
        outgoing_window: 100,
        handle: Some(handle.into()),
        delivery_count: Some(0),
        link_credit: Some(link_credit),
        available: None,
        drain,
        echo: !drain,
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

fn detach(handle: u32) -> Detach {
    Detach {
        handle: handle.into(),
        closed: true,
        error: None,
    }
}

fn end() -> End {
    End { error: None }
}

fn close() -> Close {
    Close { error: None }
}

fn annotations(entries: &[(&str, Value)]) -> OrderedMap<OwnedKey, Value> {
    let mut map = OrderedMap::new();
    for (key, value) in entries {
        map.insert(OwnedKey::Symbol(Symbol::from(*key)), value.clone());
    }
    map
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_amqp::to_vec(value).unwrap()
}

/// A message with every section: header, delivery annotations, message
/// annotations, properties, application properties, a data body, footer.
fn full_message() -> Vec<u8> {
    let header = Header {
        durable: true,
        priority: 7.into(),
        ttl: Some(60_000),
        first_acquirer: true,
        delivery_count: 2,
    };
    let delivery = DeliveryAnnotations(annotations(&[("x-opt-hop", Value::Int(1))]));
    let message = MessageAnnotations(annotations(&[
        ("x-opt-delivery-delay", Value::Long(0)),
        ("x-opt-jms-msg-type", Value::Byte(5)),
    ]));
    let properties = Properties::builder()
        .message_id(String::from("m-1"))
        .user_id(Binary::from(b"user".to_vec()))
        .to("q")
        .subject("order")
        .reply_to("replies")
        .correlation_id(42u64)
        .content_type("text/plain")
        .content_encoding("utf-8")
        .absolute_expiry_time(Timestamp::from_milliseconds(4_102_444_800_000))
        .creation_time(Timestamp::from_milliseconds(1_000))
        .group_id(String::from("g"))
        .group_sequence(3)
        .reply_to_group_id(String::from("rg"))
        .build();
    let application = ApplicationProperties::builder()
        .insert("JMSXGroupID", SimpleValue::String("g".into()))
        .insert("JMSXGroupSeq", SimpleValue::Int(-1))
        .insert("_AMQ_DUPL_ID", SimpleValue::String("dup-1".into()))
        .insert("color", SimpleValue::String("red".into()))
        .insert("weight", SimpleValue::Double(2.5.into()))
        .insert("count", SimpleValue::Int(-3))
        .insert("flag", SimpleValue::Bool(true))
        .insert("x", SimpleValue::Long(9))
        .build();
    let body = Data(Binary::from(b"hello".to_vec()));
    let footer = Footer(annotations(&[("x-opt-crc", Value::Uint(7))]));
    [
        encode(&header),
        encode(&delivery),
        encode(&message),
        encode(&properties),
        encode(&application),
        encode(&body),
        encode(&footer),
    ]
    .concat()
}

fn text_message(text: &str) -> Vec<u8> {
    encode(&AmqpValue(Value::String(text.into())))
}

/// A message of a group, with its sequence number.
fn grouped_message(group: &str, seq: u32) -> Vec<u8> {
    let properties = Properties::builder()
        .message_id(u64::from(seq))
        .group_id(String::from(group))
        .group_sequence(seq)
        .build();
    [encode(&properties), text_message("in a group")].concat()
}

/// A message for the anonymous relay: its `to` names the node.
fn addressed_message(to: &str) -> Vec<u8> {
    [
        encode(&Properties::builder().to(to).build()),
        text_message("relayed"),
    ]
    .concat()
}

pub fn message_seeds() -> Vec<Seed> {
    let full = full_message();
    let scheduled = [
        encode(&MessageAnnotations(annotations(&[(
            "x-opt-delivery-time",
            Value::Timestamp(Timestamp::from_milliseconds(4_102_444_800_000)),
        )]))),
        text_message("later"),
    ]
    .concat();
    let sequence = encode(&AmqpSequence(vec![
        Value::Int(1),
        Value::String("two".into()),
    ]));
    let two_data = [
        encode(&Data(Binary::from(vec![1u8; 3]))),
        encode(&Data(Binary::from(vec![2u8; 300]))),
    ]
    .concat();
    let mut symbolic = vec![0x00, 0xa3, 16];
    symbolic.extend_from_slice(b"amqp:header:list");
    symbolic.extend_from_slice(&[0xc0, 0x02, 0x01, 0x41]);
    symbolic.extend_from_slice(&[0x00, 0xa3, 12]);
    symbolic.extend_from_slice(b"amqp:value:*");
    symbolic.extend_from_slice(&[0xa1, 0x02, b'h', b'i']);
    let mut ulong = vec![0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x77];
    ulong.extend_from_slice(&[0xa1, 0x02, b'h', b'i']);
    let out_of_order = [encode(&Properties::default()), encode(&Header::default())].concat();
    let mut nested = vec![0x00; 12];
    nested.extend_from_slice(&[0x53, 0x75, 0xa0, 0x00]);
    vec![
        ("full", full.clone()),
        ("truncated", full[..full.len() / 2].to_vec()),
        ("value-string", text_message("hello")),
        (
            "value-declare",
            encode(&AmqpValue(Declare { global_id: None })),
        ),
        ("scheduled", scheduled),
        ("sequence", sequence),
        ("two-data-sections", two_data),
        ("grouped", grouped_message("g", 1)),
        ("addressed", addressed_message("q")),
        ("symbolic-descriptors", symbolic),
        ("ulong-descriptor", ulong),
        ("out-of-order", out_of_order),
        ("nested-descriptors", nested),
        (
            "huge-data-length",
            b"\x00\x53\x75\xb0\xff\xff\xff\xff".to_vec(),
        ),
        ("unknown-encoding", b"\x00\x53\x77\xff".to_vec()),
        ("empty", Vec::new()),
    ]
}

fn plain_response(user: &str, password: &str) -> Binary {
    Binary::from(format!("\0{user}\0{password}").into_bytes())
}

fn sasl_init(mechanism: &str, response: Option<Binary>) -> Vec<u8> {
    sasl(SaslFrame::Init(SaslInit {
        mechanism: Symbol::from(mechanism),
        initial_response: response,
        hostname: Some("localhost".into()),
    }))
}

/// Flags byte (bit 0: anonymous allowed; bits 1-2: write size), then the
/// client's bytes.
fn sasl_seed(flags: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![flags];
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

pub fn sasl_seeds() -> Vec<Seed> {
    let open = frame(0, &open(4096, None));
    let anonymous = sasl_init("ANONYMOUS", Some(Binary::from(b"trace".to_vec())));
    let plain = sasl_init("PLAIN", Some(plain_response("user", "pencil")));
    let wrong = sasl_init("PLAIN", Some(plain_response("user", "wrong")));
    let plain_later = sasl_init("PLAIN", None);
    let response = sasl(SaslFrame::Response(SaslResponse {
        response: plain_response("user", "pencil"),
    }));
    let scram_first = sasl_init(
        "SCRAM-SHA-256",
        Some(Binary::from(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO".to_vec())),
    );
    let scram_final = sasl(SaslFrame::Response(SaslResponse {
        response: Binary::from(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
                .to_vec(),
        ),
    }));
    let scram_unknown = sasl_init(
        "SCRAM-SHA-256",
        Some(Binary::from(b"n,a=other,n=nobody,r=abc".to_vec())),
    );
    let mechanisms = sasl(SaslFrame::Mechanisms(SaslMechanisms {
        sasl_server_mechanisms: Array(vec![Symbol::from("PLAIN")]),
    }));
    let outcome = sasl(SaslFrame::Outcome(SaslOutcome {
        code: SaslCode::Ok,
        additional_data: None,
    }));
    vec![
        (
            "anonymous",
            sasl_seed(1, &[&SASL_HEADER, &anonymous, &AMQP_HEADER, &open]),
        ),
        (
            "anonymous-refused",
            sasl_seed(0, &[&SASL_HEADER, &anonymous, &AMQP_HEADER]),
        ),
        (
            "anonymous-bytewise",
            sasl_seed(3, &[&SASL_HEADER, &anonymous, &AMQP_HEADER]),
        ),
        (
            "plain",
            sasl_seed(0, &[&SASL_HEADER, &plain, &AMQP_HEADER, &open]),
        ),
        (
            "plain-7-bytes-at-a-time",
            sasl_seed(4, &[&SASL_HEADER, &plain, &AMQP_HEADER]),
        ),
        (
            "plain-wrong-password",
            sasl_seed(6, &[&SASL_HEADER, &wrong, &AMQP_HEADER]),
        ),
        (
            "plain-challenge-response",
            sasl_seed(0, &[&SASL_HEADER, &plain_later, &response, &AMQP_HEADER]),
        ),
        (
            "scram",
            sasl_seed(0, &[&SASL_HEADER, &scram_first, &scram_final, &AMQP_HEADER]),
        ),
        (
            "scram-unknown-user",
            sasl_seed(1, &[&SASL_HEADER, &scram_unknown, &scram_final]),
        ),
        (
            "unknown-mechanism",
            sasl_seed(0, &[&SASL_HEADER, &sasl_init("EXTERNAL", None)]),
        ),
        (
            "out-of-turn-frames",
            sasl_seed(0, &[&SASL_HEADER, &mechanisms, &outcome]),
        ),
        (
            "sasl-header-twice",
            sasl_seed(1, &[&SASL_HEADER, &anonymous, &SASL_HEADER]),
        ),
        ("amqp-frame-in-sasl", sasl_seed(1, &[&SASL_HEADER, &open])),
        ("plain-amqp", sasl_seed(1, &[&AMQP_HEADER, &open])),
        ("plain-amqp-refused", sasl_seed(0, &[&AMQP_HEADER])),
        ("tls-header", sasl_seed(1, &[b"AMQP\x02\x01\x00\x00"])),
        ("http", sasl_seed(1, &[b"GET / HTTP/1.1\r\n\r\n"])),
        ("half-header", sasl_seed(1, &[b"AMQ"])),
        (
            "truncated-init",
            sasl_seed(0, &[&SASL_HEADER, &plain[..plain.len() - 3]]),
        ),
    ]
}

pub fn frame_seeds() -> Vec<Seed> {
    let text = text_message("hello");
    let close_error = Close {
        error: Some(AmqpErrorInfo::new(
            AmqpError::InternalError,
            Some("seed".into()),
            None,
        )),
    };
    let mut extended = frame(0, &close());
    let body = extended.split_off(8);
    let mut ext = ((12 + body.len()) as u32).to_be_bytes().to_vec();
    ext.extend_from_slice(&[3, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef]);
    ext.extend_from_slice(&body);
    let all = [
        frame(0, &open(512, Some(1000))),
        frame(0, &begin()),
        frame(0, &producer(0, "q")),
        frame_with(0, &transfer(0, 0, false, false), &text),
        frame(0, &close()),
    ]
    .concat();
    vec![
        ("open", frame(0, &open(65536, Some(30_000)))),
        ("begin", frame(1, &begin())),
        ("attach-producer", frame(0, &producer(0, "q"))),
        (
            "attach-consumer-filters",
            frame(0, &consumer(1, filtered_source("q"))),
        ),
        ("attach-coordinator", frame(0, &coordinator(2))),
        ("flow", frame(0, &credit(1, 10, true))),
        (
            "transfer",
            frame_with(0, &transfer(0, 0, false, false), &full_message()),
        ),
        (
            "transfer-in-txn",
            frame_with(0, &in_txn(transfer(0, 1, false, false)), &text),
        ),
        (
            "disposition",
            frame(0, &settle(0, 3, DeliveryState::Accepted(Accepted {}))),
        ),
        ("detach", frame(0, &detach(0))),
        ("end", frame(0, &end())),
        ("close-error", frame(0, &close_error)),
        ("heartbeat", heartbeat()),
        ("extended-header", ext),
        ("sequence", all),
        (
            "sasl-init",
            sasl_init("PLAIN", Some(plain_response("user", "pencil"))),
        ),
        (
            "sasl-mechanisms",
            sasl(SaslFrame::Mechanisms(SaslMechanisms {
                sasl_server_mechanisms: Array(vec![
                    Symbol::from("PLAIN"),
                    Symbol::from("ANONYMOUS"),
                ]),
            })),
        ),
        (
            "sasl-outcome",
            sasl(SaslFrame::Outcome(SaslOutcome {
                code: SaslCode::Auth,
                additional_data: Some(Binary::from(b"v=x".to_vec())),
            })),
        ),
        ("size-below-header", vec![0, 0, 0, 5, 2, 0, 0, 0]),
        ("doff-past-end", vec![0, 0, 0, 8, 5, 0, 0, 0]),
        ("sasl-empty", vec![0, 0, 0, 8, 2, 1, 0, 0]),
        (
            "undecodable-body",
            vec![0, 0, 0, 14, 2, 0, 0, 0, 0x00, 0x53, 0x10, 0xc0, 0xff, 0x05],
        ),
    ]
}

/// Selectors as consumers send them: each operator, literal and header
/// field, and near misses (unbalanced, bad escapes, huge numbers).
pub fn selector_seeds() -> Vec<Seed> {
    [
        ("comparison", "color = 'red' AND weight > 2"),
        (
            "in_between",
            "color IN ('red', 'blue') AND weight BETWEEN 1 AND 10.5",
        ),
        ("like_escape", "name LIKE 'a\\_%' ESCAPE '\\'"),
        ("arithmetic", "x + y * 2 > z / 3 - 1 OR -count <> 3"),
        ("null_not", "NOT (flag IS NULL) AND s IS NOT NULL"),
        (
            "headers",
            "JMSPriority > 3 AND JMSDeliveryMode = 'PERSISTENT' AND JMSType = 'order'",
        ),
        (
            "literals",
            "big = 18446744073709551615 OR x = 0x7F OR y = 1.5e300 OR z = 'it''s'",
        ),
        ("nested", "((((a = 1) OR (b = 2)) AND NOT (c = 3)))"),
        ("unbalanced", "(color = 'red'"),
        ("open_string", "color = 'red"),
        ("bad_escape", "name LIKE 'a%' ESCAPE 'xy'"),
        ("empty", ""),
    ]
    .into_iter()
    .map(|(name, text)| (name, text.as_bytes().to_vec()))
    .chain(hostile_selectors())
    .collect()
}

/// Deep and long selectors: at each limit of `core::selector` (they parse
/// and are evaluated), just past it, and the inputs that once overflowed
/// the broker's stack (cut to the 64 KB a seed may have).
fn hostile_selectors() -> Vec<Seed> {
    let nest = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    let chain = |term: &str, op: &str, n: usize| vec![term; n].join(op);
    [
        ("deep_parens_at_limit", nest("(b = 2 OR ", "a = 1", ")", 64)),
        ("deep_parens_past_limit", nest("(", "a = 1", ")", 65)),
        ("deep_parens_1500", nest("(", "a = 1", ")", 1500)),
        ("not_chain_4000", nest("NOT ", "a = 1", "", 4000)),
        ("unary_minus_16000", format!("a = {}1", "-".repeat(16_000))),
        ("negations_at_limit", nest("-(1 + ", "x", ")", 32) + " > 0"),
        ("or_chain_at_terms_limit", chain("a = 1", " OR ", 250)),
        ("or_chain_past_terms_limit", chain("a = 1", " OR ", 2_500)),
        ("and_chain_past_length", chain("a = 1", " AND ", 6_000)),
        (
            "plus_chain_past_length",
            format!("a = {}", chain("1", " + ", 15_000)),
        ),
        (
            "in_list_at_terms_limit",
            format!("s IN ({})", chain("'x'", ", ", 990)),
        ),
        (
            "like_worst_within_limits",
            format!("s LIKE '{}z'", "%_".repeat(127)),
        ),
        (
            "like_wildcard_segments",
            format!("s LIKE '%a_{}_z%'", "a".repeat(200)),
        ),
        (
            "like_pattern_past_limit",
            format!("s LIKE '{}z'", "%_".repeat(30_000)),
        ),
    ]
    .into_iter()
    .map(|(name, text)| (name, text.into_bytes()))
    .collect()
}
