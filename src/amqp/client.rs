//! The client role: a lean AMQP connection for Ordo's own tools (`ordo
//! send`, `ordo receive`, `ordo bench`), and the accepting side of a
//! peer-to-peer benchmark. One connection, one session (channel 0), the
//! links the tool attaches. It shares the frame code with the broker and
//! decodes nothing of a message but what the tool asks for.

use std::time::Duration;

use bytes::BytesMut;
use fe2o3_amqp::frames::amqp::{Frame, FrameBody};
use fe2o3_amqp::frames::sasl::Frame as SaslFrame;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Source, Target};
use fe2o3_amqp::types::performatives::{
    Attach, Begin, ChannelMax, Close, Flow, MaxFrameSize, Open,
};
use fe2o3_amqp::types::primitives::{Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connection::Output;
use super::frame::{self, FrameError};
use super::handshake::{AMQP_HEADER, SASL_HEADER};

/// What went wrong on a client connection.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent a frame we cannot read.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer did something out of turn.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The peer refused (SASL, attach) or closed with an error.
    #[error("refused: {0}")]
    Refused(String),
}

/// How to reach the peer.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port`.
    pub addr: String,
    /// SASL PLAIN user and password; None connects without SASL.
    pub credentials: Option<(String, String)>,
    /// Our container-id.
    pub container_id: String,
    /// Largest frame we accept.
    pub max_frame_size: u32,
}

impl ClientConfig {
    /// From an `amqp://[user:password@]host:port` URL.
    pub fn from_url(url: &str) -> Result<Self, ClientError> {
        let rest = url.strip_prefix("amqp://").unwrap_or(url);
        let (credentials, addr) = match rest.rsplit_once('@') {
            Some((userinfo, addr)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_string(), password.to_string())), addr)
            }
            None => (None, rest),
        };
        let addr = addr.trim_end_matches('/');
        if addr.is_empty() {
            return Err(ClientError::Protocol(format!("no host in '{url}'")));
        }
        let addr = if addr.contains(':') {
            addr.to_string()
        } else {
            format!("{addr}:5672")
        };
        Ok(Self {
            addr,
            credentials,
            container_id: format!("ordo-tool-{}", uuid::Uuid::new_v4()),
            max_frame_size: 1 << 20,
        })
    }
}

/// An open connection with one session.
pub struct ClientConn {
    /// The socket.
    stream: TcpStream,
    /// Bytes read and not yet framed.
    input: BytesMut,
    /// Frames to send.
    pub out: Output,
    /// Our largest frame.
    max_frame: u32,
    /// Transfers we may still send before the peer widens its window.
    pub remote_incoming_window: u32,
    /// Id of our next transfer frame.
    pub next_outgoing_id: u32,
    /// Id of the next transfer we expect.
    pub next_incoming_id: u32,
}

/// The incoming window we grant: effectively unlimited, a tool reads all it gets.
const CLIENT_WINDOW: u32 = i32::MAX as u32;

impl ClientConn {
    /// Connects, authenticates, opens and begins a session.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let mut stream = TcpStream::connect(&config.addr).await?;
        stream.set_nodelay(true)?;
        let mut input = BytesMut::with_capacity(64 * 1024);
        if let Some((user, password)) = &config.credentials {
            stream.write_all(&SASL_HEADER).await?;
            read_header(&mut stream, &mut input, SASL_HEADER).await?;
            let mut response = vec![0u8];
            response.extend_from_slice(user.as_bytes());
            response.push(0);
            response.extend_from_slice(password.as_bytes());
            let init = SaslInit {
                mechanism: Symbol::from("PLAIN"),
                initial_response: Some(Binary::from(response)),
                hostname: None,
            };
            let mut out = BytesMut::new();
            frame::write_frame(&mut out, true, 0, &SaslFrame::Init(init), &[]);
            stream.write_all(&out).await?;
            loop {
                match read_sasl(&mut stream, &mut input).await? {
                    SaslFrame::Mechanisms(_) => {}
                    SaslFrame::Outcome(o) if o.code == SaslCode::Ok => break,
                    SaslFrame::Outcome(o) => {
                        return Err(ClientError::Refused(format!("SASL outcome {:?}", o.code)))
                    }
                    other => {
                        return Err(ClientError::Protocol(format!(
                            "unexpected SASL frame {other:?}"
                        )))
                    }
                }
            }
        }
        stream.write_all(&AMQP_HEADER).await?;
        read_header(&mut stream, &mut input, AMQP_HEADER).await?;
        let mut conn = Self::new(stream, input, config.max_frame_size);
        conn.out
            .frame(0, &open(&config.container_id, config.max_frame_size));
        conn.out.frame(0, &begin(None));
        conn.flush().await?;
        match conn.next_frame().await?.body {
            FrameBody::Open(o) => {
                conn.out.max_frame = o.max_frame_size.0.clamp(512, config.max_frame_size)
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected open, got {other:?}"
                )))
            }
        }
        match conn.next_frame().await?.body {
            FrameBody::Begin(b) => {
                conn.remote_incoming_window = b.incoming_window;
                conn.next_incoming_id = b.next_outgoing_id;
            }
            FrameBody::Close(c) => return Err(ClientError::Refused(format!("{:?}", c.error))),
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected begin, got {other:?}"
                )))
            }
        }
        Ok(conn)
    }

    /// The accepting side: answers a client's header (no SASL, or SASL
    /// ANONYMOUS), Open and Begin. For the peer-to-peer benchmark.
    pub async fn accept(mut stream: TcpStream, container_id: &str) -> Result<Self, ClientError> {
        stream.set_nodelay(true)?;
        let mut input = BytesMut::with_capacity(64 * 1024);
        let mut header = [0u8; 8];
        while input.len() < 8 {
            if stream.read_buf(&mut input).await? == 0 {
                return Err(ClientError::Protocol("closed before the header".into()));
            }
        }
        header.copy_from_slice(&input.split_to(8));
        if header == SASL_HEADER {
            use fe2o3_amqp::types::sasl::{SaslMechanisms, SaslOutcome};
            stream.write_all(&SASL_HEADER).await?;
            let mut out = BytesMut::new();
            let mechanisms = SaslMechanisms {
                sasl_server_mechanisms: fe2o3_amqp::types::primitives::Array(vec![Symbol::from(
                    "ANONYMOUS",
                )]),
            };
            frame::write_frame(&mut out, true, 0, &SaslFrame::Mechanisms(mechanisms), &[]);
            stream.write_all(&out).await?;
            read_sasl(&mut stream, &mut input).await?;
            out.clear();
            let outcome = SaslOutcome {
                code: SaslCode::Ok,
                additional_data: None,
            };
            frame::write_frame(&mut out, true, 0, &SaslFrame::Outcome(outcome), &[]);
            stream.write_all(&out).await?;
            read_header(&mut stream, &mut input, AMQP_HEADER).await?;
        } else if header != AMQP_HEADER {
            return Err(ClientError::Protocol(format!("bad header {header:?}")));
        }
        stream.write_all(&AMQP_HEADER).await?;
        let mut conn = Self::new(stream, input, 1 << 20);
        match conn.next_frame().await?.body {
            FrameBody::Open(o) => conn.out.max_frame = o.max_frame_size.0.clamp(512, 1 << 20),
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected open, got {other:?}"
                )))
            }
        }
        match conn.next_frame().await?.body {
            FrameBody::Begin(b) => {
                conn.remote_incoming_window = b.incoming_window;
                conn.next_incoming_id = b.next_outgoing_id;
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected begin, got {other:?}"
                )))
            }
        }
        conn.out.frame(0, &open(container_id, 1 << 20));
        conn.out.frame(0, &begin(Some(0)));
        conn.flush().await?;
        Ok(conn)
    }

    /// A connection after the handshake.
    fn new(stream: TcpStream, input: BytesMut, max_frame: u32) -> Self {
        Self {
            stream,
            input,
            out: Output {
                buf: BytesMut::with_capacity(256 * 1024),
                max_frame: 512,
            },
            max_frame,
            remote_incoming_window: 0,
            next_outgoing_id: 0,
            next_incoming_id: 0,
        }
    }

    /// Attaches a link (handle 0 for the first, and so on) and waits for the
    /// peer's attach. Returns the peer's attach.
    pub async fn attach(
        &mut self,
        handle: u32,
        name: &str,
        role: Role,
        address: Option<&str>,
        presettled: bool,
    ) -> Result<Attach, ClientError> {
        self.attach_link(Self::link_attach(handle, name, role, address, presettled))
            .await
    }

    /// The attach [`Self::attach`] sends, for a caller to add to (filters,
    /// properties) before [`Self::attach_link`].
    pub fn link_attach(
        handle: u32,
        name: &str,
        role: Role,
        address: Option<&str>,
        presettled: bool,
    ) -> Attach {
        Attach {
            name: name.to_string(),
            handle: handle.into(),
            role: role.clone(),
            snd_settle_mode: if presettled {
                SenderSettleMode::Settled
            } else {
                SenderSettleMode::Unsettled
            },
            rcv_settle_mode: ReceiverSettleMode::First,
            source: Some(Box::new(match (&role, address) {
                (Role::Receiver, Some(a)) => Source::builder().address(a).build(),
                _ => Source::builder().build(),
            })),
            target: Some(Box::new(
                match (&role, address) {
                    (Role::Sender, Some(a)) => Target::builder().address(a).build(),
                    _ => Target::builder().build(),
                }
                .into(),
            )),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: (role == Role::Sender).then_some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        }
    }

    /// Sends an attach the caller built (settle modes, properties, filters)
    /// and waits for the peer's. Returns the peer's attach; a refusal (null
    /// source or target, then a detach) is [`ClientError::Refused`].
    pub async fn attach_link(&mut self, attach: Attach) -> Result<Attach, ClientError> {
        let role = attach.role.clone();
        self.out.frame(0, &attach);
        self.flush().await?;
        loop {
            match self.next_frame().await?.body {
                FrameBody::Attach(a) => {
                    let refused = match role {
                        Role::Sender => a.target.is_none(),
                        Role::Receiver => a.source.is_none(),
                    };
                    if refused {
                        let error = match self.next_frame().await?.body {
                            FrameBody::Detach(d) => format!("{:?}", d.error),
                            other => format!("{other:?}"),
                        };
                        return Err(ClientError::Refused(error));
                    }
                    return Ok(a);
                }
                FrameBody::Flow(_) | FrameBody::Empty => {}
                FrameBody::Close(c) => return Err(ClientError::Refused(format!("{:?}", c.error))),
                other => {
                    return Err(ClientError::Protocol(format!(
                        "expected attach, got {other:?}"
                    )))
                }
            }
        }
    }

    /// A flow for `handle` with our session state.
    pub fn flow(&self, handle: u32, delivery_count: u32, credit: u32) -> Flow {
        Flow {
            next_incoming_id: Some(self.next_incoming_id),
            incoming_window: CLIENT_WINDOW,
            next_outgoing_id: self.next_outgoing_id,
            outgoing_window: CLIENT_WINDOW,
            handle: Some(handle.into()),
            delivery_count: Some(delivery_count),
            link_credit: Some(credit),
            available: None,
            drain: false,
            echo: false,
            properties: None,
        }
    }

    /// Updates the session window from the peer's flow.
    pub fn on_flow(&mut self, flow: &Flow) {
        let next_incoming = flow.next_incoming_id.unwrap_or(0);
        self.remote_incoming_window = crate::core::serial::remaining(
            flow.incoming_window,
            next_incoming,
            self.next_outgoing_id,
        );
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        if !self.out.buf.is_empty() {
            self.stream.write_all(&self.out.buf).await?;
            self.out.buf.clear();
        }
        Ok(())
    }

    /// The next frame already read, if any (no waiting).
    pub fn try_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        Ok(frame::next_amqp(&mut self.input, self.max_frame)?)
    }

    /// The next frame, reading as needed.
    pub async fn next_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(f);
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                return Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// The next frame, or None after `wait`. A zero wait reads only what
    /// the socket already holds (a zero timer would round up to a tick).
    pub async fn next_frame_within(
        &mut self,
        wait: Duration,
    ) -> Result<Option<Frame>, ClientError> {
        if wait.is_zero() {
            if let Some(f) = self.try_frame()? {
                return Ok(Some(f));
            }
            return match self.stream.try_read_buf(&mut self.input) {
                Ok(0) => Err(ClientError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => self.try_frame(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e.into()),
            };
        }
        match tokio::time::timeout(wait, self.next_frame()).await {
            Ok(f) => f.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) -> Result<(), ClientError> {
        self.out.frame(0, &Close { error: None });
        self.flush().await?;
        let _ = self.next_frame_within(Duration::from_secs(2)).await;
        Ok(())
    }
}

/// Our Open.
fn open(container_id: &str, max_frame_size: u32) -> Open {
    Open {
        container_id: container_id.to_string(),
        hostname: None,
        max_frame_size: MaxFrameSize(max_frame_size),
        channel_max: ChannelMax(0),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// Our Begin.
fn begin(remote_channel: Option<u16>) -> Begin {
    Begin {
        remote_channel,
        next_outgoing_id: 0,
        incoming_window: CLIENT_WINDOW,
        outgoing_window: CLIENT_WINDOW,
        handle_max: 15.into(),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    }
}

/// Reads the peer's protocol header; it must be `expected`.
async fn read_header(
    stream: &mut TcpStream,
    input: &mut BytesMut,
    expected: [u8; 8],
) -> Result<(), ClientError> {
    while input.len() < 8 {
        if stream.read_buf(input).await? == 0 {
            return Err(ClientError::Protocol(
                "closed during the protocol header".into(),
            ));
        }
    }
    let got = input.split_to(8);
    if got[..] != expected {
        return Err(ClientError::Protocol(format!(
            "peer answered header {:?}",
            &got[..]
        )));
    }
    Ok(())
}

/// Reads one SASL frame.
async fn read_sasl(stream: &mut TcpStream, input: &mut BytesMut) -> Result<SaslFrame, ClientError> {
    loop {
        if let Some(f) = frame::next_sasl(input, 64 * 1024)? {
            return Ok(f);
        }
        if stream.read_buf(input).await? == 0 {
            return Err(ClientError::Protocol("closed during SASL".into()));
        }
    }
}
