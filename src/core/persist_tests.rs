//! Persistence through the broker core: what is stored, what a restart
//! brings back (in order, with counts), what is never stored, paging.
//! A "restart" is a new broker and journal over the same store.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::core::queue::{ConsumerOptions, Outcome};
use crate::core::{Broker, BrokerOptions, ConsumerId, Delivery, Outbox, OutboxItem, Queue};
use crate::store::{JournalOptions, MemoryStore, Store};

/// A broker over `store` (recovering what it holds), paging past `limit`.
fn open(store: &Arc<MemoryStore>, limit: usize) -> Arc<Broker> {
    let journal = Journal::start(
        Arc::clone(store) as Arc<dyn Store>,
        JournalOptions::default(),
    );
    let options = BrokerOptions {
        persistence: Some(Persistence::new(journal, limit)),
        ..BrokerOptions::default()
    };
    Broker::open(options).expect("recovery").0
}

/// Stops a broker's journal after it wrote everything (a clean restart).
fn stop(broker: &Arc<Broker>) {
    broker.persistence().unwrap().journal().shutdown();
}

fn durable(n: u32, priority: u8) -> Arc<Message> {
    let mut m = Message::from_bare(Bytes::from(n.to_be_bytes().to_vec()));
    m.header.durable = true;
    m.header.priority = priority;
    Arc::new(m)
}

fn number(m: &Message) -> u32 {
    u32::from_be_bytes(m.bare[..4].try_into().unwrap())
}

/// Attaches a consumer with `credit` and returns what it was given.
fn consume(queue: &Queue, id: u64, credit: u32) -> (ConsumerId, Vec<Delivery>) {
    let outbox = Outbox::new();
    let consumer = ConsumerId(id);
    queue
        .attach_consumer(consumer, Arc::clone(&outbox), ConsumerOptions::default())
        .unwrap();
    queue.flow(consumer, 0, credit, false, false).unwrap();
    let mut items = Vec::new();
    outbox.take_all(&mut items);
    let deliveries = items
        .into_iter()
        .filter_map(|i| match i {
            OutboxItem::Deliver(d) => Some(d),
            OutboxItem::Flow(_) | OutboxItem::Loaded(_) => None,
        })
        .collect();
    (consumer, deliveries)
}

#[test]
fn durable_messages_come_back_in_order_and_the_rest_does_not() {
    let store = Arc::new(MemoryStore::new());
    let broker = open(&store, usize::MAX);
    let q = broker.queue("orders").unwrap();
    for (n, prio) in [(1, 4), (2, 4), (3, 9), (4, 4)] {
        assert!(q.publish(durable(n, prio)).unwrap().is_some(), "stored");
    }
    let transient = Arc::new(Message::from_bare(Bytes::from_static(b"\0\0\0\x63")));
    assert_eq!(q.publish(transient).unwrap(), None, "not stored");
    // Accept the first delivered (3, the high-priority one); fail 1 once.
    let (c, ds) = consume(&q, 1, 2);
    assert_eq!(
        ds.iter().map(|d| number(&d.message)).collect::<Vec<_>>(),
        [3, 1]
    );
    let (_, t) = q.settle(c, &[ds[0].delivery_id], Outcome::Accepted);
    assert!(t.is_some(), "the removal is stored");
    let failed = Outcome::Modified {
        delivery_failed: true,
        undeliverable_here: false,
    };
    let _ = q.settle(c, &[ds[1].delivery_id], failed);
    stop(&broker);

    let broker = open(&store, usize::MAX);
    let q = broker.existing_queue("orders").expect("recovered");
    let (_, ds) = consume(&q, 2, 10);
    let got: Vec<_> = ds
        .iter()
        .map(|d| (number(&d.message), d.delivery_count, d.first_acquirer))
        .collect();
    // The transient message is gone, the accepted one too; 1 kept its
    // failed attempt; everything recovered may have been seen before.
    assert_eq!(got, [(1, 1, false), (2, 0, false), (4, 0, false)]);
    stop(&broker);
}

#[test]
fn a_non_durable_queue_stores_nothing() {
    let store = Arc::new(MemoryStore::new());
    let broker = open(&store, usize::MAX);
    let q = match broker
        .resolve("scratch", None, &[("durable".into(), "false".into())])
        .unwrap()
    {
        crate::core::Node::Queue(q) => q,
        crate::core::Node::Topic(_) => unreachable!(),
    };
    assert_eq!(q.publish(durable(1, 4)).unwrap(), None);
    stop(&broker);
    let broker = open(&store, usize::MAX);
    assert!(broker.existing_queue("scratch").is_none());
    stop(&broker);
}

#[test]
fn a_dead_lettered_message_is_stored_in_the_dlq_before_it_leaves() {
    let store = Arc::new(MemoryStore::new());
    let broker = open(&store, usize::MAX);
    let q = broker.queue("work").unwrap();
    q.publish(durable(7, 4)).unwrap();
    let (c, ds) = consume(&q, 1, 1);
    let (_, ticket) = q.settle(c, &[ds[0].delivery_id], Outcome::Rejected(None));
    assert!(ticket.is_some());
    stop(&broker);
    let broker = open(&store, usize::MAX);
    let (_, ds) = consume(&broker.existing_queue("work").unwrap(), 2, 10);
    assert!(ds.is_empty());
    let (_, ds) = consume(&broker.existing_queue("DLQ").unwrap(), 3, 10);
    assert_eq!(ds.len(), 1);
    assert_eq!(number(&ds[0].message), 7);
    stop(&broker);
}

#[test]
fn a_durable_subscription_and_its_messages_survive() {
    let store = Arc::new(MemoryStore::new());
    let broker = open(&store, usize::MAX);
    let topic = match broker.resolve("prices", Some(crate::core::NodeKind::Topic), &[]) {
        Ok(crate::core::Node::Topic(t)) => t,
        _ => unreachable!(),
    };
    let sub = broker
        .subscribe(
            crate::core::subscriptions::Source::Topic(&topic),
            &crate::core::subscriptions::SubscriptionSpec {
                name: Some("app.sub".into()),
                durable: true,
                ..Default::default()
            },
        )
        .unwrap();
    topic.publish(durable(5, 4), &Default::default()).unwrap();
    assert_eq!(sub.stats().depth, 1);
    stop(&broker);
    let broker = open(&store, usize::MAX);
    assert!(broker.has_durable_subscription("app.sub"));
    let topic = match broker.resolve("prices", None, &[]) {
        Ok(crate::core::Node::Topic(t)) => t,
        _ => panic!("the topic is back"),
    };
    let sub = broker
        .subscribe(
            crate::core::subscriptions::Source::Topic(&topic),
            &crate::core::subscriptions::SubscriptionSpec {
                name: Some("app.sub".into()),
                durable: true,
                ..Default::default()
            },
        )
        .unwrap();
    let (_, ds) = consume(&sub, 1, 10);
    assert_eq!(ds.len(), 1);
    topic.publish(durable(6, 4), &Default::default()).unwrap();
    assert_eq!(sub.stats().unacked + sub.stats().depth, 2);
    broker.unsubscribe_durable("app.sub");
    stop(&broker);
    let broker = open(&store, usize::MAX);
    assert!(!broker.has_durable_subscription("app.sub"));
    assert!(store.queues().unwrap().len() == 1, "only the DLQ is left");
    stop(&broker);
}

#[test]
fn past_the_memory_limit_bodies_stay_on_disk_and_are_read_back() {
    let store = Arc::new(MemoryStore::new());
    let broker = open(&store, 10);
    let p = Arc::clone(broker.persistence().unwrap());
    let q = broker.queue("big").unwrap();
    for n in 0..6 {
        q.publish(durable(n, 4)).unwrap();
    }
    // Two 4-byte bodies fit under 10 bytes; the others are paged out.
    assert_eq!(p.resident(), 8);
    let (c, ds) = consume(&q, 1, 6);
    let paged: Vec<_> = ds.iter().map(|d| d.paged.is_some()).collect();
    assert_eq!(paged, [false, false, true, true, true, true]);
    let numbers: Vec<u32> = ds
        .iter()
        .map(|d| match d.paged {
            Some((queue, seq)) => number(&p.load(queue, seq).unwrap().expect("stored body")),
            None => number(&d.message),
        })
        .collect();
    assert_eq!(numbers, [0, 1, 2, 3, 4, 5]);
    let ids: Vec<u64> = ds.iter().map(|d| d.delivery_id).collect();
    let _ = q.settle(c, &ids, Outcome::Accepted);
    assert_eq!(p.resident(), 0, "accepted messages leave the gauge");
    stop(&broker);
}

#[test]
fn recovery_past_the_memory_limit_keeps_bodies_on_disk() {
    let store = Arc::new(MemoryStore::new());
    let broker = open(&store, usize::MAX);
    let q = broker.queue("big").unwrap();
    for n in 0..5 {
        q.publish(durable(n, 4)).unwrap();
    }
    stop(&broker);
    let broker = open(&store, 8);
    let p = Arc::clone(broker.persistence().unwrap());
    assert!(p.resident() <= 8);
    let (_, ds) = consume(&broker.existing_queue("big").unwrap(), 1, 5);
    let numbers: Vec<u32> = ds
        .iter()
        .map(|d| match d.paged {
            Some((queue, seq)) => number(&p.load(queue, seq).unwrap().unwrap()),
            None => number(&d.message),
        })
        .collect();
    assert_eq!(numbers, [0, 1, 2, 3, 4]);
    stop(&broker);
}

#[test]
fn a_full_disk_refuses_durable_messages_and_keeps_taking_others() {
    // A free-space floor no disk meets: the journal reports a full disk.
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::start(
        Arc::new(MemoryStore::new()) as Arc<dyn Store>,
        JournalOptions {
            watch_dir: Some(dir.path().to_path_buf()),
            min_free_bytes: u64::MAX,
            ..JournalOptions::default()
        },
    );
    let broker = Broker::open(BrokerOptions {
        persistence: Some(Persistence::new(journal, usize::MAX)),
        ..BrokerOptions::default()
    })
    .unwrap()
    .0;
    let q = broker.queue("q").unwrap();
    match q.publish(durable(1, 4)) {
        Err(crate::core::CoreError::Store { full: true, .. }) => {}
        other => panic!("expected a full-disk refusal, got {other:?}"),
    }
    assert_eq!(q.stats().depth, 0, "a refused message is not queued");
    let transient = Arc::new(Message::from_bare(Bytes::from_static(b"\0\0\0\x01")));
    assert_eq!(q.publish(transient).unwrap(), None);
    stop(&broker);
}
