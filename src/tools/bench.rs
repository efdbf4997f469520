//! `ordo bench`: producers and consumers in one process, measuring
//! throughput, end-to-end latency (each body starts with its send time),
//! CPU per message of this process and of the broker, the broker's peak
//! memory, and lost, duplicate and reordered messages. One JSON line per run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::TcpListener;

use super::stats;
use crate::amqp::client::{ClientConfig, ClientError};
use crate::amqp::tool_links::{ToolConsumer, ToolProducer};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Broker URL (ignored with `peer`).
    pub url: String,
    /// No broker: producers send straight to consumers in this process.
    pub peer: bool,
    /// Queue or topic address.
    pub address: String,
    /// Messages in all (0: run for `duration`).
    pub count: u64,
    /// How long to send when `count` is 0.
    pub duration: Duration,
    /// Body size in bytes (at least 20: time, sequence, producer).
    pub size: usize,
    /// Mark messages durable.
    pub durable: bool,
    /// Pre-settled producers and consumers.
    pub presettled: bool,
    /// Unsettled messages a producer may have in flight.
    pub window: u64,
    /// Credit each consumer keeps granted.
    pub credit: u32,
    /// Number of distinct group-ids (0: no groups).
    pub groups: u32,
    /// Messages carry application properties `color = 'red'` and `n` (the
    /// producer's message number).
    pub tag: bool,
    /// Consumers attach with this JMS selector.
    pub selector: Option<String>,
    /// Producer connections.
    pub producers: u32,
    /// Consumer connections.
    pub consumers: u32,
    /// Total messages per second (0: as fast as possible).
    pub rate: u64,
    /// Producers wait while this many messages are sent and not yet
    /// received (0: no limit): a closed loop, so a run measures what the
    /// consumers sustain instead of how fast a backlog grows.
    pub max_backlog: u64,
    /// The broker's process id, for its CPU and memory.
    pub broker_pid: Option<u32>,
    /// A label copied to the output line (the target's name).
    pub label: String,
}

/// One run's result: the machine-readable line.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// The label given.
    pub label: String,
    /// Messages received per second, first send to last receive.
    pub msgs_per_s: f64,
    /// End-to-end latency percentiles, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// This process's CPU per message received, microseconds.
    pub client_cpu_us_per_msg: f64,
    /// The broker's CPU per message received, microseconds (if its pid was given).
    pub broker_cpu_us_per_msg: Option<f64>,
    /// The broker's peak resident memory, KiB (if its pid was given).
    pub broker_peak_rss_kib: Option<u64>,
    /// Messages sent.
    pub sent: u64,
    /// Messages the broker accepted (unsettled runs).
    pub accepted: u64,
    /// Messages received.
    pub received: u64,
    /// Sent but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicates: u64,
    /// Received before a message its producer sent earlier (per consumer).
    pub reordered: u64,
    /// Seconds from the first send to the last receive.
    pub seconds: f64,
}

/// What the consumers share.
struct Shared {
    /// Time base of the send stamps.
    epoch: Instant,
    /// Messages received so far.
    received: AtomicU64,
    /// Messages sent so far, by all producers.
    sent: AtomicU64,
    /// Producers are done and know how many they sent.
    sent_total: AtomicU64,
    /// Set once every producer finished.
    producers_done: AtomicBool,
    /// Latencies (µs).
    histogram: Mutex<Histogram<u64>>,
    /// Every (producer, sequence) received, for loss and duplicate counts.
    seen: Mutex<Vec<u64>>,
    /// Out-of-order arrivals.
    reordered: AtomicU64,
    /// When the last message arrived.
    last_receive: Mutex<Option<Instant>>,
}

/// Runs one benchmark.
pub async fn run(options: BenchOptions) -> Result<BenchResult, ClientError> {
    let size = options.size.max(20);
    let epoch = Instant::now();
    let shared = Arc::new(Shared {
        epoch,
        received: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        sent_total: AtomicU64::new(0),
        producers_done: AtomicBool::new(false),
        histogram: Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3)
                .map_err(|e| ClientError::Protocol(e.to_string()))?,
        ),
        seen: Mutex::new(Vec::new()),
        reordered: AtomicU64::new(0),
        last_receive: Mutex::new(None),
    });
    let mut config = ClientConfig::from_url(&options.url)?;
    let mut consumer_tasks = Vec::new();
    if options.peer {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        config.addr = listener.local_addr()?.to_string();
        config.credentials = None;
        // Each producer's connection is accepted by a consumer of its own.
        let shared = Arc::clone(&shared);
        let credit = options.credit;
        let n = options.producers;
        consumer_tasks.push(tokio::spawn(async move {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (stream, _) = listener.accept().await?;
                let shared = Arc::clone(&shared);
                tasks.push(tokio::spawn(async move {
                    let consumer = ToolConsumer::accept_peer(stream, credit).await?;
                    consume(consumer, shared).await
                }));
            }
            for t in tasks {
                t.await
                    .map_err(|e| ClientError::Protocol(e.to_string()))??;
            }
            Ok::<(), ClientError>(())
        }));
    } else {
        for _ in 0..options.consumers {
            let consumer = ToolConsumer::open_selecting(
                &config,
                &options.address,
                options.credit,
                options.presettled,
                options.selector.as_deref(),
            )
            .await?;
            let shared = Arc::clone(&shared);
            consumer_tasks.push(tokio::spawn(consume(consumer, shared)));
        }
    }
    let broker_cpu_before = options.broker_pid.and_then(stats::cpu_seconds);
    let client_cpu_before = stats::cpu_seconds(std::process::id());
    let started = Instant::now();
    let mut producer_tasks = Vec::new();
    for index in 0..options.producers {
        let mut producer =
            ToolProducer::open(&config, &options.address, options.presettled).await?;
        producer.tag = options.tag || options.selector.is_some();
        producer_tasks.push(tokio::spawn(produce(
            producer,
            index,
            options.clone(),
            size,
            Arc::clone(&shared),
        )));
    }
    let mut sent = 0;
    let mut accepted = 0;
    if options.producers == 0 {
        // Consume only: a backlog filled earlier is the expected count.
        sent = options.count;
    }
    for t in producer_tasks {
        let (s, a) = t
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))??;
        sent += s;
        accepted += a;
    }
    shared.sent_total.store(sent, Ordering::SeqCst);
    shared.producers_done.store(true, Ordering::SeqCst);
    for t in consumer_tasks {
        t.await
            .map_err(|e| ClientError::Protocol(e.to_string()))??;
    }
    let received = shared.received.load(Ordering::SeqCst);
    let produce_only = options.consumers == 0 && !options.peer;
    let last = if produce_only {
        Instant::now()
    } else {
        shared.last_receive.lock().unwrap_or_else(Instant::now)
    };
    let counted = if produce_only { sent } else { received };
    let seconds = last.duration_since(started).as_secs_f64().max(1e-9);
    let client_cpu = stats::cpu_seconds(std::process::id())
        .zip(client_cpu_before)
        .map(|(a, b)| a - b);
    let broker_cpu = options
        .broker_pid
        .and_then(stats::cpu_seconds)
        .zip(broker_cpu_before)
        .map(|(a, b)| a - b);
    let per_msg = |cpu: f64| cpu * 1e6 / counted.max(1) as f64;
    let mut seen = std::mem::take(&mut *shared.seen.lock());
    seen.sort_unstable();
    let before = seen.len() as u64;
    seen.dedup();
    let unique = seen.len() as u64;
    let histogram = shared.histogram.lock();
    Ok(BenchResult {
        label: options.label.clone(),
        msgs_per_s: counted as f64 / seconds,
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        client_cpu_us_per_msg: client_cpu.map_or(0.0, per_msg),
        broker_cpu_us_per_msg: broker_cpu.map(per_msg),
        broker_peak_rss_kib: options.broker_pid.and_then(stats::peak_rss_kib),
        sent,
        accepted,
        received,
        lost: if produce_only {
            0
        } else {
            sent.saturating_sub(unique)
        },
        duplicates: before - unique,
        reordered: shared.reordered.load(Ordering::SeqCst),
        seconds,
    })
}

/// One producer: sends its share as fast as credit, window and rate allow,
/// then waits for every outcome. Returns (sent, accepted).
async fn produce(
    mut producer: ToolProducer,
    index: u32,
    o: BenchOptions,
    size: usize,
    shared: Arc<Shared>,
) -> Result<(u64, u64), ClientError> {
    let epoch = shared.epoch;
    let backlog_full = || {
        o.max_backlog > 0
            && shared
                .sent
                .load(Ordering::Relaxed)
                .saturating_sub(shared.received.load(Ordering::Relaxed))
                >= o.max_backlog
    };
    let quota = if o.count > 0 {
        o.count / u64::from(o.producers)
            + u64::from(u64::from(index) < o.count % u64::from(o.producers))
    } else {
        u64::MAX
    };
    let deadline = (o.count == 0).then(|| Instant::now() + o.duration);
    let rate = o.rate as f64 / f64::from(o.producers);
    let started = Instant::now();
    let mut body = vec![0x5au8; size];
    body[16..20].copy_from_slice(&index.to_be_bytes());
    let mut seq = 0u64;
    let group_names: Vec<String> = (0..o.groups).map(|g| format!("g{g}")).collect();
    loop {
        let done = seq >= quota || deadline.is_some_and(|d| Instant::now() >= d);
        if done {
            break;
        }
        let allowed = if rate > 0.0 {
            (started.elapsed().as_secs_f64() * rate) as u64
        } else {
            u64::MAX
        };
        let mut blocked = false;
        let full = backlog_full();
        while !full && seq < quota && seq < allowed && producer.in_flight() < o.window {
            body[0..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
            body[8..16].copy_from_slice(&seq.to_be_bytes());
            let group = (!group_names.is_empty())
                .then(|| group_names[(seq % group_names.len() as u64) as usize].as_str());
            if !producer.try_send(&body, o.durable, group) {
                blocked = true;
                break;
            }
            shared.sent.fetch_add(1, Ordering::Relaxed);
            seq += 1;
            if seq.is_multiple_of(64) {
                break;
            }
        }
        producer.flush().await?;
        let waiting = blocked || producer.in_flight() >= o.window;
        let wait = if full {
            // Consumers catch up; check again soon.
            Duration::from_micros(200)
        } else if waiting {
            Duration::from_millis(100)
        } else if seq >= allowed {
            Duration::from_micros(500)
        } else {
            Duration::ZERO
        };
        producer.poll(wait).await?;
    }
    let settle_deadline = Instant::now() + Duration::from_secs(60);
    while producer.in_flight() > 0 && Instant::now() < settle_deadline {
        producer.poll(Duration::from_millis(100)).await?;
    }
    let counts = producer.counts;
    producer.close().await?;
    Ok((counts.sent, counts.accepted))
}

/// One consumer: receives until every sent message arrived (or nothing
/// more comes for 5 s after the producers finished).
async fn consume(mut consumer: ToolConsumer, shared: Arc<Shared>) -> Result<(), ClientError> {
    let mut last_seq: Vec<u64> = Vec::new();
    let mut seen = Vec::new();
    let mut idle_since = None;
    loop {
        let mut latencies = Vec::new();
        let n = consumer
            .recv_batch(Duration::from_millis(100), |body| {
                if body.len() < 20 {
                    return;
                }
                let now = shared.epoch.elapsed().as_nanos() as u64;
                let sent_at = u64::from_be_bytes(body[0..8].try_into().unwrap_or([0; 8]));
                let seq = u64::from_be_bytes(body[8..16].try_into().unwrap_or([0; 8]));
                let producer =
                    u32::from_be_bytes(body[16..20].try_into().unwrap_or([0; 4])) as usize;
                latencies.push(now.saturating_sub(sent_at) / 1000);
                if producer >= last_seq.len() {
                    last_seq.resize(producer + 1, u64::MAX);
                }
                if last_seq[producer] != u64::MAX && seq < last_seq[producer] {
                    shared.reordered.fetch_add(1, Ordering::Relaxed);
                }
                last_seq[producer] = seq;
                seen.push((producer as u64) << 40 | seq);
            })
            .await?;
        if n > 0 {
            idle_since = None;
            *shared.last_receive.lock() = Some(Instant::now());
            let mut h = shared.histogram.lock();
            for l in latencies {
                let _ = h.record(l.max(1));
            }
            shared.received.fetch_add(n as u64, Ordering::SeqCst);
        }
        if consumer.is_closed() {
            break;
        }
        if shared.producers_done.load(Ordering::SeqCst) {
            if shared.received.load(Ordering::SeqCst) >= shared.sent_total.load(Ordering::SeqCst) {
                break;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if n == 0 && since.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
    }
    shared.seen.lock().extend(seen);
    consumer.close().await
}
