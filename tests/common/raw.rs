//! A consumer on Ordo's own client connection, for tests that must see
//! what high-level clients hide: the broker's attach (its properties and
//! source filter), its flows (the `active` property), settlement by the
//! broker, and an abrupt loss of the connection.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp::types::definitions::{Fields, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::message::__private::Deserializable;
use fe2o3_amqp::types::messaging::{
    Accepted, Body, DeliveryState, FilterSet, Message, Modified, Released, Source, Target,
};
use fe2o3_amqp::types::performatives::{Attach, Disposition, Flow};
use fe2o3_amqp::types::primitives::Value;
use ordo::amqp::client::{ClientConfig, ClientConn, ClientError};

use super::DEADLINE;

/// A message the consumer received.
#[derive(Debug)]
pub struct Received {
    /// Its delivery id on the session.
    pub delivery_id: u32,
    /// The message, decoded.
    pub message: Message<Body<Value>>,
}

impl Received {
    /// The body as a string (an amqp-value string, or UTF-8 data).
    pub fn text(&self) -> String {
        match &self.message.body {
            Body::Value(v) => match &v.0 {
                Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            },
            Body::Data(batch) => batch
                .iter()
                .map(|d| String::from_utf8_lossy(&d.0).into_owned())
                .collect(),
            other => format!("{other:?}"),
        }
    }

    /// The header's delivery count (0 without a header).
    pub fn delivery_count(&self) -> u32 {
        self.message.header.as_ref().map_or(0, |h| h.delivery_count)
    }

    /// A message annotation, if present.
    pub fn annotation(&self, key: &str) -> Option<Value> {
        let annotations = self.message.message_annotations.as_ref()?;
        annotations
            .0
            .iter()
            .find(|(k, _)| format!("{k:?}").contains(key))
            .map(|(_, v)| v.clone())
    }
}

/// One consumer link on its own connection.
pub struct RawConsumer {
    /// The connection.
    conn: ClientConn,
    /// The broker's attach.
    pub attach: Attach,
    /// Every flow the broker sent on the link, oldest first.
    pub flows: Vec<Flow>,
    /// Our link delivery count.
    delivery_count: u32,
    /// A multi-frame delivery being assembled.
    partial: Option<(u32, BytesMut)>,
    /// Dispositions the broker sent for our deliveries (settled ids).
    pub settled: Vec<u32>,
    /// The state of each of the broker's settlements, by delivery id.
    pub settlements: Vec<(u32, Option<DeliveryState>)>,
}

/// How to attach.
#[derive(Default, Clone)]
pub struct AttachOptions {
    /// Link properties.
    pub properties: Option<Fields>,
    /// Source filters.
    pub filter: Option<FilterSet>,
    /// rcv-settle-mode second.
    pub settle_second: bool,
    /// Source capabilities (`topic`, `shared`, `global`).
    pub capabilities: Vec<&'static str>,
    /// A durable source (unsettled-state, expiry-policy never): a durable
    /// subscription on a topic.
    pub durable: bool,
    /// The connection's container-id (default: the link name).
    pub container: Option<String>,
}

impl RawConsumer {
    /// Connects and attaches a consumer to `address`.
    pub async fn attach(
        url: &str,
        name: &str,
        address: &str,
        options: AttachOptions,
    ) -> Result<Self, ClientError> {
        let mut config = ClientConfig::from_url(url)?;
        config.container_id = options
            .container
            .clone()
            .unwrap_or_else(|| name.to_string());
        let mut conn = ClientConn::connect(&config).await?;
        let mut source = Source::builder().address(address).build();
        source.filter = options.filter;
        if !options.capabilities.is_empty() {
            source.capabilities = Some(
                options
                    .capabilities
                    .iter()
                    .map(|c| fe2o3_amqp::types::primitives::Symbol::from(*c))
                    .collect::<Vec<_>>()
                    .into(),
            );
        }
        if options.durable {
            source.durable = fe2o3_amqp::types::messaging::TerminusDurability::UnsettledState;
            source.expiry_policy = fe2o3_amqp::types::messaging::TerminusExpiryPolicy::Never;
        }
        let attach = Attach {
            name: name.to_string(),
            handle: 0.into(),
            role: Role::Receiver,
            snd_settle_mode: SenderSettleMode::Unsettled,
            rcv_settle_mode: if options.settle_second {
                ReceiverSettleMode::Second
            } else {
                ReceiverSettleMode::First
            },
            source: Some(Box::new(source)),
            target: Some(Box::new(Target::builder().build().into())),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: None,
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: options.properties,
        };
        let reply = conn.attach_link(attach).await?;
        Ok(Self {
            conn,
            attach: reply,
            flows: Vec::new(),
            delivery_count: 0,
            partial: None,
            settled: Vec::new(),
            settlements: Vec::new(),
        })
    }

    /// Grants `credit` (from our current delivery count).
    pub async fn credit(&mut self, credit: u32) {
        let flow = self.conn.flow(0, self.delivery_count, credit);
        self.conn.out.frame(0, &flow);
        self.conn.flush().await.expect("flow sent");
    }

    /// Asks the broker to use up `credit` now (drain).
    pub async fn drain(&mut self, credit: u32) {
        let flow = Flow {
            drain: true,
            ..self.conn.flow(0, self.delivery_count, credit)
        };
        self.conn.out.frame(0, &flow);
        self.conn.flush().await.expect("flow sent");
    }

    /// The next message, or None if none comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = match tokio::time::timeout(left, self.conn.next_frame()).await {
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) => panic!("connection failed: {e}"),
                Err(_) => return None,
            };
            if let Some(r) = self.on_frame(frame.body) {
                return Some(r);
            }
        }
    }

    /// The next message (the test fails if none comes in time).
    pub async fn next(&mut self) -> Received {
        self.next_within(DEADLINE).await.expect("a message in time")
    }

    /// Reads frames until a flow satisfying `pred` arrived (or was seen).
    pub async fn wait_flow(&mut self, pred: impl Fn(&Flow) -> bool) -> Flow {
        self.read_until("a flow", |c| c.flows.iter().find(|f| pred(f)).cloned())
            .await
    }

    /// Reads frames (no message may come meanwhile) until `found` finds
    /// what the test waits for in what was read; the test fails if `what`
    /// does not come in time.
    async fn read_until<T>(&mut self, what: &str, found: impl Fn(&Self) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(t) = found(self) {
                return t;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = tokio::time::timeout(left, self.conn.next_frame())
                .await
                .unwrap_or_else(|_| panic!("{what} in time"))
                .expect("connection alive");
            if let Some(r) = self.on_frame(frame.body) {
                panic!("unexpected message while waiting for {what}: {}", r.text());
            }
        }
    }

    /// Whether the broker's last flow said this consumer is active.
    pub fn active(&self) -> Option<bool> {
        self.flows.iter().rev().find_map(flow_active)
    }

    /// Handles one frame; returns a completed message.
    fn on_frame(&mut self, body: FrameBody) -> Option<Received> {
        match body {
            FrameBody::Transfer {
                performative,
                payload,
            } => {
                self.conn.next_incoming_id = self.conn.next_incoming_id.wrapping_add(1);
                let (id, whole) = match (self.partial.take(), performative.more) {
                    (None, false) => (performative.delivery_id?, payload),
                    (None, true) => {
                        let id = performative.delivery_id?;
                        self.partial = Some((id, BytesMut::from(&payload[..])));
                        return None;
                    }
                    (Some((id, mut p)), more) => {
                        p.extend_from_slice(&payload);
                        if more {
                            self.partial = Some((id, p));
                            return None;
                        }
                        (id, p.freeze())
                    }
                };
                self.delivery_count = self.delivery_count.wrapping_add(1);
                Some(Received {
                    delivery_id: id,
                    message: decode(&whole),
                })
            }
            FrameBody::Flow(f) => {
                self.conn.on_flow(&f);
                if f.handle.is_some() {
                    if let Some(dc) = f.delivery_count {
                        if f.drain {
                            self.delivery_count = dc;
                        }
                    }
                    self.flows.push(f);
                }
                None
            }
            FrameBody::Disposition(d) if d.role == Role::Sender && d.settled => {
                let last = d.last.unwrap_or(d.first);
                let mut id = d.first;
                loop {
                    self.settled.push(id);
                    self.settlements.push((id, d.state.clone()));
                    if id == last {
                        break;
                    }
                    id = id.wrapping_add(1);
                }
                None
            }
            FrameBody::Detach(d) => panic!("detached: {:?}", d.error),
            FrameBody::Close(c) => panic!("closed: {:?}", c.error),
            _ => None,
        }
    }

    /// Settles a delivery with an outcome.
    pub async fn settle(&mut self, delivery_id: u32, state: DeliveryState) {
        self.dispose(delivery_id, state, true).await;
    }

    /// Sends an outcome for a delivery, settled or leaving settlement to
    /// the broker.
    pub async fn dispose(&mut self, delivery_id: u32, state: DeliveryState, settled: bool) {
        let d = Disposition {
            role: Role::Receiver,
            first: delivery_id,
            last: None,
            settled,
            state: Some(state),
            batchable: false,
        };
        self.conn.out.frame(0, &d);
        self.conn.flush().await.expect("disposition sent");
    }

    /// The state the broker settled `delivery_id` with (reading frames
    /// until it did; the test fails if it does not in time).
    pub async fn settlement(&mut self, delivery_id: u32) -> Option<DeliveryState> {
        self.read_until("the settlement", |c| {
            c.settlements
                .iter()
                .find(|(id, _)| *id == delivery_id)
                .map(|(_, state)| state.clone())
        })
        .await
    }

    /// Accepts a delivery.
    pub async fn accept(&mut self, delivery_id: u32) {
        self.settle(delivery_id, DeliveryState::Accepted(Accepted {}))
            .await;
    }

    /// Releases a delivery.
    pub async fn release(&mut self, delivery_id: u32) {
        self.settle(delivery_id, DeliveryState::Released(Released {}))
            .await;
    }

    /// Modified with delivery-failed (and undeliverable-here if asked).
    pub async fn modify(&mut self, delivery_id: u32, undeliverable_here: bool) {
        let m = Modified {
            delivery_failed: Some(true),
            undeliverable_here: Some(undeliverable_here),
            message_annotations: None,
        };
        self.settle(delivery_id, DeliveryState::Modified(m)).await;
    }

    /// Detaches the link without closing it (a durable subscription stays),
    /// then closes the connection.
    pub async fn detach(mut self) {
        let detach = fe2o3_amqp::types::performatives::Detach {
            handle: 0.into(),
            closed: false,
            error: None,
        };
        self.conn.out.frame(0, &detach);
        self.conn.flush().await.expect("detach sent");
        let _ = self.conn.close().await;
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }

    /// Drops the socket without a word (a crashed client).
    pub fn kill(self) {
        drop(self.conn);
    }
}

/// The `active` property of a flow, if it has one.
pub fn flow_active(f: &Flow) -> Option<bool> {
    f.properties
        .as_ref()?
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("active", Value::Bool(b)) => Some(*b),
            _ => None,
        })
}

/// Decodes a message's bytes.
pub fn decode(bytes: &Bytes) -> Message<Body<Value>> {
    let d: Deserializable<Message<Body<Value>>> =
        serde_amqp::from_slice(bytes).expect("a message the broker sent");
    d.0
}
