//! The open AMQP connections, for operators: who is connected from where,
//! with how many sessions and links, and a way to close one
//! (`amqp:connection:forced`). Each connection task registers itself once
//! its handshake is done and is removed when its task ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

/// Every registered connection, by id.
#[derive(Debug, Default)]
pub struct Registry {
    connections: Mutex<BTreeMap<u64, Arc<Entry>>>,
}

/// What the registry knows about one connection.
#[derive(Debug)]
pub struct Entry {
    /// The connection's id in the broker (consumers name it too).
    pub id: u64,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The authenticated user, None for an anonymous client.
    pub user: Option<String>,
    /// Over TLS.
    pub tls: bool,
    /// When the handshake finished (ms since the epoch).
    pub since: u64,
    /// The peer's container-id, once its Open arrived.
    container: Mutex<String>,
    /// Sessions now.
    sessions: AtomicUsize,
    /// Links now.
    links: AtomicUsize,
    /// Messages the broker took from the peer so far.
    received: AtomicU64,
    /// Messages delivered to the peer so far.
    delivered: AtomicU64,
    /// Set when an operator asks for the connection to be closed.
    close: Mutex<Option<String>>,
    /// Wakes the connection's task for a close.
    close_requested: tokio::sync::Notify,
}

/// A connection as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ConnectionView {
    /// Its id.
    pub id: u64,
    /// The peer's address.
    pub peer: String,
    /// The user it logged in as (None: anonymous).
    pub user: Option<String>,
    /// The peer's container-id.
    pub container: String,
    /// Over TLS.
    pub tls: bool,
    /// Connected since (ms since the epoch).
    pub since: u64,
    /// Sessions.
    pub sessions: usize,
    /// Links (producers, consumers, coordinators).
    pub links: usize,
    /// Messages the broker took from the peer so far.
    pub received: u64,
    /// Messages delivered to the peer so far.
    pub delivered: u64,
}

/// Removes its connection from the registry when dropped (the task ended).
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    /// The registered connection.
    pub entry: Arc<Entry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.connections.lock().remove(&self.entry.id);
    }
}

impl Registry {
    /// Registers a connection that finished its handshake.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        peer: SocketAddr,
        user: Option<String>,
        tls: bool,
    ) -> Registration {
        let entry = Arc::new(Entry {
            id,
            peer,
            user,
            tls,
            since: crate::core::now_ms(),
            container: Mutex::new(String::new()),
            sessions: AtomicUsize::new(0),
            links: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            close: Mutex::new(None),
            close_requested: tokio::sync::Notify::new(),
        });
        self.connections.lock().insert(id, Arc::clone(&entry));
        Registration {
            registry: Arc::clone(self),
            entry,
        }
    }

    /// Every registered connection, oldest first.
    pub fn list(&self) -> Vec<ConnectionView> {
        let entries: Vec<Arc<Entry>> = self.connections.lock().values().cloned().collect();
        entries.iter().map(|e| e.view()).collect()
    }

    /// One connection.
    pub fn get(&self, id: u64) -> Option<ConnectionView> {
        let entry = self.connections.lock().get(&id).cloned();
        entry.map(|e| e.view())
    }

    /// Asks connection `id` to close with `reason`; false if there is none.
    pub fn close(&self, id: u64, reason: String) -> bool {
        let Some(entry) = self.connections.lock().get(&id).cloned() else {
            return false;
        };
        *entry.close.lock() = Some(reason);
        entry.close_requested.notify_one();
        true
    }

    /// Sessions and links over every connection.
    pub fn totals(&self) -> (usize, usize) {
        let connections = self.connections.lock();
        connections.values().fold((0, 0), |(s, l), e| {
            (
                s + e.sessions.load(Ordering::Relaxed),
                l + e.links.load(Ordering::Relaxed),
            )
        })
    }
}

impl Entry {
    /// Records the peer's container-id.
    pub fn set_container(&self, container: &str) {
        let mut current = self.container.lock();
        if current.as_str() != container {
            container.clone_into(&mut current);
        }
    }

    /// Records the connection's sessions and links now.
    pub fn set_counts(&self, sessions: usize, links: usize) {
        self.sessions.store(sessions, Ordering::Relaxed);
        self.links.store(links, Ordering::Relaxed);
    }

    /// Records the messages received from and delivered to the peer so far.
    pub fn set_traffic(&self, (received, delivered): (u64, u64)) {
        self.received.store(received, Ordering::Relaxed);
        self.delivered.store(delivered, Ordering::Relaxed);
    }

    /// Resolves when an operator asks for the connection to be closed;
    /// gives the reason.
    pub async fn close_requested(&self) -> String {
        loop {
            if let Some(reason) = self.close.lock().take() {
                return reason;
            }
            self.close_requested.notified().await;
        }
    }

    fn view(&self) -> ConnectionView {
        ConnectionView {
            id: self.id,
            peer: self.peer.to_string(),
            user: self.user.clone(),
            container: self.container.lock().clone(),
            tls: self.tls,
            since: self.since,
            sessions: self.sessions.load(Ordering::Relaxed),
            links: self.links.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_connections_are_listed_until_their_task_ends() {
        let registry = Arc::new(Registry::default());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let a = registry.register(1, peer, Some("alice".into()), false);
        let b = registry.register(2, peer, None, true);
        a.entry.set_counts(2, 3);
        b.entry.set_counts(1, 1);
        a.entry.set_container("app-1");
        assert_eq!(registry.totals(), (3, 4));
        let list = registry.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].container, "app-1");
        assert_eq!(list[0].user.as_deref(), Some("alice"));
        drop(a);
        assert_eq!(registry.list().len(), 1);
        assert_eq!(registry.get(2).map(|c| c.tls), Some(true));
        assert!(registry.get(1).is_none());
    }

    #[tokio::test]
    async fn a_close_request_reaches_the_connection_even_if_it_was_not_waiting() {
        let registry = Arc::new(Registry::default());
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let r = registry.register(7, peer, None, false);
        assert!(registry.close(7, "closed by an operator".into()));
        assert!(!registry.close(8, "x".into()));
        let reason =
            tokio::time::timeout(std::time::Duration::from_secs(5), r.entry.close_requested())
                .await
                .unwrap();
        assert_eq!(reason, "closed by an operator");
    }
}
