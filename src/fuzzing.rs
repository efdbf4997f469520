//! Entry points for the fuzz targets (`examples/fuzz_*.rs`, `tests/fuzz/run.sh`)
//! and the corpus replay test (`tests/fuzz_corpus.rs`).
//!
//! Each entry point takes arbitrary bytes and drives one part of the broker
//! with them, the way a hostile peer could. The harness itself never panics,
//! whatever the input: a panic (or, under the sanitizer, a memory error)
//! comes from the code under test and is a finding. The targets, and the
//! form of input each expects, are described in tests/fuzz/README.md:
//!
//! - [`frame_decoder`]: raw bytes into the AMQP and SASL frame readers.
//! - [`sasl_exchange`]: one flags byte, then what a client sends from its
//!   first byte (protocol headers and SASL frames) to the handshake.
//! - [`message_parser`]: a transfer payload (message sections) into the
//!   section parser and everything that reads sections afterwards.
//! - [`connection_engine`]: AMQP frames, sent after the protocol headers,
//!   into a connection of a broker with no store and small memory limits;
//!   what unfinished messages held must be given back when it ends.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fe2o3_amqp::frames::amqp::{self, FrameBody};
use fe2o3_amqp::frames::sasl;
use fe2o3_amqp::types::performatives::{ChannelMax, MaxFrameSize, Open};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::amqp::frame::{self, MIN_MAX_FRAME_SIZE};
use crate::amqp::handshake::{self, Credentials};
use crate::amqp::{message, selector_values, Connection, EngineConfig};
use crate::auth::{Authenticator, ScramCredential};
use crate::config::{Config, SaslConfig, UserConfig};
use crate::core::selector::Selector;
use crate::core::{AnnotationValue, Broker, BrokerOptions, ConsumerId, Delivery, Message};

/// The fuzz targets, by the names `tests/fuzz/run.sh`, the corpus
/// directories and [`replay`] use.
pub const TARGETS: [&str; 5] = [
    "fuzz_frame",
    "fuzz_sasl",
    "fuzz_message",
    "fuzz_connection",
    "fuzz_selector",
];

/// Runs the entry point of fuzz target `target` (one of [`TARGETS`]) on
/// `data`, as the fuzzer would; an unknown name does nothing (the replay
/// test checks its directory names against [`TARGETS`]).
pub fn replay(target: &str, data: &[u8]) {
    match target {
        "fuzz_frame" => frame_decoder(data),
        "fuzz_sasl" => sasl_exchange(data),
        "fuzz_message" => message_parser(data),
        "fuzz_connection" => connection_engine(data),
        "fuzz_selector" => selector_parser(data),
        _ => {}
    }
}

/// Max-frame-sizes the frame readers are tried with: the smallest a peer
/// may announce, and the engine's default.
const FRAME_LIMITS: [u32; 2] = [MIN_MAX_FRAME_SIZE, 1 << 20];

/// How many bytes arrive at a time: all at once, one by one, and an odd
/// size that cuts frame headers at every offset in turn.
const CHUNKS: [usize; 3] = [usize::MAX, 1, 7];

/// Feeds `data` to the AMQP and the SASL frame readers in chunks of each
/// size in [`CHUNKS`], with each limit in [`FRAME_LIMITS`], until a reader
/// fails or the bytes run out. Each frame read is written back with the
/// broker's frame writer and read again (the broker echoes what peers send:
/// attach terminus, properties).
pub fn frame_decoder(data: &[u8]) {
    for max in FRAME_LIMITS {
        for chunk in CHUNKS {
            read_frames(data, chunk, |buf| {
                frame::next_amqp(buf, max).map(|f| f.map(rewrite_amqp))
            });
            read_frames(data, chunk, |buf| {
                frame::next_sasl(buf, max).map(|f| f.map(rewrite_sasl))
            });
        }
    }
}

/// Runs `next` over a buffer that `data` is appended to `chunk` bytes at a
/// time, until it fails, or needs more bytes once all have been given.
fn read_frames<E>(
    data: &[u8],
    chunk: usize,
    mut next: impl FnMut(&mut BytesMut) -> Result<Option<()>, E>,
) {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    loop {
        match next(&mut buf) {
            // A frame was cut out of the buffer: it is shorter by at least
            // a frame header, so this loop ends.
            Ok(Some(())) => {}
            Err(_) => return,
            Ok(None) if fed == data.len() => return,
            Ok(None) => {
                let n = chunk.min(data.len() - fed);
                buf.extend_from_slice(&data[fed..fed + n]);
                fed += n;
            }
        }
    }
}

/// Writes a decoded AMQP frame back out and reads it again.
fn rewrite_amqp(f: amqp::Frame) {
    let mut out = BytesMut::new();
    let channel = f.channel;
    let _ = match f.body {
        FrameBody::Open(p) => frame::write_frame(&mut out, false, channel, &p, &[]),
        FrameBody::Begin(p) => frame::write_frame(&mut out, false, channel, &p, &[]),
        FrameBody::Attach(p) => frame::write_frame(&mut out, false, channel, &p, &[]),
        FrameBody::Flow(p) => frame::write_frame(&mut out, false, channel, &p, &[]),
        FrameBody::Transfer {
            performative,
            payload,
        } => frame::write_frame(&mut out, false, channel, &performative, &payload),
        FrameBody::Disposition(p) => frame::write_frame(&mut out, false, channel, &p, &[]),
        FrameBody::Detach(p) => frame::write_frame(&mut out, false, channel, &p, &[]),
        FrameBody::End(p) => frame::write_frame(&mut out, false, channel, &p, &[]),
        FrameBody::Close(p) => frame::write_frame(&mut out, false, channel, &p, &[]),
        FrameBody::Empty => {
            frame::write_heartbeat(&mut out);
            0
        }
    };
    // The size field is what was written, so no limit is needed.
    let _ = frame::next_amqp(&mut out, u32::MAX);
}

/// Writes a decoded SASL frame back out and reads it again.
fn rewrite_sasl(f: sasl::Frame) {
    let mut out = BytesMut::new();
    frame::write_frame(&mut out, true, 0, &f, &[]);
    let _ = frame::next_sasl(&mut out, u32::MAX);
}

/// The one user the SASL target knows (SCRAM and PLAIN).
const SASL_USER: &str = "user";
/// Its password.
const SASL_PASSWORD: &str = "pencil";
/// How long one handshake may take before the harness gives up on it
/// (below libFuzzer's `-timeout=10` in run.sh, so a handshake that does not
/// end when its client closes shows up as a hang, not as a slow input).
const SASL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes the in-memory socket buffers in each direction.
const DUPLEX_BUFFER: usize = 64 * 1024;

/// The runtime handshakes run on: one for the process, built on first use
/// (None if it cannot be built: the SASL target then does nothing).
fn runtime() -> Option<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
}

/// The broker's own [`Credentials`] with [`SASL_USER`] as its one user:
/// `[anonymous refused, anonymous allowed]`. The credential has one PBKDF2
/// iteration so that a PLAIN check costs microseconds, not milliseconds.
fn credentials() -> Option<&'static [Arc<dyn Credentials>; 2]> {
    static CREDENTIALS: OnceLock<Option<[Arc<dyn Credentials>; 2]>> = OnceLock::new();
    CREDENTIALS
        .get_or_init(|| {
            let credential =
                ScramCredential::derive(SASL_PASSWORD, b"ordo-fuzzing-salt".to_vec(), 1);
            let with = |allow_anonymous: bool| -> Option<Arc<dyn Credentials>> {
                let config = Config {
                    sasl: SaslConfig {
                        allow_anonymous,
                        ..SaslConfig::default()
                    },
                    users: vec![UserConfig {
                        name: SASL_USER.into(),
                        password: credential.to_string(),
                        groups: vec!["fuzzers".into()],
                    }],
                    ..Config::default()
                };
                Some(Arc::new(Authenticator::from_config(&config).ok()?))
            };
            Some([with(false)?, with(true)?])
        })
        .as_ref()
}

/// Runs the server side of the handshake (protocol headers, SASL) against
/// a client that sends `data[1..]` and closes. `data[0]` holds flags:
/// bit 0 allows anonymous access; bits 1-2 pick how the client writes
/// (all at once, 1, 7 or 64 bytes at a time), so headers and frames arrive
/// cut at every offset.
pub fn sasl_exchange(data: &[u8]) {
    let Some((&flags, sent)) = data.split_first() else {
        return;
    };
    let (Some(runtime), Some(credentials)) = (runtime(), credentials()) else {
        return;
    };
    let credentials = Arc::clone(&credentials[usize::from(flags & 1)]);
    let chunk = [usize::MAX, 1, 7, 64][usize::from((flags >> 1) & 3)];
    runtime.block_on(async {
        let (mut client, mut server) = tokio::io::duplex(DUPLEX_BUFFER);
        let serve = async move {
            let mut input = BytesMut::new();
            let _ = handshake::handshake(
                &mut server,
                &mut input,
                credentials,
                handshake::Peer::local(),
            )
            .await;
            // `server` is dropped here, which ends the client's reads.
        };
        let peer = async move {
            for piece in sent.chunks(chunk) {
                if client.write_all(piece).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            let _ = client.shutdown().await;
            let mut answers = Vec::new();
            let _ = client.read_to_end(&mut answers).await;
        };
        let _ = tokio::time::timeout(SASL_TIMEOUT, async { tokio::join!(serve, peer) }).await;
    });
}

/// Selectors evaluated against each message: every JMS header field the
/// protocol layer maps, and application properties of each value type.
const SELECTORS: [&str; 8] = [
    "JMSDeliveryMode = 'PERSISTENT' AND JMSPriority > 3",
    "JMSMessageID LIKE 'ID:%' OR JMSCorrelationID IS NOT NULL",
    "JMSType = 'order' AND JMSTimestamp > 0 AND JMSExpiration >= 0",
    "JMSXDeliveryCount > 1 OR JMSXGroupID = 'g' OR JMSXGroupSeq < 0",
    "JMSXUserID IS NULL AND JMSReplyTo IS NULL",
    "color IN ('red', 'blue') AND weight BETWEEN 1 AND 10.5",
    "flag OR NOT (count <> -3) OR name LIKE 'a\\_%' ESCAPE '\\'",
    "x + y * 2 > z / 3 - 1",
];

/// The stack [`selector_parser`] runs on: a small one, so that recursion
/// a selector could push past its nesting limit shows as a crash. A debug
/// build (the corpus replay of `cargo test`) needs several times an
/// optimised build's frames.
const SELECTOR_STACK: usize = if cfg!(feature = "fuzzing") {
    256 * 1024
} else {
    1024 * 1024
};

/// Parses `data` as a JMS selector, as a consumer's attach filter arrives
/// (text of any length and content), on a thread with a small stack
/// ([`SELECTOR_STACK`]); one that parses is evaluated against messages with
/// application properties of every type and a long string, and its text
/// (what the broker echoes and stores with a durable subscription) must
/// parse again to the same selector.
pub fn selector_parser(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = text.to_string();
    let run = std::thread::Builder::new()
        .stack_size(SELECTOR_STACK)
        .spawn(move || parse_and_evaluate(&text));
    // A thread that cannot be started (the machine is out of threads) is
    // not a finding; a panic in it is.
    if let Ok(handle) = run {
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// [`selector_parser`]'s work, on its own thread.
fn parse_and_evaluate(text: &str) {
    let Ok(selector) = Selector::parse(text) else {
        return;
    };
    for m in selector_messages() {
        let _ = selector_values::evaluate(&selector, m);
    }
    let again = Selector::parse(selector.text());
    assert!(
        again.is_ok_and(|a| a.text() == selector.text()),
        "the text of a parsed selector parses again: {text:?}"
    );
}

/// Messages a fuzzed selector is evaluated against: application properties
/// of each type the selectors compare, and JMS header fields.
fn selector_messages() -> &'static [Message] {
    use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, Properties};
    use fe2o3_amqp::types::primitives::{SimpleValue as V, Value};
    static MESSAGES: OnceLock<Vec<Message>> = OnceLock::new();
    MESSAGES.get_or_init(|| {
        let props: [&[(&str, V)]; 4] = [
            &[
                ("color", V::String("red".into())),
                ("weight", V::Double(2.5.into())),
                ("count", V::Int(-3)),
                ("flag", V::Bool(true)),
                ("name", V::String("a_b".into())),
            ],
            &[
                ("x", V::Long(i64::MAX)),
                ("y", V::Long(i64::MIN)),
                ("z", V::Float(f32::NAN.into())),
                ("big", V::Ulong(u64::MAX)),
                ("s", V::String(String::new())),
            ],
            &[("s", V::String("a".repeat(64 * 1024) + "z"))],
            &[],
        ];
        props
            .iter()
            .filter_map(|pairs| {
                let mut application = ApplicationProperties::default();
                for (k, v) in pairs.iter() {
                    application.0.insert(k.to_string(), v.clone());
                }
                let properties = Properties {
                    message_id: Some("ID:1".to_string().into()),
                    subject: Some("order".into()),
                    ..Default::default()
                };
                let mut bare = serde_amqp::to_vec(&properties).ok()?;
                bare.extend(serde_amqp::to_vec(&application).ok()?);
                bare.extend(serde_amqp::to_vec(&AmqpValue(Value::Null)).ok()?);
                message::parse(Bytes::from(bare)).ok()
            })
            .collect()
    })
}

/// [`SELECTORS`], parsed once.
fn selectors() -> &'static [Selector] {
    static PARSED: OnceLock<Vec<Selector>> = OnceLock::new();
    PARSED.get_or_init(|| {
        SELECTORS
            .iter()
            .filter_map(|text| Selector::parse(text).ok())
            .collect()
    })
}

/// Application properties looked up in each message: the ones the broker
/// reads (groups, duplicate detection) and ones the selectors read.
const PROPERTY_NAMES: [&str; 6] = [
    "JMSXGroupID",
    "_AMQ_GROUP_ID",
    "JMSXGroupSeq",
    "_AMQ_DUPL_ID",
    "color",
    "weight",
];

/// Reads `data` as a producer's transfer payload, as the broker does: the
/// section walkers, the parser, and for a message that parses, the
/// duplicate-detection id, the routing accessors, application-property
/// lookups, selector evaluation and the payload a consumer would get (with
/// and without broker annotations). Selectors only ever see messages that
/// parsed (the parser checks every length in the properties section before
/// a selector decodes it), so they are not run on bytes that did not parse.
pub fn message_parser(data: &[u8]) {
    let _ = message::sections(data).count();
    let _ = message::amqp_value(data);
    let _ = message::data_body(data);
    for name in PROPERTY_NAMES {
        let _ = message::application_property(data, name);
    }
    let Ok(parsed) = message::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = message::duplicate_id(&parsed);
    let _ = (parsed.size(), parsed.absolute_expiry(), parsed.to());
    let _ = (parsed.group_id(), parsed.closes_group());
    let _ = parsed.scheduled_for(crate::core::now_ms());
    read_bare(&parsed);
    let annotated = parsed.with_annotation(
        "x-opt-ordo-fuzzing",
        AnnotationValue::String("annotated".into()),
    );
    for (m, redelivered) in [(parsed, false), (annotated, true)] {
        let delivery = Delivery {
            consumer: ConsumerId(1),
            delivery_id: 1,
            message: Arc::new(m),
            delivery_count: u32::from(redelivered),
            first_acquirer: !redelivered,
            settled: false,
            paged: None,
            release: None,
            group_first: redelivered,
        };
        let payload = message::delivery_payload(&delivery);
        let mut out = BytesMut::with_capacity(payload.len());
        payload.copy_range(&mut out, 0, payload.len());
        let _ = message::parse(out.freeze());
    }
}

/// Application-property lookups and selector evaluation on a message.
fn read_bare(m: &Message) {
    for name in PROPERTY_NAMES {
        let _ = message::application_property(&m.bare, name);
    }
    for selector in selectors() {
        let _ = selector_values::evaluate(selector, m);
    }
}

/// How many bytes reach the engine per `handle_input`: all at once, one by
/// one (a pump between any two frames), and an odd size.
const ENGINE_CHUNKS: [usize; 3] = [usize::MAX, 1, 61];

/// Time that passes between two chunks of input.
const ENGINE_STEP: Duration = Duration::from_millis(10);

/// Feeds `data` to a connection of a fresh broker (no store, auto-create
/// on) as the bytes that follow the protocol headers, in chunks of each
/// size in [`ENGINE_CHUNKS`]; then again, the same way, behind a valid Open
/// (small max-frame-size, an idle timeout), so inputs that start at begin,
/// attach or transfer get past the Open.
pub fn connection_engine(data: &[u8]) {
    for open_first in [false, true] {
        for chunk in ENGINE_CHUNKS {
            run_connection(data, chunk, open_first);
        }
    }
}

/// The Open the second pass of [`connection_engine`] starts with.
fn fuzz_open() -> Open {
    Open {
        container_id: "ordo-fuzzing".into(),
        hostname: None,
        max_frame_size: MaxFrameSize(MIN_MAX_FRAME_SIZE),
        channel_max: ChannelMax(7),
        idle_time_out: Some(1000),
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// One connection's life, as `amqp::io::serve` drives it: input in chunks
/// (output drained after each, as the socket would take it), then time
/// passing (heartbeat, idle timeout, queue expiry and wake-ups), then the
/// socket's end.
fn run_connection(data: &[u8], chunk: usize, open_first: bool) {
    let broker = Broker::new(BrokerOptions {
        auto_create: true,
        persistence: None,
        evaluator: Some(selector_values::evaluate),
        ..BrokerOptions::default()
    });
    // Memory limits that a fuzzed peer can reach: credit sized by the room
    // below the mark, and multi-frame messages past 32 KiB refused.
    broker.set_memory_high_watermark(64 << 20);
    broker.set_max_assembly_bytes(32 << 10);
    let mut now = Instant::now();
    let mut conn = Connection::new(Arc::new(EngineConfig::default()), Arc::clone(&broker), now);
    let mut input = BytesMut::new();
    if open_first {
        frame::write_frame(&mut input, false, 0, &fuzz_open(), &[]);
        conn.handle_input(&mut input, now);
        conn.output().clear();
    }
    for piece in data.chunks(chunk) {
        if conn.is_finished() {
            break;
        }
        input.extend_from_slice(piece);
        conn.handle_input(&mut input, now);
        conn.output().clear();
        now += ENGINE_STEP;
    }
    for later in [Duration::from_secs(1), Duration::from_secs(61)] {
        broker.tick();
        broker.wake_due(crate::core::now_ms());
        conn.pump(now + later);
        conn.tick(now + later);
        conn.output().clear();
    }
    conn.release_all();
    drop(conn);
    assert_eq!(
        broker.memory().assembly(),
        0,
        "bytes of unfinished messages outlived their connection"
    );
}
