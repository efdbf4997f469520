//! Producer and consumer links for Ordo's own tools, with a protocol-neutral
//! surface: bodies in, bodies out, counts. Built on [`ClientConn`]; used by
//! `ordo send`, `ordo receive` and `ordo bench`.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Accepted, DeliveryState};
use fe2o3_amqp::types::performatives::{Attach, Disposition, Transfer};
use fe2o3_amqp::types::primitives::Binary;

use super::client::{ClientConfig, ClientConn, ClientError};
use super::message;

/// A durable header section: `header { durable: true }`.
const DURABLE_HEADER: [u8; 7] = [0x00, 0x53, 0x70, 0xc0, 0x02, 0x01, 0x41];

/// Encodes a message: an optional durable header, properties with a
/// group-id when given (up to 200 bytes), application properties
/// `{"color": "red", "n": N}` when `tag` is `Some(N)` (for selectors), then
/// one data section.
pub fn encode_message(
    out: &mut Vec<u8>,
    body: &[u8],
    durable: bool,
    group: Option<&str>,
    tag: Option<i64>,
) {
    out.clear();
    if durable {
        out.extend_from_slice(&DURABLE_HEADER);
    }
    if let Some(group) = group.filter(|g| g.len() <= 200) {
        // properties: ten null fields, then group-id (field 10).
        out.extend_from_slice(&[0x00, 0x53, 0x73, 0xc0, (1 + 10 + 2 + group.len()) as u8, 11]);
        out.extend_from_slice(&[0x40; 10]);
        out.extend_from_slice(&[0xa1, group.len() as u8]);
        out.extend_from_slice(group.as_bytes());
    }
    if let Some(n) = tag {
        // application-properties: map8 of 4 items, 25 bytes.
        out.extend_from_slice(&[0x00, 0x53, 0x74, 0xc1, 25, 4]);
        out.extend_from_slice(b"\xa1\x05color\xa1\x03red\xa1\x01n\x81");
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&[0x00, 0x53, 0x75, 0xb0]);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// What a producer has been told so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerCounts {
    /// Messages sent.
    pub sent: u64,
    /// Messages the peer accepted.
    pub accepted: u64,
    /// Messages the peer refused (rejected, released, modified).
    pub refused: u64,
}

/// A producer link on its own connection.
pub struct ToolProducer {
    /// The connection.
    conn: ClientConn,
    /// Link credit left.
    credit: u32,
    /// Link delivery count.
    delivery_count: u32,
    /// Next delivery id.
    next_delivery_id: u32,
    /// Send pre-settled.
    presettled: bool,
    /// Counters.
    pub counts: ProducerCounts,
    /// Reused encoding buffer.
    scratch: Vec<u8>,
    /// Each message carries application properties `color` and `n` (its
    /// number), for consumers with selectors.
    pub tag: bool,
}

impl ToolProducer {
    /// Connects and attaches a producer to `address`.
    pub async fn open(
        config: &ClientConfig,
        address: &str,
        presettled: bool,
    ) -> Result<Self, ClientError> {
        let mut conn = ClientConn::connect(config).await?;
        conn.attach(0, "ordo-producer", Role::Sender, Some(address), presettled)
            .await?;
        Ok(Self {
            conn,
            credit: 0,
            delivery_count: 0,
            next_delivery_id: 0,
            presettled,
            counts: ProducerCounts::default(),
            scratch: Vec::with_capacity(2048),
            tag: false,
        })
    }

    /// Sent and not yet settled by the peer.
    pub fn in_flight(&self) -> u64 {
        if self.presettled {
            0
        } else {
            self.counts.sent - self.counts.accepted - self.counts.refused
        }
    }

    /// Queues one message if credit and window allow; false if blocked.
    pub fn try_send(&mut self, body: &[u8], durable: bool, group: Option<&str>) -> bool {
        if self.credit == 0 || self.conn.remote_incoming_window == 0 {
            return false;
        }
        let tag = self
            .tag
            .then(|| i64::try_from(self.counts.sent).unwrap_or(i64::MAX));
        encode_message(&mut self.scratch, body, durable, group, tag);
        let id = self.next_delivery_id;
        let transfer = Transfer {
            handle: 0.into(),
            delivery_id: Some(id),
            delivery_tag: Some(Binary::from(id.to_be_bytes().to_vec())),
            message_format: Some(0),
            settled: Some(self.presettled),
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        super::frame::write_frame(&mut self.conn.out.buf, false, 0, &transfer, &self.scratch);
        self.next_delivery_id = id.wrapping_add(1);
        self.credit -= 1;
        self.delivery_count = self.delivery_count.wrapping_add(1);
        self.conn.next_outgoing_id = self.conn.next_outgoing_id.wrapping_add(1);
        self.conn.remote_incoming_window -= 1;
        self.counts.sent += 1;
        true
    }

    /// Writes what was queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.conn.flush().await
    }

    /// Handles the peer's frames: waits up to `wait` for the first, then
    /// takes whatever else already arrived.
    pub async fn poll(&mut self, wait: Duration) -> Result<(), ClientError> {
        let Some(first) = self.conn.next_frame_within(wait).await? else {
            return Ok(());
        };
        let mut next = Some(first);
        while let Some(frame) = next {
            match frame.body {
                FrameBody::Flow(flow) => {
                    self.conn.on_flow(&flow);
                    if flow.handle.is_some() {
                        self.credit = crate::core::serial::remaining(
                            flow.link_credit.unwrap_or(0),
                            flow.delivery_count.unwrap_or(0),
                            self.delivery_count,
                        );
                    }
                }
                FrameBody::Disposition(d) if d.role == Role::Receiver && d.settled => {
                    let n = u64::from(d.last.unwrap_or(d.first).wrapping_sub(d.first)) + 1;
                    match d.state {
                        Some(DeliveryState::Accepted(_)) => self.counts.accepted += n,
                        _ => self.counts.refused += n,
                    }
                }
                FrameBody::Close(c) => {
                    return Err(ClientError::Refused(format!("closed: {:?}", c.error)))
                }
                FrameBody::Detach(d) => {
                    return Err(ClientError::Refused(format!("detached: {:?}", d.error)))
                }
                _ => {}
            }
            next = self.conn.try_frame()?;
        }
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(self) -> Result<(), ClientError> {
        self.conn.close().await
    }
}

/// A consumer link on its own connection (or the accepting side of a
/// peer-to-peer run).
pub struct ToolConsumer {
    /// The connection.
    conn: ClientConn,
    /// Our handle of the link.
    handle: u32,
    /// Credit to keep granted.
    window: u32,
    /// Credit left.
    credit: u32,
    /// Link delivery count.
    delivery_count: u32,
    /// Whether the deliveries come settled.
    presettled: bool,
    /// Delivery ids to accept at the next flush.
    to_accept: Vec<u32>,
    /// A multi-frame delivery being assembled.
    partial: Option<BytesMut>,
    /// The peer closed the connection cleanly.
    closed: bool,
}

impl ToolConsumer {
    /// Whether the peer closed the connection (a peer-to-peer producer
    /// that finished).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Connects and attaches a consumer to `address` with `credit`.
    pub async fn open(
        config: &ClientConfig,
        address: &str,
        credit: u32,
        presettled: bool,
    ) -> Result<Self, ClientError> {
        Self::open_selecting(config, address, credit, presettled, None).await
    }

    /// [`Self::open`] with a JMS selector (`apache.org:selector-filter:string`).
    pub async fn open_selecting(
        config: &ClientConfig,
        address: &str,
        credit: u32,
        presettled: bool,
        selector: Option<&str>,
    ) -> Result<Self, ClientError> {
        let mut conn = ClientConn::connect(config).await?;
        let mut attach = ClientConn::link_attach(
            0,
            "ordo-consumer",
            Role::Receiver,
            Some(address),
            presettled,
        );
        if let (Some(text), Some(source)) = (selector, attach.source.as_mut()) {
            let mut filters = fe2o3_amqp::types::messaging::FilterSet::new();
            filters.insert(
                fe2o3_amqp::types::primitives::Symbol::from("jms-selector"),
                fe2o3_amqp::types::primitives::Value::Described(Box::new(
                    serde_amqp::described::Described {
                        descriptor: serde_amqp::descriptor::Descriptor::Name(
                            fe2o3_amqp::types::primitives::Symbol::from(
                                "apache.org:selector-filter:string",
                            ),
                        ),
                        value: fe2o3_amqp::types::primitives::Value::String(text.to_string()),
                    },
                )),
            );
            source.filter = Some(filters);
        }
        conn.attach_link(attach).await?;
        Self::start(conn, 0, credit, presettled).await
    }

    /// Accepts a producer's connection directly (peer-to-peer: no broker).
    pub async fn accept_peer(
        stream: tokio::net::TcpStream,
        credit: u32,
    ) -> Result<Self, ClientError> {
        let mut conn = ClientConn::accept(stream, "ordo-bench-peer").await?;
        let attach = loop {
            match conn.next_frame().await?.body {
                FrameBody::Attach(a) => break a,
                FrameBody::Empty | FrameBody::Flow(_) => {}
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected attach, got {other:?}"
                    )))
                }
            }
        };
        let presettled = attach.snd_settle_mode == SenderSettleMode::Settled;
        let mut reply = super::link::reply_attach(&attach, 0);
        reply.rcv_settle_mode = ReceiverSettleMode::First;
        conn.out.frame(0, &reply);
        Self::start(conn, 0, credit, presettled).await
    }

    /// Grants the first credit.
    async fn start(
        mut conn: ClientConn,
        handle: u32,
        credit: u32,
        presettled: bool,
    ) -> Result<Self, ClientError> {
        let flow = conn.flow(handle, 0, credit);
        conn.out.frame(0, &flow);
        conn.flush().await?;
        Ok(Self {
            conn,
            handle,
            window: credit,
            credit,
            delivery_count: 0,
            presettled,
            to_accept: Vec::new(),
            partial: None,
            closed: false,
        })
    }

    /// Receives what arrives within `wait` (then whatever else is already
    /// buffered), calls `on_body` with each message's data-section body,
    /// accepts them (one disposition per run of ids) and tops up credit.
    /// Returns how many messages came.
    pub async fn recv_batch(
        &mut self,
        wait: Duration,
        mut on_body: impl FnMut(&[u8]),
    ) -> Result<usize, ClientError> {
        if self.closed {
            return Ok(0);
        }
        let Some(first) = self.conn.next_frame_within(wait).await? else {
            return Ok(0);
        };
        let mut count = 0;
        let mut next = Some(first);
        while let Some(frame) = next {
            match frame.body {
                FrameBody::Transfer {
                    performative,
                    payload,
                } => {
                    self.conn.next_incoming_id = self.conn.next_incoming_id.wrapping_add(1);
                    let whole: Bytes = match (self.partial.take(), performative.more) {
                        (None, false) => payload,
                        (None, true) => {
                            self.partial = Some(BytesMut::from(&payload[..]));
                            next = self.conn.try_frame()?;
                            continue;
                        }
                        (Some(mut p), more) => {
                            p.put_slice(&payload);
                            if more {
                                self.partial = Some(p);
                                next = self.conn.try_frame()?;
                                continue;
                            }
                            p.freeze()
                        }
                    };
                    on_body(message::data_body(&whole).unwrap_or(&[]));
                    count += 1;
                    self.credit = self.credit.saturating_sub(1);
                    self.delivery_count = self.delivery_count.wrapping_add(1);
                    if !self.presettled && performative.settled != Some(true) {
                        if let Some(id) = performative.delivery_id {
                            self.to_accept.push(id);
                        }
                    }
                }
                FrameBody::Flow(flow) => self.conn.on_flow(&flow),
                FrameBody::Close(c) if c.error.is_none() => {
                    self.conn
                        .out
                        .frame(0, &fe2o3_amqp::types::performatives::Close { error: None });
                    self.closed = true;
                    break;
                }
                FrameBody::Close(c) => {
                    return Err(ClientError::Refused(format!("closed: {:?}", c.error)))
                }
                FrameBody::Detach(d) => {
                    return Err(ClientError::Refused(format!("detached: {:?}", d.error)))
                }
                _ => {}
            }
            next = self.conn.try_frame()?;
        }
        self.settle_and_top_up();
        self.conn.flush().await?;
        Ok(count)
    }

    /// Keeps at most `window` credit granted from now on (a tool that wants
    /// exactly N messages lowers it as it goes).
    pub fn set_window(&mut self, window: u32) {
        self.window = window;
    }

    /// Accepts what was received (ranges) and grants credit back.
    fn settle_and_top_up(&mut self) {
        if !self.to_accept.is_empty() {
            let ids = std::mem::take(&mut self.to_accept);
            let mut start = ids[0];
            let mut end = start;
            for &id in &ids[1..] {
                if id == end.wrapping_add(1) {
                    end = id;
                } else {
                    self.accept_range(start, end);
                    start = id;
                    end = id;
                }
            }
            self.accept_range(start, end);
        }
        if self.credit <= self.window / 2 && self.window > 0 {
            self.credit = self.window;
            let flow = self
                .conn
                .flow(self.handle, self.delivery_count, self.credit);
            self.conn.out.frame(0, &flow);
        }
    }

    /// One accepted disposition for `first..=last`.
    fn accept_range(&mut self, first: u32, last: u32) {
        let d = Disposition {
            role: Role::Receiver,
            first,
            last: (last != first).then_some(last),
            settled: true,
            state: Some(DeliveryState::Accepted(Accepted {})),
            batchable: false,
        };
        self.conn.out.frame(0, &d);
    }

    /// Closes the connection (unless the peer already did).
    pub async fn close(mut self) -> Result<(), ClientError> {
        if self.closed {
            return self.conn.flush().await;
        }
        self.conn.close().await
    }
}

/// Creates `count` queues named `{prefix}{n}` by attaching a consumer link
/// to each and detaching it again, a thousand at a time on one connection.
pub async fn create_queues(
    config: &ClientConfig,
    prefix: &str,
    count: u64,
) -> Result<(), ClientError> {
    use fe2o3_amqp::types::messaging::{Source, Target};
    use fe2o3_amqp::types::performatives::Detach;
    let mut conn = ClientConn::connect(config).await?;
    let mut next = 0u64;
    while next < count {
        let batch = (count - next).min(1000) as u32;
        for handle in 0..batch {
            let address = format!("{prefix}{}", next + u64::from(handle));
            let attach = Attach {
                name: address.clone(),
                handle: handle.into(),
                role: Role::Receiver,
                snd_settle_mode: SenderSettleMode::Unsettled,
                rcv_settle_mode: ReceiverSettleMode::First,
                source: Some(Box::new(Source::builder().address(address).build())),
                target: Some(Box::new(Target::builder().build().into())),
                unsettled: None,
                incomplete_unsettled: false,
                initial_delivery_count: None,
                max_message_size: None,
                offered_capabilities: None,
                desired_capabilities: None,
                properties: None,
            };
            conn.out.frame(0, &attach);
        }
        conn.flush().await?;
        let mut attached = 0;
        while attached < batch {
            match conn.next_frame().await?.body {
                FrameBody::Attach(a) if a.source.is_some() => attached += 1,
                FrameBody::Attach(_) | FrameBody::Detach(_) => {
                    return Err(ClientError::Refused("queue creation refused".into()));
                }
                _ => {}
            }
        }
        for handle in 0..batch {
            let detach = Detach {
                handle: handle.into(),
                closed: true,
                error: None,
            };
            conn.out.frame(0, &detach);
        }
        conn.flush().await?;
        let mut detached = 0;
        while detached < batch {
            if let FrameBody::Detach(_) = conn.next_frame().await?.body {
                detached += 1;
            }
        }
        next += u64::from(batch);
    }
    conn.close().await
}

/// Opens `count` idle connections and keeps them until the returned value
/// is dropped.
pub async fn open_connections(
    config: &ClientConfig,
    count: u64,
) -> Result<Vec<ClientConn>, ClientError> {
    let mut conns = Vec::with_capacity(count as usize);
    for _ in 0..count {
        conns.push(ClientConn::connect(config).await?);
    }
    Ok(conns)
}
