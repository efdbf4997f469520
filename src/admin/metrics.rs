//! Prometheus metrics, read from the broker at each scrape (no counters of
//! their own: the queues, registry and journal keep them).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{AdminState, QueueInfo};
use crate::store::{BATCH_BUCKETS, SYNC_BUCKETS_US};

pub(super) async fn metrics(State(state): State<AdminState>) -> Response {
    let mut text = String::new();
    let collector = Metrics {
        state: state.clone(),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(collector));
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The metrics, read from the broker at each scrape.
struct Metrics {
    state: AdminState,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// A per-queue metric: name, help, counter or gauge, and its value.
type QueueMetric = (&'static str, &'static str, bool, fn(&QueueInfo) -> u64);

const QUEUE_METRICS: &[QueueMetric] = &[
    (
        "ordo_queue_messages",
        "Messages waiting in the queue.",
        false,
        |q| q.messages as u64,
    ),
    (
        "ordo_queue_bytes",
        "Bytes of the messages waiting.",
        false,
        |q| q.bytes as u64,
    ),
    (
        "ordo_queue_unsettled",
        "Deliveries awaiting an outcome.",
        false,
        |q| q.unsettled as u64,
    ),
    ("ordo_queue_consumers", "Attached consumers.", false, |q| {
        q.consumers as u64
    }),
    ("ordo_queue_groups", "Live message groups.", false, |q| {
        q.groups as u64
    }),
    (
        "ordo_queue_held_groups",
        "Groups held at a poison message.",
        false,
        |q| q.held_groups as u64,
    ),
    (
        "ordo_queue_exclusive_active",
        "1 when an exclusive consumer is active.",
        false,
        |q| u64::from(q.active_consumer.is_some()),
    ),
    (
        "ordo_queue_enqueued",
        "Messages put on the queue.",
        true,
        |q| q.enqueued,
    ),
    (
        "ordo_queue_delivered",
        "Deliveries to consumers, redeliveries included.",
        true,
        |q| q.delivered,
    ),
    ("ordo_queue_redelivered", "Redeliveries.", true, |q| {
        q.redelivered
    }),
    (
        "ordo_queue_acked",
        "Messages consumed for good.",
        true,
        |q| q.acked,
    ),
    (
        "ordo_queue_dead_lettered",
        "Messages moved to the dead-letter address.",
        true,
        |q| q.dead_lettered,
    ),
    ("ordo_queue_expired", "Messages expired.", true, |q| {
        q.expired
    }),
    (
        "ordo_queue_oldest_message_age_seconds",
        "Seconds the oldest waiting message has waited (0: none waits).",
        false,
        |q| q.oldest_message_age_ms.unwrap_or(0) / 1000,
    ),
];

/// A histogram of the store's, from the journal's buckets.
struct StoreHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl std::fmt::Debug for StoreHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreHistogram")
    }
}

impl EncodeMetric for StoreHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<Vec<(String, String)>>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl prometheus_client::collector::Collector for Metrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let broker = &self.state.ctx.broker;
        let queues: Vec<QueueInfo> = broker.queues().iter().map(|q| q.info()).collect();
        for (name, help, counter, value) in QUEUE_METRICS {
            if *counter {
                let mut family = encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    ConstCounter::new(0u64).metric_type(),
                )?;
                for q in &queues {
                    let labels = vec![("queue".to_owned(), q.name.clone())];
                    ConstCounter::new(value(q)).encode(family.encode_family(&labels)?)?;
                }
            } else {
                let mut family = encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    ConstGauge::new(0i64).metric_type(),
                )?;
                for q in &queues {
                    let labels = vec![("queue".to_owned(), q.name.clone())];
                    let v = i64::try_from(value(q)).unwrap_or(i64::MAX);
                    ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let gauge = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64| {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        let counter = |encoder: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
        };
        let connections = self.state.ctx.connections.load(Ordering::Relaxed);
        gauge(
            &mut encoder,
            "ordo_connections",
            "Open connections (handshakes included).",
            connections as i64,
        )?;
        let (sessions, links) = self.state.ctx.registry.totals();
        gauge(
            &mut encoder,
            "ordo_sessions",
            "Sessions of open connections.",
            sessions as i64,
        )?;
        gauge(
            &mut encoder,
            "ordo_links",
            "Links of open connections (producers, consumers, coordinators).",
            links as i64,
        )?;
        gauge(&mut encoder, "ordo_queues", "Queues.", queues.len() as i64)?;
        gauge(
            &mut encoder,
            "ordo_topics",
            "Topics.",
            broker.topic_names().len() as i64,
        )?;
        gauge(
            &mut encoder,
            "ordo_memory_bytes",
            "Bytes of queued messages in memory.",
            broker.resident_bytes() as i64,
        )?;
        let stats = self.state.journal.stats();
        counter(
            &mut encoder,
            "ordo_store_batches",
            "Group-commit batches written.",
            stats.batches,
        )?;
        counter(
            &mut encoder,
            "ordo_store_records",
            "Records written (average batch size: records / batches).",
            stats.records,
        )?;
        counter(
            &mut encoder,
            "ordo_store_syncs",
            "fsyncs of the store.",
            stats.syncs,
        )?;
        counter(
            &mut encoder,
            "ordo_store_sync_microseconds",
            "Time spent in fsync (average latency: this / syncs).",
            stats.sync_us,
        )?;
        let bounds = SYNC_BUCKETS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain([f64::INFINITY]);
        let histogram = StoreHistogram {
            sum: stats.sync_us as f64 / 1e6,
            count: stats.syncs,
            buckets: bounds.zip(stats.sync_buckets).collect(),
        };
        histogram.encode(encoder.encode_descriptor(
            "ordo_store_sync_seconds",
            "fsync latency of the store.",
            None,
            histogram.metric_type(),
        )?)?;
        let bounds = BATCH_BUCKETS
            .iter()
            .map(|&n| n as f64)
            .chain([f64::INFINITY]);
        let batches = StoreHistogram {
            sum: stats.records as f64,
            count: stats.batches,
            buckets: bounds.zip(stats.batch_buckets).collect(),
        };
        batches.encode(encoder.encode_descriptor(
            "ordo_store_batch_records",
            "Records per group-commit batch.",
            None,
            batches.metric_type(),
        )?)?;
        Ok(())
    }
}
