//! Ordo's AMQP 1.0 engine, built on fe2o3-amqp's frame codec and types.
//! The only module that imports fe2o3_amqp.
//!
//! - `handshake`: protocol headers and SASL, before the connection opens.
//! - `connection`: one connection's state machine (sans I/O).
//! - `session`: windows, delivery ids, link handles.
//! - `link`: attach/detach: producer and consumer links, address options.
//! - `incoming`: transfers from producers: assembly, limits, publishing, relay.
//! - `coordinator`: the transaction coordinator: declare, discharge, open transactions.
//! - `management`: the management node `$management`: requests in, responses to their reply-to.
//! - `outgoing`: deliveries to consumers (frame splitting, dispositions).
//! - `loads`: deliveries waiting for their paged-out bodies, in link order.
//! - `frame`: reading and writing frames.
//! - `message`: message sections: parse the header, keep the rest as bytes.
//! - `address`: node addresses and their options.
//! - `consumer_options`: what an attach asks of its consumer: priority,
//!   exclusivity, group filters (address options, link properties, source filters).
//! - `error`: mapping of core errors to AMQP conditions.
//! - `selector_values`: a message's JMS header and property values for selectors.
//! - `subscription`: which topic subscription a consumer's attach gets (durable, shared, wildcard).
//! - `io`: the task that runs a connection over a socket.
//! - `client`: the client role, for `ordo send`, `ordo receive` and `ordo bench`.
//! - `tool_links`: producer and consumer links of those tools (bodies in, bodies out).

pub mod address;
pub mod client;
pub mod connection;
pub mod consumer_options;
pub mod coordinator;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod incoming;
pub mod io;
pub mod link;
pub mod loads;
pub mod management;
pub mod message;
pub mod outgoing;
pub mod selector_values;
pub mod session;
pub mod subscription;
pub mod tool_links;
pub mod wellformed;

pub use connection::{Connection, EngineConfig};
