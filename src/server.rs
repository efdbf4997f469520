//! The accept loop: binds the listener, enforces the connection limit,
//! spawns one task per connection and shuts down gracefully (stop
//! accepting, close every connection with `amqp:connection:forced`, wait
//! for them to finish).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::amqp::handshake::Credentials;
use crate::amqp::io::{serve_socket, Listener, ServeContext, Transport};
use crate::amqp::EngineConfig;
use crate::auth::{AuthError, Authenticator};
use crate::config::Config;
use crate::config::{StoreConfig, SyncPolicy};
use crate::core::settings::QueueSettings;
use crate::core::{Broker, BrokerOptions, NodeDefaults, Persistence};
use crate::store::{FjallOptions, FjallStore, Journal, JournalOptions, StoreError, SyncMode};

/// How long shutdown waits for connections to close before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address could not be bound (in use, not permitted, no such
    /// interface).
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address as configured.
        address: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The message store cannot be opened.
    #[error("cannot open the message store in {path}: {source}")]
    Store {
        /// The store directory.
        path: String,
        /// What failed.
        source: StoreError,
    },
    /// The configured users cannot be loaded.
    #[error("invalid users: {0}")]
    Users(#[from] AuthError),
    /// The `[[access]]` rules are invalid.
    #[error("invalid access rules: {0}")]
    Access(#[from] crate::core::access::AccessError),
    /// The TLS certificate, key or client CA cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Applies what may change while the broker runs: users, access rules,
/// TLS certificates.
/// Everything else in a reloaded configuration needs a restart (and is
/// reported as such when it differs).
#[derive(Clone)]
pub struct Reloader {
    /// What the connections share.
    ctx: Arc<ServeContext>,
}

impl Reloader {
    /// Applies `config`: all of it or, if any part is invalid, none.
    /// New connections use the new users; every access check from now on
    /// uses the new rules.
    pub fn apply(&self, config: &Config) -> Result<(), ServerError> {
        let credentials: Arc<dyn Credentials> = Arc::new(Authenticator::from_config(config)?);
        let access = crate::core::access::AccessRules::new(config.access.clone())?;
        let tls = crate::tls::acceptor(&config.tls)?;
        let tls_listening = self.ctx.tls.read().is_some();
        if tls.is_some() != tls_listening {
            tracing::warn!("turning TLS on or off needs a restart; certificates are reloaded only while it is on");
        }
        *self.ctx.credentials.write() = credentials;
        self.ctx.broker.set_access(access);
        if tls_listening && tls.is_some() {
            *self.ctx.tls.write() = tls;
        }
        tracing::info!(
            users = config.users.len(),
            access_rules = config.access.len(),
            tls = tls_listening,
            "configuration reloaded: users, access rules and TLS certificates"
        );
        Ok(())
    }
}

impl Credentials for Authenticator {
    fn allow_anonymous(&self) -> bool {
        Authenticator::allow_anonymous(self)
    }

    fn check_plain(&self, username: &str, password: &str) -> bool {
        Authenticator::check_plain(self, username, password).is_ok()
    }

    fn groups(&self, user: &str) -> Vec<String> {
        Authenticator::groups(self, user)
    }

    fn scram_start(&self, client_first: &[u8]) -> Option<(crate::auth::ScramExchange, Vec<u8>)> {
        Authenticator::scram_start(self, client_first).ok()
    }
}

/// Queue and topic defaults from the configuration's patterns.
#[derive(Debug)]
struct ConfigDefaults(Config);

impl NodeDefaults for ConfigDefaults {
    fn queue_settings(&self, name: &str) -> QueueSettings {
        self.0.queue_settings(name)
    }

    fn is_topic(&self, name: &str) -> bool {
        self.0.is_topic(name)
    }
}

/// 40% of the machine's memory (RabbitMQ's default), or 2 GiB when it
/// cannot be read.
fn default_high_watermark() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        });
    total.map_or(2 << 30, |bytes| bytes / 10 * 4)
}

/// Connections the kernel queues for us before we accept them: enough for
/// a burst of reconnecting clients (the OS caps it at net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket on the first address `host` resolves to.
async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        )
    }))
}

/// Accepts on `listener`, or waits forever when there is none.
async fn accept_on(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Connections past `max-connections` still told why before the socket
/// is dropped without a word.
const REFUSALS_IN_FLIGHT: usize = 64;

/// How often queues look for expired messages.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// A bound broker, not yet serving.
pub struct Server {
    /// The listening socket.
    listener: TcpListener,
    /// The amqps listening socket, when TLS is on.
    tls_listener: Option<TcpListener>,
    /// The admin (HTTP) listening socket, when enabled.
    admin_listener: Option<TcpListener>,
    /// What every connection task shares.
    ctx: Arc<ServeContext>,
    /// Connections beyond this are refused (0 = no limit).
    max_connections: usize,
    /// The store's writer, flushed and stopped at shutdown.
    journal: Arc<Journal>,
}

/// Opens the fjall store and starts its journal.
fn open_store(config: &StoreConfig) -> Result<Arc<Journal>, ServerError> {
    let store = FjallStore::open(
        &config.path,
        &FjallOptions {
            cache_bytes: config.cache_size,
            ..FjallOptions::default()
        },
    )
    .map_err(|source| ServerError::Store {
        path: config.path.display().to_string(),
        source,
    })?;
    let sync = match config.sync {
        SyncPolicy::Always => SyncMode::Always,
        SyncPolicy::Interval(d) => SyncMode::Interval(d),
    };
    Ok(Journal::start(
        Arc::new(store),
        JournalOptions {
            sync,
            watch_dir: Some(config.path.clone()),
            min_free_bytes: config.min_free_disk,
            ..JournalOptions::default()
        },
    ))
}

impl Server {
    /// Builds the broker from the configuration and binds its listener.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let credentials: Arc<dyn Credentials> = Arc::new(Authenticator::from_config(&config)?);
        let access = crate::core::access::AccessRules::new(config.access.clone())?;
        let mut predeclared = vec!["DLQ".to_string()];
        for q in &config.queues {
            predeclared.push(q.settings.dead_letter_address.clone());
            predeclared.extend(q.settings.expiry_address.clone());
        }
        predeclared.sort();
        predeclared.dedup();
        let journal = open_store(&config.store)?;
        let persistence = Persistence::new(
            Arc::clone(&journal),
            usize::try_from(config.store.memory_limit).unwrap_or(usize::MAX),
        );
        let (broker, report) = Broker::open(BrokerOptions {
            max_name_length: config.limits.max_address_length as usize,
            auto_create: config.broker.auto_create,
            predeclared,
            defaults: Arc::new(ConfigDefaults(config.clone())),
            persistence: Some(persistence),
            evaluator: Some(crate::amqp::selector_values::evaluate),
        })
        .map_err(|source| ServerError::Store {
            path: config.store.path.display().to_string(),
            source,
        })?;
        broker.set_access(access);
        let high_watermark = match config.limits.memory_high_watermark {
            0 => default_high_watermark(),
            bytes => bytes,
        };
        broker.set_memory_high_watermark(high_watermark);
        broker.set_max_assembly_bytes(config.limits.max_assembly_bytes);
        tracing::info!(
            high_watermark,
            max_assembly_bytes = config.limits.max_assembly_bytes,
            "memory high-water mark (bytes of queued messages and messages in assembly)"
        );
        tracing::info!(
            queues = report.queues,
            messages = report.messages,
            paged = report.paged,
            corrupt = report.corrupt,
            duration_ms = report.duration.as_millis() as u64,
            path = %config.store.path.display(),
            "store recovered"
        );
        let listener_config = &config.listener;
        let engine = EngineConfig {
            container_id: format!("ordo-{}", uuid::Uuid::new_v4()),
            max_frame_size: listener_config.max_frame_size,
            channel_max: listener_config.channel_max,
            idle_timeout: (!listener_config.idle_timeout.is_zero())
                .then_some(listener_config.idle_timeout),
            max_message_size: config.limits.max_message_size,
            handle_max: config.limits.max_links_per_session.saturating_sub(1),
            producer_credit: config.limits.producer_credit.max(1),
            max_unsettled_per_link: config.limits.max_unsettled_per_link,
            ..EngineConfig::default()
        };
        let tls = crate::tls::acceptor(&config.tls)?;
        let address = format!("{}:{}", listener_config.address, listener_config.port);
        let listener = bind(listener_config.address.as_str(), listener_config.port)
            .await
            .map_err(|source| ServerError::Bind { address, source })?;
        let tls_listener = match &tls {
            None => None,
            Some(_) => {
                let host = if config.tls.address.is_empty() {
                    listener_config.address.as_str()
                } else {
                    config.tls.address.as_str()
                };
                let address = format!("{host}:{}", config.tls.port);
                Some(
                    bind(host, config.tls.port)
                        .await
                        .map_err(|source| ServerError::Bind { address, source })?,
                )
            }
        };
        let admin_listener = if config.admin.enabled {
            let address = format!("{}:{}", config.admin.address, config.admin.port);
            Some(
                bind(&config.admin.address, config.admin.port)
                    .await
                    .map_err(|source| ServerError::Bind { address, source })?,
            )
        } else {
            None
        };
        Ok(Server {
            listener,
            tls_listener,
            admin_listener,
            ctx: Arc::new(ServeContext {
                engine: Arc::new(engine),
                broker,
                credentials: parking_lot::RwLock::new(credentials),
                handshake_timeout: listener_config.handshake_timeout,
                tls: parking_lot::RwLock::new(tls),
                tls_upgrade: config.tls.upgrade,
                tls_required: config.tls.required,
                limiter: crate::limits::LoginLimiter::new(
                    config.sasl.max_failed_logins,
                    config.sasl.failed_login_window,
                ),
                users: Arc::default(),
                max_connections_per_user: config.limits.max_connections_per_user,
                connections: Default::default(),
                registry: Arc::default(),
            }),
            max_connections: config.limits.max_connections as usize,
            journal,
        })
    }

    /// A handle that applies a reloaded configuration to the running
    /// broker (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            ctx: Arc::clone(&self.ctx),
        }
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The bound admin (HTTP) address, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The bound amqps address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The broker's nodes (for embedding and tests).
    pub fn broker(&self) -> Arc<Broker> {
        Arc::clone(&self.ctx.broker)
    }

    /// Serves until `shutdown` resolves, then closes every connection.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        let broker = Arc::clone(&self.ctx.broker);
        let expiry = tokio::spawn(async move {
            // Every queue once a second (expiry, idle groups), and a queue
            // at the time it asked for (scheduled messages, redelivery delays).
            let mut next_tick = tokio::time::Instant::now() + EXPIRY_INTERVAL;
            loop {
                let wake = broker
                    .next_wakeup()
                    .map(|at| {
                        let wait = at.saturating_sub(crate::core::now_ms());
                        tokio::time::Instant::now() + Duration::from_millis(wait)
                    })
                    .map_or(next_tick, |at| at.min(next_tick));
                tokio::select! {
                    () = tokio::time::sleep_until(wake) => {}
                    () = broker.wakeup_changed() => continue,
                }
                broker.wake_due(crate::core::now_ms());
                if tokio::time::Instant::now() >= next_tick {
                    broker.tick();
                    next_tick = tokio::time::Instant::now() + EXPIRY_INTERVAL;
                }
            }
        });
        let tls_listener = self.tls_listener;
        let admin = self.admin_listener.map(|listener| {
            let app = crate::admin::router(crate::admin::AdminState {
                ctx: Arc::clone(&self.ctx),
                journal: Arc::clone(&self.journal),
            });
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stopping| *stopping).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin listener failed");
                }
            })
        });
        loop {
            let (accepted, kind) = tokio::select! {
                accepted = self.listener.accept() => (accepted, Listener::Plain),
                // Both accepts are cancel-safe: a select that picks the other
                // branch loses no connection.
                accepted = accept_on(tls_listener.as_ref()) => (accepted, Listener::Tls),
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        if e.is_panic() {
                            tracing::error!(error = %e, "connection task panicked");
                        }
                    }
                    continue;
                }
                () = &mut shutdown => break,
            };
            let (socket, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let mut refusal = None;
            if self.max_connections > 0 && tasks.len() >= self.max_connections {
                // A few over the limit are told why (a Close with
                // resource-limit-exceeded after their Open); beyond that the
                // socket is dropped, so a flood costs nothing.
                if tasks.len() >= self.max_connections + REFUSALS_IN_FLIGHT {
                    tracing::warn!(%peer, limit = self.max_connections, "connection dropped: limit reached");
                    drop(socket);
                    continue;
                }
                tracing::warn!(%peer, limit = self.max_connections, "connection refused: limit reached");
                refusal = Some(crate::amqp::error::cond::resource_limit(format!(
                    "the broker has {} connections open, the most allowed",
                    self.max_connections
                )));
            }
            let _ = socket.set_nodelay(true);
            // The same id names the connection in logs and the admin API.
            let id = self.ctx.broker.new_connection_id();
            let span = tracing::info_span!("conn", id, %peer, tls = kind == Listener::Tls);
            let transport = Transport {
                peer,
                certificate: None,
                initial: bytes::BytesMut::new(),
                accepted: tokio::time::Instant::now(),
                refusal,
                tls: false,
                id,
            };
            tasks.spawn(
                serve_socket(
                    socket,
                    kind,
                    transport,
                    Arc::clone(&self.ctx),
                    stop_rx.clone(),
                )
                .instrument(span),
            );
        }
        tracing::info!(connections = tasks.len(), "shutting down");
        expiry.abort();
        drop(self.listener);
        drop(tls_listener);
        if let Some(admin) = admin {
            let _ = tokio::time::timeout(Duration::from_secs(1), admin).await;
        }
        let _ = stop_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = tasks.len(),
                "connections did not close in time; dropping them"
            );
            tasks.shutdown().await;
        }
        let journal = Arc::clone(&self.journal);
        let stats = tokio::task::spawn_blocking(move || {
            journal.shutdown();
            journal.stats()
        })
        .await;
        if let Ok(stats) = stats {
            tracing::info!(
                batches = stats.batches,
                records = stats.records,
                syncs = stats.syncs,
                messages = stats.puts,
                write_ms = stats.write_us / 1000,
                sync_ms = stats.sync_us / 1000,
                "store flushed"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}
