//! One AMQP connection as a state machine: frames in, frames out.
//!
//! The connection owns its sessions, which own their links. It does no I/O:
//! [`Connection::handle_input`] consumes bytes read from the socket,
//! [`Connection::pump`] takes the deliveries queues left in the
//! connection's outbox, [`Connection::tick`] keeps time (heartbeats, idle
//! timeout), and everything to send accumulates in the output buffer the
//! I/O task writes out. This is what lets engine tests drive a connection
//! frame by frame with no socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fe2o3_amqp::frames::amqp::{Frame, FrameBody};
use fe2o3_amqp::types::definitions::Error as AmqpError;
use fe2o3_amqp::types::performatives::{ChannelMax, Close, MaxFrameSize, Open};
use fe2o3_amqp::types::primitives::{Array, OrderedMap, Symbol, Value};

use super::coordinator::Transactions;
use super::error::{self, cond};
use super::frame::{self, MIN_MAX_FRAME_SIZE};
use super::loads::Loads;
use super::management::ReplyQueues;
use super::session::{Ctx, Session};
use crate::core::access::Principal;
use crate::core::broker::MemoryLevel;
use crate::core::{Broker, ConsumerId, Outbox, OutboxItem};

/// How often a connection whose producers wait for memory looks again.
const STARVED_RECHECK: Duration = Duration::from_millis(100);
use crate::store::{Ticket, Wake};

/// Engine settings, from the configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Our container-id in Open.
    pub container_id: String,
    /// The largest frame we accept (announced in Open).
    pub max_frame_size: u32,
    /// The highest channel number the peer may use.
    pub channel_max: u16,
    /// We close a connection silent for this long (announced in Open);
    /// `None` disables.
    pub idle_timeout: Option<Duration>,
    /// Largest message we accept from a producer.
    pub max_message_size: u64,
    /// The highest link handle the peer may use in a session.
    pub handle_max: u32,
    /// Link credit we keep granted to each producer.
    pub producer_credit: u32,
    /// Transfer frames we let a peer send ahead on a session.
    pub session_window: u32,
    /// Unsettled deliveries one consumer link may hold (0: no limit).
    pub max_unsettled_per_link: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            container_id: "ordo".into(),
            max_frame_size: 1 << 20,
            channel_max: 255,
            idle_timeout: Some(Duration::from_secs(60)),
            max_message_size: 64 << 20,
            handle_max: 1023,
            producer_credit: 1000,
            session_window: 5000,
            max_unsettled_per_link: 10_000,
        }
    }
}

/// Frames to send, and the limits the peer set for them.
#[derive(Debug)]
pub struct Output {
    /// Encoded frames not yet written to the socket.
    pub buf: BytesMut,
    /// The largest frame the peer accepts.
    pub max_frame: u32,
}

impl Output {
    /// Appends a frame with no payload.
    pub fn frame<P: serde::Serialize>(&mut self, channel: u16, performative: &P) {
        frame::write_frame(&mut self.buf, false, channel, performative, &[]);
    }
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the peer's Open.
    AwaitingOpen,
    /// Open in both directions.
    Open,
    /// We sent Close; waiting for the peer's (or the socket's end).
    CloseSent,
    /// Both Closes exchanged, or the connection is dead: nothing more to do.
    Finished,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    /// Settings.
    config: Arc<EngineConfig>,
    /// The nodes.
    broker: Arc<Broker>,
    /// Where queues leave deliveries for this connection's consumers.
    outbox: Arc<Outbox>,
    /// Life-cycle state.
    state: State,
    /// Frames to send.
    out: Output,
    /// The peer's container-id, for logs.
    remote_container: String,
    /// The peer's idle timeout: we must send something within half of it.
    remote_idle_timeout: Option<Duration>,
    /// The peer's channel-max: our channels stay at or below it.
    remote_channel_max: u16,
    /// Sessions by our channel number.
    sessions: Vec<Option<Session>>,
    /// Our channel for each of the peer's channels.
    channels: HashMap<u16, u16>,
    /// Where each consumer of this connection lives: (our channel, our handle).
    consumers: HashMap<ConsumerId, (u16, u32)>,
    /// When we last sent a frame (heartbeats).
    last_sent: Instant,
    /// When we last received a frame (idle timeout).
    last_received: Instant,
    /// Reused buffer for outbox items.
    items: Vec<OutboxItem>,
    /// Reused buffer for the items that may be sent now.
    ready: Vec<OutboxItem>,
    /// Deliveries waiting for their paged-out bodies, and what waits
    /// behind them on the same link.
    loads: Loads,
    /// Highest journal ticket we asked to be woken for.
    wake_registered: Ticket,
    /// Transactions the peer declared and has not discharged.
    transactions: Transactions,
    /// This connection's id in the broker (no-local subscriptions).
    id: u64,
    /// Who the peer authenticated as (access rules).
    principal: Principal,
    /// Close with this error as soon as the peer has opened (a limit).
    refusal: Option<AmqpError>,
    /// A producer is waiting for credit withheld for lack of memory: look
    /// again soon.
    starved: bool,
    /// Sessions or links may have come or gone since [`Connection::topology`]
    /// last looked.
    topology_changed: bool,
    /// Messages received from the peer and delivered to it so far.
    traffic: (u64, u64),
    /// Reply queues of this connection's receivers on `$management`, by the
    /// reply address requests name.
    replies: ReplyQueues,
}

impl Connection {
    /// A connection that has exchanged protocol headers (and SASL).
    pub fn new(config: Arc<EngineConfig>, broker: Arc<Broker>, now: Instant) -> Self {
        let id = broker.new_connection_id();
        Self::with_id(config, broker, now, id)
    }

    /// A connection whose id the caller took from
    /// [`Broker::new_connection_id`].
    pub fn with_id(config: Arc<EngineConfig>, broker: Arc<Broker>, now: Instant, id: u64) -> Self {
        Self {
            config,
            broker,
            outbox: Outbox::new(),
            state: State::AwaitingOpen,
            out: Output {
                // Grows with what is sent; idle connections stay small.
                buf: BytesMut::with_capacity(4 * 1024),
                max_frame: MIN_MAX_FRAME_SIZE,
            },
            remote_container: String::new(),
            remote_idle_timeout: None,
            remote_channel_max: 0,
            sessions: Vec::new(),
            channels: HashMap::new(),
            consumers: HashMap::new(),
            last_sent: now,
            last_received: now,
            items: Vec::new(),
            ready: Vec::new(),
            loads: Loads::default(),
            wake_registered: 0,
            transactions: Transactions::default(),
            id,
            principal: Principal::anonymous(),
            refusal: None,
            starved: false,
            topology_changed: true,
            traffic: (0, 0),
            replies: ReplyQueues::default(),
        }
    }

    /// Answers the peer's Open with ours, then closes with `error`: the
    /// client learns why it cannot have this connection (a limit).
    pub fn refuse(&mut self, error: AmqpError) {
        self.refusal = Some(error);
    }

    /// Sets who the peer is (after SASL).
    pub fn set_principal(&mut self, principal: Principal) {
        self.principal = principal;
    }

    /// The outbox the I/O task waits on.
    pub fn outbox(&self) -> Arc<Outbox> {
        Arc::clone(&self.outbox)
    }

    /// Bytes waiting to be written.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out.buf
    }

    /// The peer's container-id, once known.
    pub fn remote_container(&self) -> &str {
        &self.remote_container
    }

    /// This connection's id in the broker.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Messages received from the peer (published or posted) and handed to
    /// its consumers so far.
    pub fn traffic(&self) -> (u64, u64) {
        self.traffic
    }

    /// Its sessions and links, if they may have changed since the last
    /// call (a begin, end, attach or detach came in).
    pub fn topology(&mut self) -> Option<(usize, usize)> {
        if !std::mem::take(&mut self.topology_changed) {
            return None;
        }
        let sessions = self.sessions.iter().flatten();
        Some(sessions.fold((0, 0), |(s, l), session| {
            (s + 1, l + session.links.iter().flatten().count())
        }))
    }

    /// Nothing more will happen on this connection: flush and close the socket.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// The peer has not sent its Open yet.
    pub fn awaiting_open(&self) -> bool {
        self.state == State::AwaitingOpen
    }

    /// We closed and wait for the peer's Close.
    pub fn is_closing(&self) -> bool {
        self.state == State::CloseSent
    }

    /// Consumes whole frames from `input`, leaving a partial one.
    pub fn handle_input(&mut self, input: &mut BytesMut, now: Instant) {
        let before = self.out.buf.len();
        while self.state != State::Finished {
            match frame::next_amqp(input, self.config.max_frame_size) {
                Ok(Some(frame)) => {
                    self.last_received = now;
                    self.handle_frame(frame);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "bad frame; closing connection");
                    self.close(Some(error::from_frame(&e)));
                    input.clear();
                    self.state = State::Finished;
                    break;
                }
            }
        }
        self.flush_sessions();
        self.pump(now);
        if self.out.buf.len() > before {
            self.last_sent = now;
        }
    }

    /// Handles one decoded frame.
    pub fn handle_frame(&mut self, frame: Frame) {
        let channel = frame.channel;
        if matches!(
            frame.body,
            FrameBody::Begin(_) | FrameBody::End(_) | FrameBody::Attach(_) | FrameBody::Detach(_)
        ) {
            self.topology_changed = true;
        }
        match (self.state, frame.body) {
            (State::Finished, _) => {}
            (_, FrameBody::Empty) => {}
            (State::AwaitingOpen, FrameBody::Open(open)) => self.on_open(open),
            (State::AwaitingOpen, _) => {
                self.close(Some(cond::illegal_state("the first frame must be open")));
            }
            (_, FrameBody::Open(_)) => {
                self.close(Some(cond::illegal_state("open received twice")));
            }
            (_, FrameBody::Close(close)) => self.on_close(close),
            (State::CloseSent, _) => {}
            (_, FrameBody::Begin(begin)) => {
                if begin.remote_channel.is_some() {
                    self.close(Some(cond::illegal_state(
                        "begin answers a session we never began",
                    )));
                    return;
                }
                self.on_begin(channel, begin);
            }
            (_, body) => self.on_session_frame(channel, body),
        }
    }

    /// The peer's Open: record its limits and answer with ours.
    fn on_open(&mut self, open: Open) {
        self.remote_container = open.container_id.clone();
        self.out.max_frame = open
            .max_frame_size
            .0
            .max(MIN_MAX_FRAME_SIZE)
            .min(self.config.max_frame_size.max(MIN_MAX_FRAME_SIZE));
        self.remote_channel_max = open.channel_max.0;
        self.remote_idle_timeout = open
            .idle_time_out
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms)));
        tracing::info!(
            container = %open.container_id,
            max_frame = self.out.max_frame,
            idle_timeout_ms = open.idle_time_out,
            "connection opened"
        );
        let mut properties = OrderedMap::new();
        properties.insert(Symbol::from("product"), Value::String("Ordo".into()));
        properties.insert(
            Symbol::from("version"),
            Value::String(env!("CARGO_PKG_VERSION").into()),
        );
        let reply = Open {
            container_id: self.config.container_id.clone(),
            hostname: None,
            max_frame_size: MaxFrameSize(self.config.max_frame_size),
            channel_max: ChannelMax(self.config.channel_max),
            // AMQP 2.4.5: announce half the threshold, so a peer that
            // heartbeats at the announced value is never cut off.
            idle_time_out: self
                .config
                .idle_timeout
                .map(|d| u32::try_from(d.as_millis() / 2).unwrap_or(u32::MAX).max(1)),
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: Some(Array(vec![
                Symbol::from("ANONYMOUS-RELAY"),
                Symbol::from("SHARED-SUBS"),
            ])),
            desired_capabilities: None,
            properties: Some(properties),
        };
        self.out.frame(0, &reply);
        self.state = State::Open;
        if let Some(e) = self.refusal.take() {
            self.close(Some(e));
        }
    }

    /// The peer's Close: end everything and answer.
    fn on_close(&mut self, close: Close) {
        if let Some(e) = &close.error {
            tracing::info!(error = ?e, "peer closed the connection with an error");
        } else {
            tracing::debug!("peer closed the connection");
        }
        if self.state != State::CloseSent {
            self.out.frame(0, &Close { error: None });
        }
        self.release_all();
        self.state = State::Finished;
    }

    /// Closes the connection with an optional error; links and sessions go
    /// with it (their unsettled deliveries return to their queues).
    pub fn close(&mut self, error: Option<AmqpError>) {
        if matches!(self.state, State::CloseSent | State::Finished) {
            return;
        }
        if let Some(e) = &error {
            tracing::info!(condition = ?e.condition, description = ?e.description, "closing connection");
        }
        if self.state == State::AwaitingOpen {
            // AMQP: an Open must precede a Close.
            self.on_open_for_close();
        }
        self.out.frame(0, &Close { error });
        self.release_all();
        self.state = State::CloseSent;
    }

    /// Sends our Open when we must close before the peer opened.
    fn on_open_for_close(&mut self) {
        let open = Open {
            container_id: self.config.container_id.clone(),
            hostname: None,
            max_frame_size: MaxFrameSize(self.config.max_frame_size),
            channel_max: ChannelMax(self.config.channel_max),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.out.frame(0, &open);
    }

    /// The socket is gone (or the connection is closing): give every
    /// consumer's unsettled deliveries back to its queue.
    pub fn release_all(&mut self) {
        for session in self.sessions.iter_mut().flatten() {
            session.release_all();
        }
        self.sessions.clear();
        self.channels.clear();
        self.consumers.clear();
        // Then open transactions roll back: what they held goes back too,
        // to consumers of other connections (this one's are gone).
        self.transactions.roll_back_all();
    }

    /// A new session from the peer.
    fn on_begin(&mut self, remote_channel: u16, begin: fe2o3_amqp::types::performatives::Begin) {
        if remote_channel > self.config.channel_max {
            self.close(Some(cond::framing(format!(
                "channel {remote_channel} exceeds channel-max {}",
                self.config.channel_max
            ))));
            return;
        }
        if self.channels.contains_key(&remote_channel) {
            self.close(Some(cond::framing(format!(
                "channel {remote_channel} is already in use"
            ))));
            return;
        }
        let limit = usize::from(self.remote_channel_max.min(self.config.channel_max));
        let local = match self.sessions.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.sessions.len() <= limit => {
                self.sessions.push(None);
                self.sessions.len() - 1
            }
            None => {
                self.close(Some(cond::resource_limit("no free channel")));
                return;
            }
        };
        // `local` ≤ channel_max (a u16), so the conversion holds.
        let local_channel = u16::try_from(local).unwrap_or(u16::MAX);
        let session = Session::begin(
            local_channel,
            remote_channel,
            &begin,
            &self.config,
            &mut self.out,
        );
        self.sessions[local] = Some(session);
        self.channels.insert(remote_channel, local_channel);
    }

    /// A frame for an existing session.
    fn on_session_frame(&mut self, remote_channel: u16, body: FrameBody) {
        let Some(&local) = self.channels.get(&remote_channel) else {
            self.close(Some(cond::framing(format!(
                "no session on channel {remote_channel}"
            ))));
            return;
        };
        let Some(session) = self
            .sessions
            .get_mut(usize::from(local))
            .and_then(Option::as_mut)
        else {
            return;
        };
        let mut ctx = Ctx {
            config: &self.config,
            broker: &self.broker,
            outbox: &self.outbox,
            out: &mut self.out,
            consumers: &mut self.consumers,
            container: &self.remote_container,
            txns: &mut self.transactions,
            connection: self.id,
            principal: &self.principal,
            replies: &mut self.replies,
            received: &mut self.traffic.0,
        };
        let ended = session.handle(body, &mut ctx);
        if ended {
            self.sessions[usize::from(local)] = None;
            self.channels.remove(&remote_channel);
        }
    }

    /// Sends what sessions batched while handling input (dispositions,
    /// credit top-ups).
    fn flush_sessions(&mut self) {
        let grant = (self.broker.memory_level() == MemoryLevel::Normal)
            .then(|| self.broker.producer_credit(self.config.producer_credit));
        let mut starved = false;
        for session in self.sessions.iter_mut().flatten() {
            starved |= session.flush(&self.config, &mut self.out, grant);
        }
        if starved && !self.starved {
            tracing::debug!(
                "producer credit withheld: the broker is at its memory high-water mark"
            );
        }
        self.starved = starved;
    }

    /// Takes the deliveries and flow updates queues left for this
    /// connection and turns them into frames (as far as session windows allow).
    pub fn pump(&mut self, now: Instant) {
        if self.state != State::Open {
            return;
        }
        let before = self.out.buf.len();
        let mut items = std::mem::take(&mut self.items);
        self.outbox.take_all(&mut items);
        let mut ready = std::mem::take(&mut self.ready);
        for item in items.drain(..) {
            self.loads
                .admit(item, self.broker.persistence(), &self.outbox, &mut ready);
        }
        self.items = items;
        for item in ready.drain(..) {
            let (consumer, delivery) = match &item {
                OutboxItem::Deliver(d) => (d.consumer, 1),
                OutboxItem::Flow(f) => (f.consumer, 0),
                OutboxItem::Loaded(l) => (l.consumer, 0),
            };
            let Some(&(channel, handle)) = self.consumers.get(&consumer) else {
                // The link is gone; its queue took back what it held.
                continue;
            };
            if let Some(session) = self
                .sessions
                .get_mut(usize::from(channel))
                .and_then(Option::as_mut)
            {
                session.enqueue_outgoing(handle, item);
                self.traffic.1 += delivery;
            }
        }
        self.ready = ready;
        self.settle_stored();
        for session in self.sessions.iter_mut().flatten() {
            session.emit(&mut self.out);
        }
        if self.out.buf.len() > before {
            self.last_sent = now;
        }
    }

    /// Sends the outcomes that waited for the store (producers' `accepted`,
    /// consumers' settlements) whose journal tickets are now durable, and
    /// asks the journal to wake us for the rest.
    fn settle_stored(&mut self) {
        let Some(p) = self.broker.persistence() else {
            return;
        };
        let journal = p.journal();
        let mut waiting: Ticket = 0;
        for session in self.sessions.iter_mut().flatten() {
            waiting = waiting.max(session.settle_stored(journal, &mut self.out));
        }
        if waiting > self.wake_registered {
            self.wake_registered = waiting;
            journal.wake_when(waiting, Arc::clone(&self.outbox) as Arc<dyn Wake>);
        }
    }

    /// Items held back while paged-out bodies are read.
    pub fn loads_pending(&self) -> usize {
        self.loads.len()
    }

    /// Keeps time: a heartbeat when we have been quiet for half the peer's
    /// idle timeout, and a close when the peer has been silent past ours.
    pub fn tick(&mut self, now: Instant) {
        if self.starved && self.state == State::Open {
            self.flush_sessions();
        }
        if self.state == State::Open {
            if let Some(limit) = self.config.idle_timeout {
                if now.duration_since(self.last_received) > limit {
                    self.close(Some(cond::resource_limit(format!(
                        "local-idle-timeout expired: nothing received for {} ms",
                        limit.as_millis()
                    ))));
                }
            }
        }
        if let Some(remote) = self.remote_idle_timeout {
            if self.state == State::Open && now.duration_since(self.last_sent) >= remote / 2 {
                frame::write_heartbeat(&mut self.out.buf);
                self.last_sent = now;
            }
        }
    }

    /// When `tick` next has something to do.
    pub fn next_tick(&self) -> Option<Instant> {
        let heartbeat = self.remote_idle_timeout.map(|d| self.last_sent + d / 2);
        let idle = self.config.idle_timeout.map(|d| self.last_received + d);
        let starved = self.starved.then(|| Instant::now() + STARVED_RECHECK);
        [heartbeat, idle, starved].into_iter().flatten().min()
    }
}

#[cfg(test)]
#[path = "engine_tests/mod.rs"]
mod engine_tests;
