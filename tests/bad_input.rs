//! Hostile and broken input over real sockets: each gets the right AMQP
//! error (or a clean TCP close where AMQP cannot speak yet), the broker
//! keeps running and other connections keep working.

mod common;

use bytes::{BufMut, BytesMut};
use common::{Broker, DEADLINE};
use fe2o3_amqp::frames::amqp::{Frame, FrameBody};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::{
    AmqpError, ConnectionError, ErrorCondition, Role, SessionError,
};
use fe2o3_amqp::types::messaging::{DeliveryState, Source, Target};
use fe2o3_amqp::types::performatives::{Attach, Begin, ChannelMax, MaxFrameSize, Open, Transfer};
use fe2o3_amqp::types::primitives::Binary;
use ordo::amqp::frame::{next_amqp, write_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// A client speaking raw frames.
struct Raw {
    stream: TcpStream,
    input: BytesMut,
}

impl Raw {
    async fn connect(broker: &Broker) -> Self {
        let stream = TcpStream::connect(broker.addr).await.expect("connect");
        Self {
            stream,
            input: BytesMut::new(),
        }
    }

    /// Plain AMQP header, then Open, answered by the broker's header and Open.
    async fn open(broker: &Broker) -> Self {
        let mut raw = Self::connect(broker).await;
        raw.write(b"AMQP\x00\x01\x00\x00").await;
        assert_eq!(raw.read_exact(8).await, b"AMQP\x00\x01\x00\x00");
        raw.frame(0, &open()).await;
        assert!(matches!(
            raw.next().await.expect("open").body,
            FrameBody::Open(_)
        ));
        raw
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn frame<P: serde::Serialize>(&mut self, channel: u16, p: &P) {
        self.frame_with_payload(channel, p, &[]).await;
    }

    async fn frame_with_payload<P: serde::Serialize>(
        &mut self,
        channel: u16,
        p: &P,
        payload: &[u8],
    ) {
        let mut out = BytesMut::new();
        write_frame(&mut out, false, channel, p, payload);
        self.write(&out).await;
    }

    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.input.len() < n {
            let read = timeout(DEADLINE, self.stream.read_buf(&mut self.input))
                .await
                .expect("in time")
                .expect("read");
            assert!(read > 0, "closed early");
        }
        self.input.split_to(n).to_vec()
    }

    /// The next frame, or None once the broker closed the socket.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = next_amqp(&mut self.input, u32::MAX).expect("broker frames decode") {
                return Some(f);
            }
            let read = timeout(DEADLINE, self.stream.read_buf(&mut self.input))
                .await
                .expect("in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until the socket closes; returns the first close or end error.
    async fn error(&mut self) -> Option<ErrorCondition> {
        let mut found = None;
        while let Some(f) = self.next().await {
            let error = match f.body {
                FrameBody::Close(c) => c.error,
                FrameBody::End(e) => e.error,
                FrameBody::Detach(d) => d.error,
                _ => None,
            };
            if found.is_none() {
                found = error.map(|e| e.condition);
            }
            if found.is_some() {
                return found;
            }
        }
        found
    }

    /// Reads until the broker closes the socket, returning all bytes.
    async fn until_closed(&mut self) -> Vec<u8> {
        loop {
            let read = timeout(DEADLINE, self.stream.read_buf(&mut self.input))
                .await
                .expect("closed in time");
            match read {
                Ok(0) | Err(_) => return self.input.to_vec(),
                Ok(_) => {}
            }
        }
    }
}

fn open() -> Open {
    Open {
        container_id: "raw".into(),
        hostname: None,
        max_frame_size: MaxFrameSize(65536),
        channel_max: ChannelMax(10),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

fn begin() -> Begin {
    Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 1000,
        outgoing_window: 1000,
        handle_max: 10.into(),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

fn transfer(handle: u32, id: u32) -> Transfer {
    Transfer {
        handle: handle.into(),
        delivery_id: Some(id),
        delivery_tag: Some(Binary::from(vec![id as u8])),
        message_format: Some(0),
        settled: Some(false),
        more: false,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    }
}

/// The broker still serves normal clients.
async fn still_serves(broker: &mut Broker) {
    assert!(broker.is_running(), "the broker died: {}", broker.log());
    let mut connection = fe2o3_amqp::Connection::open("after", broker.url().as_str())
        .await
        .expect("connect");
    let mut session = fe2o3_amqp::Session::begin(&mut connection).await.unwrap();
    let mut sender = Sender::attach(&mut session, "s", "after").await.unwrap();
    sender.send("still here").await.unwrap();
    let mut receiver = Receiver::attach(&mut session, "r", "after").await.unwrap();
    let d = timeout(DEADLINE, receiver.recv::<String>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.body(), "still here");
    receiver.accept(&d).await.unwrap();
    connection.close().await.unwrap();
    assert!(!broker.log().contains("panicked"), "{}", broker.log());
}

#[tokio::test]
async fn garbage_bytes_get_our_header_and_a_close() {
    let mut broker = Broker::start();
    let mut raw = Raw::connect(&broker).await;
    raw.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let got = raw.until_closed().await;
    assert_eq!(&got[..], b"AMQP\x03\x01\x00\x00");
    still_serves(&mut broker).await;
}

#[tokio::test]
async fn wrong_protocol_version_gets_our_header_and_a_close() {
    let mut broker = Broker::start();
    let mut raw = Raw::connect(&broker).await;
    raw.write(b"AMQP\x00\x00\x09\x01").await;
    assert_eq!(&raw.until_closed().await[..], b"AMQP\x03\x01\x00\x00");
    // TLS is not offered on this listener yet.
    let mut raw = Raw::connect(&broker).await;
    raw.write(b"AMQP\x02\x01\x00\x00").await;
    assert_eq!(&raw.until_closed().await[..], b"AMQP\x03\x01\x00\x00");
    still_serves(&mut broker).await;
}

#[tokio::test]
async fn frame_size_field_below_eight_closes_with_framing_error() {
    let mut broker = Broker::start();
    for size in 4u32..8 {
        let mut raw = Raw::open(&broker).await;
        let mut bytes = BytesMut::new();
        bytes.put_u32(size);
        bytes.put_slice(&[2, 0, 0, 0, 0, 0, 0, 0]);
        raw.write(&bytes).await;
        assert_eq!(
            raw.error().await,
            Some(ErrorCondition::ConnectionError(
                ConnectionError::FramingError
            ))
        );
    }
    still_serves(&mut broker).await;
}

#[tokio::test]
async fn frame_over_max_frame_size_closes_with_framing_error() {
    let mut broker = Broker::start();
    let mut raw = Raw::open(&broker).await;
    let mut bytes = BytesMut::new();
    bytes.put_u32(64 << 20);
    bytes.put_slice(&[2, 0, 0, 0]);
    raw.write(&bytes).await;
    assert_eq!(
        raw.error().await,
        Some(ErrorCondition::ConnectionError(
            ConnectionError::FramingError
        ))
    );
    still_serves(&mut broker).await;
}

#[tokio::test]
async fn undecodable_performative_closes_with_decode_error() {
    let mut broker = Broker::start();
    let mut raw = Raw::open(&broker).await;
    raw.write(&[0, 0, 0, 14, 2, 0, 0, 0, 0x00, 0x53, 0x10, 0xc0, 0xff, 0x05])
        .await;
    assert_eq!(
        raw.error().await,
        Some(ErrorCondition::AmqpError(AmqpError::DecodeError))
    );
    still_serves(&mut broker).await;
}

#[tokio::test]
async fn transfer_on_unknown_handle_ends_the_session() {
    let mut broker = Broker::start();
    let mut raw = Raw::open(&broker).await;
    raw.frame(0, &begin()).await;
    assert!(matches!(
        raw.next().await.unwrap().body,
        FrameBody::Begin(_)
    ));
    raw.frame_with_payload(0, &transfer(7, 0), b"\x00\x53\x77\x40")
        .await;
    assert_eq!(
        raw.error().await,
        Some(ErrorCondition::SessionError(SessionError::UnattachedHandle))
    );
    still_serves(&mut broker).await;
}

#[tokio::test]
async fn malformed_message_is_rejected_and_the_link_carries_on() {
    let mut broker = Broker::start();
    let mut raw = Raw::open(&broker).await;
    raw.frame(0, &begin()).await;
    raw.next().await.unwrap();
    let attach = Attach {
        name: "p".into(),
        handle: 0.into(),
        role: Role::Sender,
        snd_settle_mode: Default::default(),
        rcv_settle_mode: Default::default(),
        source: Some(Box::new(Source::builder().build())),
        target: Some(Box::new(
            Target::builder().address("malformed").build().into(),
        )),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: Some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    raw.frame(0, &attach).await;
    raw.next().await.unwrap(); // attach
    raw.next().await.unwrap(); // credit
    raw.frame_with_payload(0, &transfer(0, 0), b"\x00\x53\x75\xb0\xff\xff\xff\xff")
        .await;
    raw.frame_with_payload(0, &transfer(0, 1), b"\x00\x53\x77\xa1\x02ok")
        .await;
    let mut states = Vec::new();
    while states.len() < 2 {
        if let FrameBody::Disposition(d) = raw.next().await.expect("dispositions").body {
            for id in d.first..=d.last.unwrap_or(d.first) {
                states.push((id, d.state.clone()));
            }
        }
    }
    states.sort_by_key(|(id, _)| *id);
    match &states[0].1 {
        Some(DeliveryState::Rejected(r)) => assert_eq!(
            r.error.as_ref().unwrap().condition,
            ErrorCondition::AmqpError(AmqpError::DecodeError)
        ),
        other => panic!("expected rejected, got {other:?}"),
    }
    assert!(matches!(states[1].1, Some(DeliveryState::Accepted(_))));
    still_serves(&mut broker).await;
}

#[tokio::test]
async fn silence_during_the_handshake_is_bounded() {
    let mut broker = Broker::start_with(Some(&common::fixture("short-handshake.toml")));
    let mut raw = Raw::connect(&broker).await;
    raw.write(b"AMQ").await;
    // The broker gives up on the half header and closes the socket.
    raw.until_closed().await;
    // Same for a client that sends its header but never opens.
    let mut raw = Raw::connect(&broker).await;
    raw.write(b"AMQP\x00\x01\x00\x00").await;
    assert_eq!(&raw.until_closed().await[..], b"AMQP\x00\x01\x00\x00");
    still_serves(&mut broker).await;
}
