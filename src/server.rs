//! Stand-in for the accept loop: binds the listener and waits for shutdown, so
//! that `main` and its CLI tests build before the real server is merged.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::Config;

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
}

/// A bound broker, not yet serving.
pub struct Server {
    /// Held so the port stays bound until the server stops.
    listener: TcpListener,
}

impl Server {
    /// Binds the configured listener.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let address = format!("{}:{}", config.listener.address, config.listener.port);
        let listener = TcpListener::bind((config.listener.address.as_str(), config.listener.port))
            .await
            .map_err(|source| ServerError::Bind { address, source })?;
        Ok(Server { listener })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        shutdown.await;
        drop(self.listener);
        Ok(())
    }
}
