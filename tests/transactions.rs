//! Transactions (SPEC §7) and strict ordering groups (SPEC §6) through the
//! real broker, with fe2o3-amqp's transaction API (`Transaction`,
//! `OwnedTransaction`) and consumers on Ordo's client connection.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::raw::{AttachOptions, RawConsumer};
use common::{Broker, DEADLINE};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::transaction::{
    Controller, OwnedTransaction, Transaction, TransactionDischarge, TransactionPosting,
    TransactionRetirement,
};
use fe2o3_amqp::types::messaging::{AmqpValue, Header, Message, Properties};
use fe2o3_amqp::{Connection, Session};
use tokio::sync::watch;

async fn open(
    url: &str,
    name: &str,
) -> (
    fe2o3_amqp::connection::ConnectionHandle<()>,
    fe2o3_amqp::session::SessionHandle<()>,
) {
    let mut connection = Connection::open(name, url).await.expect("connect");
    let session = Session::begin(&mut connection).await.expect("begin");
    (connection, session)
}

type Text = Message<AmqpValue<String>>;

fn text(body: &str) -> Text {
    Message::builder().value(body.to_string()).build()
}

fn in_group(body: &str, group: &str) -> Text {
    Message::builder()
        .properties(Properties::builder().group_id(group.to_string()).build())
        .value(body.to_string())
        .build()
}

/// Every message left on `address`, accepted, on a connection of its own.
async fn drain_all(url: &str, name: &str, address: &str) -> Vec<(String, u32)> {
    let mut c = RawConsumer::attach(url, name, address, AttachOptions::default())
        .await
        .expect("attach");
    c.credit(1000).await;
    let mut got = Vec::new();
    while let Some(r) = c.next_within(Duration::from_millis(300)).await {
        got.push((r.text(), r.delivery_count()));
        c.accept(r.delivery_id).await;
    }
    c.close().await;
    got
}

#[tokio::test]
async fn posted_messages_appear_at_commit_and_vanish_at_rollback() {
    let broker = Broker::start();
    let url = broker.url();
    let (mut connection, mut session) = open(&url, "poster").await;
    let controller = Controller::attach(&mut session, "controller")
        .await
        .unwrap();
    let mut sender = Sender::attach(&mut session, "sender", "posts")
        .await
        .unwrap();
    let mut watcher = RawConsumer::attach(&url, "watcher", "posts", AttachOptions::default())
        .await
        .unwrap();
    watcher.credit(10).await;

    let txn = Transaction::declare(&controller, None).await.unwrap();
    for n in 0..3 {
        txn.post(&mut sender, text(&format!("c{n}"))).await.unwrap();
    }
    assert!(
        watcher
            .next_within(Duration::from_millis(300))
            .await
            .is_none(),
        "posts are invisible before the commit"
    );
    txn.commit().await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let r = watcher.next().await;
        watcher.accept(r.delivery_id).await;
        got.push(r.text());
    }
    assert_eq!(got, vec!["c0", "c1", "c2"]);

    let txn = Transaction::declare(&controller, None).await.unwrap();
    txn.post(&mut sender, text("r0")).await.unwrap();
    txn.post(&mut sender, text("r1")).await.unwrap();
    txn.rollback().await.unwrap();
    assert!(watcher
        .next_within(Duration::from_millis(300))
        .await
        .is_none());
    watcher.close().await;
    controller.close().await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn accepts_in_a_transaction_apply_at_commit_and_return_in_order_at_rollback() {
    let broker = Broker::start();
    let url = broker.url();
    let (mut connection, mut session) = open(&url, "consumer").await;
    let mut sender = Sender::attach(&mut session, "sender", "acks")
        .await
        .unwrap();
    for n in 0..4 {
        sender.send(text(&format!("m{n}"))).await.unwrap();
    }
    // Exact credit: what the broker sends is what the test asked for.
    let mut receiver = Receiver::builder()
        .name("receiver")
        .source("acks")
        .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Manual)
        .attach(&mut session)
        .await
        .unwrap();
    receiver.set_credit(2).await.unwrap();
    let mut deliveries = Vec::new();
    for _ in 0..2 {
        deliveries.push(receiver.recv::<String>().await.unwrap());
    }
    let txn = OwnedTransaction::declare(&mut session, "owned", None)
        .await
        .unwrap();
    for d in &deliveries {
        txn.accept(&mut receiver, d).await.unwrap();
    }
    txn.rollback().await.unwrap();
    // Back at the head, in order, delivery-count + 1.
    receiver.set_credit(4).await.unwrap();
    let again: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(receiver.recv::<String>().await.unwrap());
        }
        v
    };
    let seen: Vec<(String, u32)> = again
        .iter()
        .map(|d| {
            (
                d.body().clone(),
                d.message().header.as_ref().map_or(0, |h| h.delivery_count),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("m0".into(), 1),
            ("m1".into(), 1),
            ("m2".into(), 0),
            ("m3".into(), 0)
        ]
    );
    let txn = OwnedTransaction::declare(&mut session, "owned-2", None)
        .await
        .unwrap();
    for d in &again {
        txn.accept(&mut receiver, d).await.unwrap();
    }
    txn.commit().await.unwrap();
    receiver.close().await.unwrap();
    sender.close().await.unwrap();
    connection.close().await.unwrap();
    assert!(
        drain_all(&url, "after", "acks").await.is_empty(),
        "committed accepts removed them"
    );
}

#[tokio::test]
async fn a_strict_group_withholds_its_next_message_until_the_commit() {
    let broker = Broker::start();
    let url = broker.url();
    let address = "strict?queue.group-ordering=strict";
    let (mut connection, mut session) = open(&url, "strict").await;
    let mut sender = Sender::attach(&mut session, "sender", address)
        .await
        .unwrap();
    for n in 1..=3 {
        sender.send(in_group(&format!("g{n}"), "g")).await.unwrap();
    }
    sender.send(in_group("h1", "h")).await.unwrap();
    let mut receiver = Receiver::attach(&mut session, "receiver", address)
        .await
        .unwrap();
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(receiver.recv::<String>().await.unwrap());
    }
    let bodies = |ds: &[fe2o3_amqp::link::delivery::Delivery<String>]| -> Vec<String> {
        ds.iter().map(|d| d.body().clone()).collect()
    };
    assert_eq!(bodies(&first), vec!["g1", "h1"]);
    // g2 waits while g1 is only accepted inside an open transaction.
    let txn = OwnedTransaction::declare(&mut session, "t1", None)
        .await
        .unwrap();
    txn.accept(&mut receiver, &first[0]).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), receiver.recv::<String>())
            .await
            .is_err(),
        "g2 must wait for the commit"
    );
    txn.rollback().await.unwrap();
    // Rolled back: g1 again, first.
    let again = receiver.recv::<String>().await.unwrap();
    assert_eq!(bodies(std::slice::from_ref(&again)), vec!["g1"]);
    assert_eq!(
        again.message().header.as_ref().map(|h| h.delivery_count),
        Some(1)
    );
    let txn = OwnedTransaction::declare(&mut session, "t2", None)
        .await
        .unwrap();
    txn.accept(&mut receiver, &again).await.unwrap();
    txn.commit().await.unwrap();
    let next = receiver.recv::<String>().await.unwrap();
    assert_eq!(bodies(std::slice::from_ref(&next)), vec!["g2"]);
    receiver.accept(&next).await.unwrap();
    receiver.accept(&first[1]).await.unwrap();
    let last = receiver.recv::<String>().await.unwrap();
    assert_eq!(bodies(std::slice::from_ref(&last)), vec!["g3"]);
    receiver.accept(&last).await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn a_connection_that_goes_with_an_open_transaction_rolls_it_back() {
    let broker = Broker::start();
    let url = broker.url();
    {
        let (mut connection, mut session) = open(&url, "setup").await;
        let mut sender = Sender::attach(&mut session, "sender", "dropped")
            .await
            .unwrap();
        sender.send(text("held")).await.unwrap();
        connection.close().await.unwrap();
    }
    let (mut connection, mut session) = open(&url, "txn-owner").await;
    let controller = Controller::attach(&mut session, "controller")
        .await
        .unwrap();
    let mut sender = Sender::attach(&mut session, "sender", "dropped")
        .await
        .unwrap();
    let mut receiver = Receiver::attach(&mut session, "receiver", "dropped")
        .await
        .unwrap();
    let held = receiver.recv::<String>().await.unwrap();
    let txn = Transaction::declare(&controller, None).await.unwrap();
    txn.accept(&mut receiver, &held).await.unwrap();
    txn.post(&mut sender, text("never")).await.unwrap();
    // The client must not roll back itself on the way out: the broker does.
    std::mem::forget(txn);
    let _ = tokio::time::timeout(DEADLINE, connection.close()).await;
    assert_eq!(
        drain_all(&url, "after", "dropped").await,
        vec![("held".to_string(), 1)],
        "the accept rolled back (held is back, count + 1), the post discarded"
    );
}

#[tokio::test]
async fn two_transactions_on_one_connection_are_independent() {
    let broker = Broker::start();
    let url = broker.url();
    let (mut connection, mut session) = open(&url, "two").await;
    let controller = Controller::attach(&mut session, "controller")
        .await
        .unwrap();
    let mut sender = Sender::attach(&mut session, "sender", "two").await.unwrap();
    let keep = Transaction::declare(&controller, None).await.unwrap();
    let lose = Transaction::declare(&controller, None).await.unwrap();
    keep.post(&mut sender, text("kept")).await.unwrap();
    lose.post(&mut sender, text("lost")).await.unwrap();
    lose.rollback().await.unwrap();
    keep.commit().await.unwrap();
    controller.close().await.unwrap();
    connection.close().await.unwrap();
    let got = drain_all(&url, "after", "two").await;
    assert_eq!(got, vec![("kept".to_string(), 0)]);
}

/// A transaction id nobody declared.
struct Undeclared(fe2o3_amqp::types::transaction::TransactionId);

impl fe2o3_amqp::transaction::TransactionBase for Undeclared {
    fn txn_id(&self) -> &fe2o3_amqp::types::transaction::TransactionId {
        &self.0
    }
}

impl TransactionPosting for Undeclared {}

#[tokio::test]
async fn an_unknown_transaction_is_refused_with_unknown_id() {
    let broker = Broker::start();
    let url = broker.url();
    let (mut connection, mut session) = open(&url, "unknown").await;
    let mut sender = Sender::attach(&mut session, "sender", "unknown")
        .await
        .unwrap();
    let fake = Undeclared(fe2o3_amqp::types::primitives::Binary::from(vec![9u8; 8]));
    let outcome = tokio::time::timeout(DEADLINE, fake.post(&mut sender, text("orphan")))
        .await
        .expect("an answer");
    let described = format!("{outcome:?}");
    assert!(
        described.contains("UnknownId") || described.contains("unknown-id"),
        "{described}"
    );
    connection.close().await.unwrap();
    assert!(drain_all(&url, "after", "unknown").await.is_empty());
}

/// kill -9 during a stream of commits of five durable messages each: after
/// the restart every transaction is there entirely or not at all, and every
/// commit the broker acknowledged is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_are_all_or_nothing_across_kill_9() {
    const PER_TXN: usize = 5;
    let mut broker = Broker::start();
    let url = broker.url();
    let (kill, mut killed) = watch::channel(false);
    let (progress, mut committed) = watch::channel(0usize);
    let committer = tokio::spawn(async move {
        let (_connection, mut session) = open(&url, "committer").await;
        let controller = Controller::attach(&mut session, "controller")
            .await
            .unwrap();
        let mut sender = Sender::attach(&mut session, "sender", "txn-crash")
            .await
            .unwrap();
        let mut acknowledged = Vec::new();
        for t in 0u32.. {
            let work = async {
                let txn = Transaction::declare(&controller, None).await.ok()?;
                for n in 0..PER_TXN {
                    let m = Message::builder()
                        .header(Header {
                            durable: true,
                            ..Default::default()
                        })
                        .value(format!("{t}:{n}"))
                        .build();
                    txn.post(&mut sender, m).await.ok()?;
                }
                txn.commit().await.ok()
            };
            let done = tokio::select! {
                done = work => done,
                _ = killed.wait_for(|k| *k) => None,
            };
            match done {
                Some(()) => {
                    acknowledged.push(t);
                    progress.send_replace(acknowledged.len());
                }
                None => return acknowledged,
            }
        }
        acknowledged
    });
    // Killed mid-stream, once a good number of commits went through.
    tokio::time::timeout(DEADLINE, committed.wait_for(|n| *n >= 20))
        .await
        .expect("commits in time")
        .expect("committer alive");
    broker.kill9();
    kill.send_replace(true);
    let acknowledged = tokio::time::timeout(DEADLINE, committer)
        .await
        .expect("committer stops")
        .expect("committer task");
    assert!(
        acknowledged.len() >= 10,
        "only {} commits before the kill",
        acknowledged.len()
    );
    broker.restart();
    let got = drain_all(&broker.url(), "after", "txn-crash").await;
    let mut per_txn: BTreeMap<u32, usize> = BTreeMap::new();
    for (body, _) in &got {
        let t: u32 = body.split(':').next().unwrap().parse().unwrap();
        *per_txn.entry(t).or_default() += 1;
    }
    for (t, n) in &per_txn {
        assert_eq!(*n, PER_TXN, "transaction {t} is partly there");
    }
    for t in &acknowledged {
        assert!(per_txn.contains_key(t), "acknowledged commit {t} lost");
    }
}
