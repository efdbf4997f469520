//! The task that runs one connection over a socket: the handshake, then a
//! loop that reads frames, writes frames, pumps the outbox and keeps time,
//! all in one task (no task or channel hop per link).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};

use super::connection::{Connection, EngineConfig};
use super::error::cond;
use super::handshake::{self, Credentials, HandshakeError};
use crate::core::access::Principal;
use crate::core::Broker;
use crate::limits::{LoginLimiter, UserConnections};
use crate::tls::TLS_HEADER;
use fe2o3_amqp::types::definitions::Error as AmqpError;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// Stop reading while this much output waits to be written: a peer that
/// does not read cannot make us buffer without bound.
const MAX_PENDING_OUTPUT: usize = 4 << 20;
/// The smallest and largest read a connection asks for.
const MIN_READ: usize = 4 * 1024;
const MAX_READ: usize = 64 * 1024;
/// How long we wait for the peer's Close after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// What every connection task shares.
pub struct ServeContext {
    /// Engine settings.
    pub engine: Arc<EngineConfig>,
    /// The nodes.
    pub broker: Arc<Broker>,
    /// Who checks credentials (replaced when the configuration is reloaded).
    pub credentials: parking_lot::RwLock<Arc<dyn Credentials>>,
    /// Time allowed from accept to the end of SASL.
    pub handshake_timeout: Duration,
    /// TLS, when configured (replaced when the configuration is reloaded).
    pub tls: parking_lot::RwLock<Option<TlsAcceptor>>,
    /// Accept the TLS upgrade header on the plain port.
    pub tls_upgrade: bool,
    /// Refuse unencrypted connections on the plain port.
    pub tls_required: bool,
    /// Failed logins per source address.
    pub limiter: LoginLimiter,
    /// Open connections per user.
    pub users: Arc<UserConnections>,
    /// Connections one user may have open (0: unlimited).
    pub max_connections_per_user: u32,
    /// Sockets being served (handshakes included).
    pub connections: std::sync::atomic::AtomicUsize,
    /// Connections past their handshake, for the admin API.
    pub registry: Arc<crate::connections::Registry>,
}

/// Counts one served socket in [`ServeContext::connections`].
struct Counted<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Which listener a socket came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The plain AMQP port (TLS only through the upgrade header).
    Plain,
    /// The amqps port: TLS from the first byte.
    Tls,
}

/// What a connection task knows about its socket before the AMQP handshake.
pub struct Transport {
    /// The peer's address.
    pub peer: std::net::SocketAddr,
    /// The name in the peer's verified TLS client certificate.
    pub certificate: Option<String>,
    /// Bytes already read from the stream.
    pub initial: BytesMut,
    /// When the socket was accepted (the handshake timeout counts from it).
    pub accepted: Instant,
    /// Close the connection with this error right after its Open (a limit
    /// was reached), so the client learns why.
    pub refusal: Option<AmqpError>,
    /// The stream is encrypted (set once TLS is established).
    pub tls: bool,
    /// The connection's id in the broker (logs and the admin API name it).
    pub id: u64,
}

/// Runs a TCP connection: TLS first on the amqps listener or after the
/// TLS upgrade header on the plain one, then [`serve`].
pub async fn serve_socket(
    socket: TcpStream,
    listener: Listener,
    transport: Transport,
    ctx: Arc<ServeContext>,
    shutdown: watch::Receiver<bool>,
) {
    ctx.connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let counted = Arc::clone(&ctx);
    let _counted = Counted(&counted.connections);
    let mut stop = shutdown.clone();
    // A shutdown does not wait for a client still in its TLS handshake.
    let prepared = tokio::select! {
        prepared = prepare(socket, listener, transport, &ctx) => prepared,
        _ = stop.wait_for(|stopping| *stopping) => {
            tracing::debug!("shutdown before the AMQP handshake");
            return;
        }
    };
    match prepared {
        Some(Prepared::Plain(socket, transport)) => serve(socket, transport, ctx, shutdown).await,
        Some(Prepared::Tls(stream, transport)) => serve(stream, transport, ctx, shutdown).await,
        None => {}
    }
}

/// A socket ready for the AMQP handshake.
enum Prepared {
    /// Unencrypted.
    Plain(TcpStream, Transport),
    /// After a TLS handshake.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, Transport),
}

/// The protocol header or TLS handshake before AMQP (None: the connection
/// ended or was refused).
async fn prepare(
    mut socket: TcpStream,
    listener: Listener,
    mut transport: Transport,
    ctx: &ServeContext,
) -> Option<Prepared> {
    let deadline = transport.accepted + ctx.handshake_timeout;
    let tls = if listener == Listener::Tls {
        // Some clients (fe2o3-amqp by default) send the AMQP TLS header
        // before their ClientHello even on the amqps port: answer it.
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout_at(deadline, socket.peek(&mut first)).await;
        match peeked {
            Ok(Ok(1)) => {}
            Err(_) => {
                tracing::warn!("handshake timed out: no TLS handshake");
                return None;
            }
            _ => {
                tracing::debug!("connection ended before TLS");
                return None;
            }
        }
        if first[0] == b'A' {
            let mut header = [0u8; 8];
            let read = tokio::time::timeout_at(deadline, socket.read_exact(&mut header)).await;
            if !matches!(read, Ok(Ok(_))) || header != TLS_HEADER {
                tracing::warn!(header = ?header, "amqps listener: not a TLS handshake");
                let _ = socket.write_all(&TLS_HEADER).await;
                let _ = socket.shutdown().await;
                return None;
            }
            if socket.write_all(&TLS_HEADER).await.is_err() {
                return None;
            }
        }
        true
    } else {
        // Up to the 8 header bytes, never more: what follows a TLS header
        // belongs to the TLS handshake.
        let mut header = [0u8; 8];
        let mut n = 0;
        let read = tokio::time::timeout_at(deadline, async {
            while n < 8 && b"AMQP".starts_with(&header[..n.min(4)]) {
                match socket.read(&mut header[n..]).await {
                    Ok(0) | Err(_) => return false,
                    Ok(k) => n += k,
                }
            }
            true
        })
        .await;
        match read {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!("connection ended before its protocol header");
                return None;
            }
            Err(_) => {
                tracing::warn!("handshake timed out: no protocol header");
                return None;
            }
        }
        let upgrade = header == TLS_HEADER && ctx.tls_upgrade && ctx.tls.read().is_some();
        if !upgrade && ctx.tls_required {
            tracing::warn!("unencrypted connection refused: TLS is required");
            let _ = socket.write_all(&TLS_HEADER).await;
            let _ = socket.shutdown().await;
            return None;
        }
        if upgrade {
            if socket.write_all(&TLS_HEADER).await.is_err() {
                return None;
            }
        } else {
            transport.initial.extend_from_slice(&header[..n]);
        }
        upgrade
    };
    if !tls {
        return Some(Prepared::Plain(socket, transport));
    }
    let acceptor = ctx.tls.read().clone()?;
    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::warn!("TLS handshake timed out");
            return None;
        }
    };
    let (_, session) = stream.get_ref();
    transport.certificate = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(crate::tls::certificate_identity);
    transport.tls = true;
    tracing::debug!(
        version = ?session.protocol_version(),
        certificate = transport.certificate.as_deref(),
        "TLS established"
    );
    Some(Prepared::Tls(Box::new(stream), transport))
}

/// Runs a connection to its end. `shutdown` turning true closes it with
/// `amqp:connection:forced`.
pub async fn serve<S>(
    mut stream: S,
    transport: Transport,
    ctx: Arc<ServeContext>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut input = transport.initial;
    input.reserve(MIN_READ);
    // Bytes asked of each read: small while the peer is quiet, so 10,000
    // idle connections cost little; doubled when a read fills it.
    let mut read_size = MIN_READ;
    let credentials = Arc::clone(&ctx.credentials.read());
    // The whole handshake, TLS and Open included, must finish by then.
    let open_deadline = transport.accepted + ctx.handshake_timeout;
    let peer = handshake::Peer {
        addr: transport.peer.ip(),
        certificate: transport.certificate.as_deref(),
        limiter: Some(&ctx.limiter),
    };
    let handshake = tokio::time::timeout_at(
        open_deadline,
        handshake::handshake(&mut stream, &mut input, Arc::clone(&credentials), peer),
    );
    // A shutdown does not wait for a client that is still shaking hands.
    let outcome = tokio::select! {
        outcome = handshake => outcome,
        _ = shutdown.changed() => {
            tracing::debug!("shutdown during the handshake");
            return;
        }
    };
    let identity = match outcome {
        Ok(Ok(identity)) => identity,
        Ok(Err(HandshakeError::Io(e))) => {
            tracing::debug!(error = %e, "connection ended during handshake");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "handshake failed");
            let _ = stream.shutdown().await;
            return;
        }
        Err(_) => {
            tracing::warn!("handshake timed out");
            return;
        }
    };
    tracing::debug!(?identity, "handshake complete");
    let mut refusal = transport.refusal;
    let mut _slot = None;
    if let handshake::Identity::User(user) = &identity {
        match ctx.users.acquire(user, ctx.max_connections_per_user) {
            Some(slot) => _slot = Some(slot),
            None => {
                tracing::warn!(user = %user, limit = ctx.max_connections_per_user, "connection refused: the user's connection limit is reached");
                refusal.get_or_insert_with(|| {
                    cond::resource_limit(format!(
                        "user '{user}' has {} connections open, the most allowed",
                        ctx.max_connections_per_user
                    ))
                });
            }
        }
    }
    let user = match &identity {
        handshake::Identity::User(user) => Some(user.clone()),
        handshake::Identity::Anonymous => None,
    };
    let principal = match identity {
        handshake::Identity::Anonymous => Principal::anonymous(),
        handshake::Identity::User(user) => Principal {
            groups: credentials.groups(&user),
            user: Some(user),
        },
    };
    let mut conn = Connection::with_id(
        Arc::clone(&ctx.engine),
        Arc::clone(&ctx.broker),
        Instant::now().into_std(),
        transport.id,
    );
    conn.set_principal(principal);
    let registration = ctx
        .registry
        .register(conn.id(), transport.peer, user, transport.tls);
    let entry = &registration.entry;
    if let Some(e) = refusal {
        conn.refuse(e);
    }
    let outbox = conn.outbox();
    // The client may have pipelined its Open behind its protocol header.
    if !input.is_empty() {
        conn.handle_input(&mut input, std::time::Instant::now());
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut eof = false;
    let mut close_deadline: Option<Instant> = None;
    loop {
        if conn.is_finished() {
            break;
        }
        entry.set_traffic(conn.traffic());
        if let Some((sessions, links)) = conn.topology() {
            entry.set_counts(sessions, links);
            entry.set_container(conn.remote_container());
        }
        if conn.is_closing() && close_deadline.is_none() {
            close_deadline = Some(Instant::now() + CLOSE_GRACE);
        }
        let tick_at = conn
            .next_tick()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let mut wake_at = close_deadline.map_or(tick_at, |d| d.min(tick_at));
        if conn.awaiting_open() {
            wake_at = wake_at.min(open_deadline);
        }
        let can_read = !eof && conn.output().len() < MAX_PENDING_OUTPUT;
        if input.capacity() - input.len() < read_size {
            input.reserve(read_size);
        }
        let spare = input.capacity() - input.len();
        let must_write = !conn.output().is_empty();
        tokio::select! {
            r = rd.read_buf(&mut input), if can_read => match r {
                Ok(0) | Err(_) => {
                    eof = true;
                    if !must_write { break; }
                }
                Ok(n) => {
                    if n == spare && read_size < MAX_READ {
                        read_size *= 2;
                    }
                    conn.handle_input(&mut input, std::time::Instant::now());
                }
            },
            r = wr.write(conn.output()), if must_write => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    conn.output().advance(n);
                    if eof && conn.output().is_empty() { break; }
                }
            },
            _ = outbox.notified() => conn.pump(std::time::Instant::now()),
            _ = sleep_until(wake_at) => {
                if close_deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                if conn.awaiting_open() && Instant::now() >= open_deadline {
                    tracing::warn!("no open within the handshake timeout");
                    break;
                }
                conn.tick(std::time::Instant::now());
            }
            _ = shutdown.changed() => {
                conn.close(Some(cond::forced("the broker is shutting down")));
            }
            reason = entry.close_requested() => {
                tracing::info!(connection = conn.id(), reason = %reason, "connection closed by an operator");
                conn.close(Some(cond::forced(reason)));
            }
        }
    }
    // Whatever is left (a final Close) goes out if the socket takes it.
    if !conn.output().is_empty() {
        let pending = conn.output().split();
        let _ = timeout(Duration::from_secs(1), wr.write_all(&pending)).await;
    }
    let _ = timeout(Duration::from_secs(1), wr.shutdown()).await;
    conn.release_all();
    tracing::info!(container = conn.remote_container(), "connection ended");
}
