//! The command-line arguments of `ordo send`, `ordo receive` and
//! `ordo bench`, and what each does. `main.rs` only dispatches here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::bench::{self, BenchOptions};
use super::{fsync, sendrecv};
use crate::amqp::client::ClientError;

/// Options of `ordo send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Broker URL: amqp://[USER:PASSWORD@]HOST:PORT.
    #[arg(long, default_value = "amqp://127.0.0.1:5672")]
    pub url: String,
    /// Address to send to (a queue, topic://NAME, ...).
    pub address: String,
    /// Message body (UTF-8, sent as a data section); `{n}` becomes the message number.
    #[arg(long, default_value = "message {n}")]
    pub body: String,
    /// How many messages.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Mark the messages durable.
    #[arg(long)]
    pub durable: bool,
}

/// Options of `ordo receive`.
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    /// Broker URL: amqp://[USER:PASSWORD@]HOST:PORT.
    #[arg(long, default_value = "amqp://127.0.0.1:5672")]
    pub url: String,
    /// Address to receive from.
    pub address: String,
    /// Stop after this many messages (0: when none came for --timeout).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Stop when no message came for this many seconds.
    #[arg(long, default_value_t = 1.0)]
    pub timeout: f64,
}

/// `ordo bench` roles.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Producers and consumers through a broker (or straight to each other
    /// with --peer); prints one JSON line of results. Fails if messages are lost.
    Run(BenchArgs),
    /// The durable reference: append records to a file with an fdatasync
    /// every --batch; prints one JSON line.
    Fsync(FsyncArgs),
    /// Opens --count idle connections and reports the broker's memory per
    /// connection (raise `ulimit -n` first for thousands).
    Connections(ScaleArgs),
    /// Creates --count queues and reports the time and the broker's memory
    /// per queue.
    Queues(ScaleArgs),
}

/// Options of `ordo bench connections` and `ordo bench queues`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Broker URL.
    #[arg(long, default_value = "amqp://127.0.0.1:5672")]
    pub url: String,
    /// How many.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// The broker's process id (for its memory).
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// A label for the output line.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// Options of `ordo bench run`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Broker URL.
    #[arg(long, default_value = "amqp://127.0.0.1:5672")]
    pub url: String,
    /// No broker: producers send straight to consumers in this process (the
    /// peer-to-peer limit of this client).
    #[arg(long)]
    pub peer: bool,
    /// Queue or topic address.
    #[arg(long, default_value = "bench")]
    pub address: String,
    /// Messages in all (0: send for --duration seconds).
    #[arg(long, default_value_t = 100_000)]
    pub count: u64,
    /// Seconds to send for when --count is 0.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Body size in bytes (at least 20).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Mark messages durable.
    #[arg(long)]
    pub durable: bool,
    /// Pre-settled producers and consumers (at-most-once).
    #[arg(long)]
    pub presettled: bool,
    /// Unsettled messages each producer may have in flight.
    #[arg(long, default_value_t = 1000)]
    pub window: u64,
    /// Credit each consumer keeps granted.
    #[arg(long, default_value_t = 1000)]
    pub credit: u32,
    /// Number of distinct group-ids (properties.group-id), 0 for none.
    #[arg(long, default_value_t = 0)]
    pub groups: u32,
    /// Messages carry application properties `color = 'red'` and `n` (the
    /// producer's message number), so runs with and without --selector send
    /// the same bytes.
    #[arg(long)]
    pub tag: bool,
    /// Consumers attach with this JMS selector (implies --tag); it should
    /// match every message, e.g. "color = 'red' AND n >= 0", so nothing is
    /// left behind.
    #[arg(long)]
    pub selector: Option<String>,
    /// Producer connections (0: only consume --count messages, e.g. to drain
    /// a backlog filled by an earlier run).
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Consumer connections (0: only produce, e.g. to fill a backlog).
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Producers wait while this many messages are sent and not received
    /// (0: no limit): measures what consumers sustain, not backlog growth.
    #[arg(long, default_value_t = 0)]
    pub max_backlog: u64,
    /// Total messages per second (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// The broker's process id: its CPU per message and peak memory are reported.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// A label for the output line (the target's name).
    #[arg(long, default_value = "")]
    pub label: String,
}

/// Options of `ordo bench fsync`.
#[derive(Debug, Args)]
pub struct FsyncArgs {
    /// Directory to write in (on the disk to measure).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Records in all.
    #[arg(long, default_value_t = 200_000)]
    pub count: u64,
    /// Record size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Records per fdatasync.
    #[arg(long, default_value_t = 256)]
    pub batch: u64,
    /// A label for the output line.
    #[arg(long, default_value = "fsync")]
    pub label: String,
}

/// Why a tool failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The connection or the broker refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A benchmark lost or duplicated messages.
    #[error("the run lost {lost} and duplicated {duplicates} messages")]
    Lost {
        /// Sent and never received.
        lost: u64,
        /// Received twice.
        duplicates: u64,
    },
    /// Writing the output or the fsync file failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// `ordo send`.
pub async fn send(args: SendArgs) -> Result<(), ToolError> {
    let accepted = sendrecv::send(
        &args.url,
        &args.address,
        &args.body,
        args.count,
        args.durable,
    )
    .await?;
    eprintln!("{accepted} messages accepted");
    Ok(())
}

/// `ordo receive`.
pub async fn receive(args: ReceiveArgs) -> Result<(), ToolError> {
    let timeout = Duration::from_secs_f64(args.timeout.max(0.01));
    let mut out = std::io::stdout().lock();
    let n = sendrecv::receive(&args.url, &args.address, args.count, timeout, &mut out).await?;
    eprintln!("{n} messages received");
    Ok(())
}

/// `ordo bench ...`.
pub async fn bench(command: BenchCommand) -> Result<(), ToolError> {
    match command {
        BenchCommand::Run(a) => {
            let result = bench::run(BenchOptions {
                url: a.url,
                peer: a.peer,
                address: a.address,
                count: a.count,
                duration: Duration::from_secs_f64(a.duration.max(0.1)),
                size: a.size,
                durable: a.durable,
                presettled: a.presettled,
                window: a.window.max(1),
                credit: a.credit.max(1),
                groups: a.groups,
                tag: a.tag,
                selector: a.selector.clone(),
                producers: if a.producers == 0 && a.consumers == 0 {
                    1
                } else {
                    a.producers
                },
                consumers: a.consumers,
                rate: a.rate,
                max_backlog: a.max_backlog,
                broker_pid: a.broker_pid,
                label: a.label,
            })
            .await?;
            println!("{}", serde_json::to_string(&result).unwrap_or_default());
            if result.lost > 0 || result.duplicates > 0 {
                return Err(ToolError::Lost {
                    lost: result.lost,
                    duplicates: result.duplicates,
                });
            }
            Ok(())
        }
        BenchCommand::Connections(a) => {
            let config = crate::amqp::client::ClientConfig::from_url(&a.url)?;
            let before = a.broker_pid.and_then(super::stats::rss_kib);
            let started = std::time::Instant::now();
            let conns = crate::amqp::tool_links::open_connections(&config, a.count).await?;
            let seconds = started.elapsed().as_secs_f64();
            let after = a.broker_pid.and_then(super::stats::rss_kib);
            let per = before
                .zip(after)
                .map(|(b, f)| (f.saturating_sub(b) * 1024) as f64 / a.count.max(1) as f64);
            let line = serde_json::json!({"label": a.label, "connections": a.count, "seconds": seconds,
                "broker_rss_before_kib": before, "broker_rss_after_kib": after, "bytes_per_connection": per});
            println!("{line}");
            drop(conns);
            Ok(())
        }
        BenchCommand::Queues(a) => {
            let config = crate::amqp::client::ClientConfig::from_url(&a.url)?;
            let before = a.broker_pid.and_then(super::stats::rss_kib);
            let started = std::time::Instant::now();
            let prefix = format!("bench-queue-{}-", uuid::Uuid::new_v4().simple());
            crate::amqp::tool_links::create_queues(&config, &prefix, a.count).await?;
            let seconds = started.elapsed().as_secs_f64();
            let after = a.broker_pid.and_then(super::stats::rss_kib);
            let per = before
                .zip(after)
                .map(|(b, f)| (f.saturating_sub(b) * 1024) as f64 / a.count.max(1) as f64);
            let line = serde_json::json!({"label": a.label, "queues": a.count, "seconds": seconds,
                "broker_rss_before_kib": before, "broker_rss_after_kib": after, "bytes_per_queue": per});
            println!("{line}");
            Ok(())
        }
        BenchCommand::Fsync(a) => {
            let rate = fsync::append_and_sync(&a.dir, a.count, a.size, a.batch.max(1))?;
            let line = serde_json::json!({"label": a.label, "msgs_per_s": rate, "size": a.size, "batch": a.batch});
            println!("{line}");
            Ok(())
        }
    }
}
