//! # Ordo
//!
//! An AMQP 1.0 message broker for ordered, exclusive and grouped consumption.
//!
//! # Layout
//! - `core`: protocol-neutral queues, consumers, dispatch and delivery tracking.
//! - `store`: the `Store` trait (durable messages and queue metadata) and its implementations.
//! - `amqp`: Ordo's AMQP 1.0 engine on fe2o3-amqp's frames and types; the only module that knows AMQP.
//! - `server`: the accept loop, connection limit and graceful shutdown.
//! - `config`: the configuration file, its defaults and validation.
//! - `admin`: the admin listener: HTTP API and Prometheus metrics.
//! - `tls`: the rustls server configuration and client certificate identities.
//! - `connections`: the open connections, for the admin API (list, close).
//! - `limits`: failed logins per source address, connections per user.
//! - `lock_order`: the locks that nest, with their ranks, checked in debug builds.
//! - `auth`: user credentials in SCRAM-SHA-256 form and their verification.
//! - `fuzzing`: entry points of the fuzz targets (tests/fuzz/README.md).
//! - `tools`: `ordo send`, `ordo receive` and `ordo bench`, on the engine's client role.

#![deny(unsafe_code, missing_docs)]
// As fjall: no panics hidden in `unwrap`/`expect` (tests may; the one
// justified exception is allowed where it stands, with its reason).
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod amqp;
pub mod auth;
pub mod config;
pub mod connections;
pub mod core;
#[doc(hidden)]
pub mod fuzzing;
pub mod limits;
pub mod lock_order;
pub mod server;
pub mod store;
pub mod tls;
pub mod tools;
