//! Ordo's command-line client tools: `ordo send`, `ordo receive` and
//! `ordo bench`, built on the engine's client role (`amqp::tool_links`).

pub mod admin_cli;
pub mod bench;
pub mod cli;
pub mod fsync;
pub mod sendrecv;
pub mod stats;
