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

/// Stop reading while this much output waits to be written: a peer that
/// does not read cannot make us buffer without bound.
const MAX_PENDING_OUTPUT: usize = 4 << 20;
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
}

/// Runs a connection to its end. `shutdown` turning true closes it with
/// `amqp:connection:forced`.
pub async fn serve<S>(mut stream: S, ctx: Arc<ServeContext>, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut input = BytesMut::with_capacity(64 * 1024);
    let credentials = Arc::clone(&ctx.credentials.read());
    // The whole handshake, Open included, must finish by then.
    let open_deadline = Instant::now() + ctx.handshake_timeout;
    let handshake = timeout(
        ctx.handshake_timeout,
        handshake::handshake(&mut stream, &mut input, Arc::clone(&credentials)),
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
    let principal = match identity {
        handshake::Identity::Anonymous => Principal::anonymous(),
        handshake::Identity::User(user) => Principal {
            groups: credentials.groups(&user),
            user: Some(user),
        },
    };
    let mut conn = Connection::new(
        Arc::clone(&ctx.engine),
        Arc::clone(&ctx.broker),
        Instant::now().into_std(),
    );
    conn.set_principal(principal);
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
        let must_write = !conn.output().is_empty();
        tokio::select! {
            r = rd.read_buf(&mut input), if can_read => match r {
                Ok(0) | Err(_) => {
                    eof = true;
                    if !must_write { break; }
                }
                Ok(_) => conn.handle_input(&mut input, std::time::Instant::now()),
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
