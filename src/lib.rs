//! # Ordo
//!
//! An AMQP 1.0 message broker for ordered, exclusive and grouped consumption.
//!
//! # Layout
//! - `config`: the configuration file, its defaults and validation.
//! - `auth`: user credentials in SCRAM-SHA-256 form and their verification.
//! - `core`: protocol-neutral queues, consumers, dispatch and delivery tracking.
//! - `amqp`: Ordo's AMQP 1.0 engine on fe2o3-amqp's frames and types.
//! - `server`: the accept loop, connection limit and graceful shutdown.

pub mod auth;
pub mod config;
pub mod core;
pub mod server;
