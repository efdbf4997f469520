//! Before the connection opens: protocol headers and SASL.
//!
//! The server reads the client's header first and answers it. A plain AMQP
//! header is accepted only where anonymous access is allowed; otherwise the
//! client must go through SASL. A header we cannot speak is answered with
//! the header we prefer, then the socket is closed (AMQP 2.2).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use fe2o3_amqp::frames::sasl::Frame as SaslFrame;
use fe2o3_amqp::types::primitives::{Array, Binary, Symbol};
use fe2o3_amqp::types::sasl::{SaslChallenge, SaslCode, SaslMechanisms, SaslOutcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{self, FrameError};
use crate::limits::LoginLimiter;

/// The AMQP protocol header (protocol id 0).
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
/// The SASL protocol header (protocol id 3).
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// Largest SASL frame we read.
const SASL_MAX_FRAME: u32 = 64 * 1024;

/// Who checks credentials; implemented by `crate::auth::Authenticator`.
pub trait Credentials: Send + Sync {
    /// Whether clients may connect without credentials.
    fn allow_anonymous(&self) -> bool;
    /// Whether `password` is right for `username` (SASL PLAIN). Slow on
    /// purpose (key stretching): called off the async threads.
    fn check_plain(&self, username: &str, password: &str) -> bool;
    /// Answers a SCRAM-SHA-256 client-first message (None: refused).
    fn scram_start(&self, _client_first: &[u8]) -> Option<(crate::auth::ScramExchange, Vec<u8>)> {
        None
    }
    /// The groups of an authenticated user, for access rules.
    fn groups(&self, _user: &str) -> Vec<String> {
        Vec::new()
    }
}

/// Who the peer is once the handshake is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials (plain AMQP or SASL ANONYMOUS).
    Anonymous,
    /// Authenticated with SASL PLAIN, SCRAM-SHA-256 or EXTERNAL.
    User(String),
}

/// What the handshake knows about the peer besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// Its source address (login rate limiting).
    pub addr: std::net::IpAddr,
    /// The name its verified TLS client certificate carries (SASL EXTERNAL).
    pub certificate: Option<&'a str>,
    /// Failed logins per source address.
    pub limiter: Option<&'a LoginLimiter>,
}

impl Peer<'_> {
    /// A peer with no certificate and no login limit (tests, fuzzing).
    pub fn local() -> Peer<'static> {
        Peer {
            addr: std::net::IpAddr::from([127, 0, 0, 1]),
            certificate: None,
            limiter: None,
        }
    }
}

/// Why a handshake ended without a connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The first bytes are not an AMQP protocol header we speak.
    #[error("unsupported protocol header {0:02x?}")]
    BadHeader(Vec<u8>),
    /// Plain AMQP without SASL where anonymous access is off.
    #[error("SASL is required on this listener")]
    SaslRequired,
    /// The source address failed to log in too often lately.
    #[error("login refused: too many failed logins from this address")]
    RateLimited,
    /// Authentication failed.
    #[error("authentication failed (mechanism {mechanism}{})", user.as_deref().map(|u| format!(", user '{u}'")).unwrap_or_default())]
    AuthFailed {
        /// The mechanism tried.
        mechanism: String,
        /// The user name, if one was given.
        user: Option<String>,
    },
    /// A SASL frame could not be read, or came out of turn.
    #[error("SASL exchange failed: {0}")]
    Sasl(String),
    /// A frame-level error.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The socket failed or closed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the header and SASL exchange. Bytes read past the final header
/// stay in `buf` for the connection.
pub async fn handshake<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    credentials: Arc<dyn Credentials>,
    peer: Peer<'_>,
) -> Result<Identity, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let header = read_header(stream, buf).await?;
    match header {
        AMQP_HEADER if credentials.allow_anonymous() => {
            stream.write_all(&AMQP_HEADER).await?;
            Ok(Identity::Anonymous)
        }
        AMQP_HEADER => {
            stream.write_all(&SASL_HEADER).await?;
            Err(HandshakeError::SaslRequired)
        }
        SASL_HEADER => {
            stream.write_all(&SASL_HEADER).await?;
            let identity = sasl(stream, buf, credentials, peer).await?;
            let header = read_header(stream, buf).await?;
            if header != AMQP_HEADER {
                stream.write_all(&AMQP_HEADER).await?;
                return Err(HandshakeError::BadHeader(header.to_vec()));
            }
            stream.write_all(&AMQP_HEADER).await?;
            Ok(identity)
        }
        other => {
            // Tell the client what we speak, then close.
            stream.write_all(&SASL_HEADER).await?;
            Err(HandshakeError::BadHeader(other.to_vec()))
        }
    }
}

/// Reads the 8-byte protocol header.
async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<[u8; 8], HandshakeError> {
    while buf.len() < 8 {
        if !buf.is_empty() && !b"AMQP".starts_with(&buf[..buf.len().min(4)]) {
            // Not AMQP at all: no need to wait for 8 bytes.
            let mut h = [0u8; 8];
            h[..buf.len()].copy_from_slice(buf);
            return Ok(h);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
    let h = buf.split_to(8);
    let mut header = [0u8; 8];
    header.copy_from_slice(&h);
    Ok(header)
}

/// Reads the next whole SASL frame.
async fn read_sasl<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<SaslFrame, HandshakeError> {
    loop {
        if let Some(frame) = frame::next_sasl(buf, SASL_MAX_FRAME)? {
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Writes one SASL frame.
async fn write_sasl<S: AsyncWrite + Unpin>(
    stream: &mut S,
    frame: SaslFrame,
) -> Result<(), HandshakeError> {
    let mut out = BytesMut::new();
    frame::write_frame(&mut out, true, 0, &frame, &[]);
    stream.write_all(&out).await?;
    Ok(())
}

/// The SASL exchange: mechanisms, init (and a response for PLAIN without
/// an initial response, or SCRAM's challenge and response), outcome.
async fn sasl<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    credentials: Arc<dyn Credentials>,
    peer: Peer<'_>,
) -> Result<Identity, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut mechanisms = Vec::new();
    if peer.certificate.is_some() {
        mechanisms.push(Symbol::from("EXTERNAL"));
    }
    if credentials.allow_anonymous() {
        mechanisms.push(Symbol::from("ANONYMOUS"));
    }
    mechanisms.push(Symbol::from("SCRAM-SHA-256"));
    mechanisms.push(Symbol::from("PLAIN"));
    write_sasl(
        stream,
        SaslFrame::Mechanisms(SaslMechanisms {
            sasl_server_mechanisms: Array(mechanisms),
        }),
    )
    .await?;
    let SaslFrame::Init(init) = read_sasl(stream, buf).await? else {
        return Err(HandshakeError::Sasl("expected sasl-init".into()));
    };
    let mechanism = init.mechanism.as_str().to_string();
    let now = std::time::Instant::now();
    let checked = !matches!(mechanism.as_str(), "ANONYMOUS" | "EXTERNAL");
    if checked && peer.limiter.is_some_and(|l| !l.allowed(peer.addr, now)) {
        outcome(stream, SaslCode::SysTemp, None).await?;
        return Err(HandshakeError::RateLimited);
    }
    let fail = |user: Option<String>| HandshakeError::AuthFailed {
        mechanism: mechanism.clone(),
        user,
    };
    let result = match mechanism.as_str() {
        "ANONYMOUS" if credentials.allow_anonymous() => Ok((Identity::Anonymous, None)),
        "EXTERNAL" => match peer.certificate {
            // RFC 4422 appendix A: an empty authorization identity (or the
            // certificate's own name) means the certificate's identity.
            Some(name) => match init.initial_response.as_ref().map(|r| r.as_slice()) {
                None | Some(b"") => Ok((Identity::User(name.to_owned()), None)),
                Some(asked) if asked == name.as_bytes() => {
                    Ok((Identity::User(name.to_owned()), None))
                }
                Some(_) => Err(fail(Some(name.to_owned()))),
            },
            None => Err(fail(None)),
        },
        "PLAIN" => {
            let response = match init.initial_response {
                Some(r) => r.into_vec(),
                None => {
                    write_sasl(
                        stream,
                        SaslFrame::Challenge(SaslChallenge {
                            challenge: Binary::from(Vec::new()),
                        }),
                    )
                    .await?;
                    match read_sasl(stream, buf).await? {
                        SaslFrame::Response(r) => r.response.into_vec(),
                        _ => return Err(HandshakeError::Sasl("expected sasl-response".into())),
                    }
                }
            };
            check_plain(&response, credentials)
                .await
                .map(|identity| (identity, None))
        }
        "SCRAM-SHA-256" => {
            let first = init
                .initial_response
                .map(Binary::into_vec)
                .unwrap_or_default();
            match scram(stream, buf, &first, credentials.as_ref()).await? {
                Ok((user, server_final)) => Ok((Identity::User(user), Some(server_final))),
                Err(user) => Err(fail(user)),
            }
        }
        _ => Err(fail(None)),
    };
    match result {
        Ok((identity, additional)) => {
            outcome(stream, SaslCode::Ok, additional).await?;
            Ok(identity)
        }
        Err(e) => {
            if checked {
                if let Some(limiter) = peer.limiter {
                    limiter.failed(peer.addr, now);
                }
            }
            outcome(stream, SaslCode::Auth, None).await?;
            Err(e)
        }
    }
}

/// Sends the sasl-outcome.
async fn outcome<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: SaslCode,
    additional_data: Option<Vec<u8>>,
) -> Result<(), HandshakeError> {
    write_sasl(
        stream,
        SaslFrame::Outcome(SaslOutcome {
            code,
            additional_data: additional_data.map(Binary::from),
        }),
    )
    .await
}

/// The SCRAM-SHA-256 challenge and response after the client-first
/// message. Ok(Ok((user, server-final))) on success; Ok(Err(user)) when the
/// client failed to authenticate (the user it named, if any).
async fn scram<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    client_first: &[u8],
    credentials: &dyn Credentials,
) -> Result<Result<(String, Vec<u8>), Option<String>>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some((exchange, server_first)) = credentials.scram_start(client_first) else {
        return Ok(Err(None));
    };
    let user = exchange.user().to_string();
    write_sasl(
        stream,
        SaslFrame::Challenge(SaslChallenge {
            challenge: Binary::from(server_first),
        }),
    )
    .await?;
    let SaslFrame::Response(response) = read_sasl(stream, buf).await? else {
        return Err(HandshakeError::Sasl("expected sasl-response".into()));
    };
    Ok(exchange.finish(&response.response).map_err(|_| Some(user)))
}

/// Checks a PLAIN response (`authzid NUL authcid NUL password`).
async fn check_plain(
    response: &[u8],
    credentials: Arc<dyn Credentials>,
) -> Result<Identity, HandshakeError> {
    let fail = |user: Option<String>| HandshakeError::AuthFailed {
        mechanism: "PLAIN".into(),
        user,
    };
    let mut parts = response.split(|b| *b == 0);
    let (Some(_authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(fail(None));
    };
    let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(password))
    else {
        return Err(fail(None));
    };
    let (user, password) = (
        user.to_string(),
        Bytes::copy_from_slice(password.as_bytes()),
    );
    let name = user.clone();
    let ok = tokio::task::spawn_blocking(move || {
        let password = std::str::from_utf8(&password).unwrap_or_default();
        credentials.check_plain(&name, password)
    })
    .await
    .unwrap_or(false);
    if ok {
        Ok(Identity::User(user))
    } else {
        Err(fail(Some(user)))
    }
}
