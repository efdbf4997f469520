//! The store's promise under `kill -9` (SPEC §1, §3): producers send
//! durable messages unsettled on several connections while consumers in
//! rcv-settle-mode `second` take them; the broker is killed mid-stream
//! several times and restarted on the same data directory. A ledger kept by
//! the test checks, at the end:
//! - every message a producer saw `accepted` was delivered;
//! - no message is delivered again after the broker settled its acceptance;
//! - each consumer sees each producer's messages in order (between restarts);
//! - nothing arrives that was not sent.
//!
//! Small (100-byte) and 1 MiB messages run at once, on two queues.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use common::{Broker, DEADLINE};
use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::{
    Accepted, DeliveryState, Header, Message, Outcome, Source, Target,
};
use fe2o3_amqp::types::performatives::{Attach, Disposition, Flow};
use fe2o3_amqp::types::primitives::Binary;
use fe2o3_amqp::{Connection, Session};
use ordo::amqp::client::{ClientConfig, ClientConn};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

/// How many times the broker is killed mid-stream.
const KILLS: usize = 3;

/// One queue's traffic.
#[derive(Clone, Copy)]
struct Lane {
    /// The queue.
    queue: &'static str,
    /// Producer connections.
    producers: usize,
    /// Consumer connections.
    consumers: usize,
    /// Body size in bytes.
    size: usize,
    /// Credit per consumer.
    credit: u32,
    /// Consumers (but the final one) hold every message whose sequence is a
    /// multiple of this, never settling it.
    hold_every: u64,
    /// Producer acceptances and consumer settlements each cycle must see
    /// before the broker is killed (so every kill is mid-stream).
    progress: usize,
}

const SMALL: Lane = Lane {
    queue: "crash-small",
    producers: 3,
    consumers: 2,
    size: 100,
    credit: 20,
    hold_every: 7,
    progress: 120,
};

const LARGE: Lane = Lane {
    queue: "crash-large",
    producers: 1,
    consumers: 1,
    size: 1 << 20,
    credit: 2,
    hold_every: 3,
    progress: 4,
};

/// A message's identity: (producer, sequence number). Producers are
/// numbered across lanes, so identities are unique across queues.
type Id = (usize, u64);

/// What the test knows, filled in by every task.
#[derive(Default)]
struct Ledger {
    /// Messages whose transfer the broker settled `accepted`.
    accepted: HashSet<Id>,
    /// Every message sent, settled or not (in doubt when the broker died).
    sent: HashSet<Id>,
    /// Messages delivered at least once.
    delivered: HashSet<Id>,
    /// Messages whose acceptance the broker settled (rcv-settle-mode second).
    settled: HashSet<Id>,
    /// Messages a consumer accepted and the broker had not settled when it
    /// was killed: they may come back or not.
    in_doubt: HashSet<Id>,
    /// Rule violations seen as they happened.
    violations: Vec<String>,
    /// Acceptances and settlements this cycle, per lane.
    progress: HashMap<&'static str, (usize, usize)>,
}

type Shared = Arc<(Mutex<Ledger>, Notify)>;

fn body(id: Id, size: usize) -> Vec<u8> {
    let mut body = format!("{}:{}:", id.0, id.1).into_bytes();
    body.resize(size.max(body.len()), b'x');
    body
}

fn parse_body(body: &[u8]) -> Option<Id> {
    let text = std::str::from_utf8(&body[..body.len().min(40)]).ok()?;
    let mut parts = text.split(':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Sends durable messages unsettled, one at a time, until the connection
/// fails (the broker was killed). `next` carries the sequence over cycles.
/// `killed` turns true when the test killed the broker: fe2o3's client may
/// not notice a dead peer on its own.
async fn produce(
    url: String,
    lane: Lane,
    producer: usize,
    mut next: u64,
    shared: Shared,
    mut killed: watch::Receiver<bool>,
) {
    let Ok(mut connection) = Connection::open(format!("producer-{producer}"), url.as_str()).await
    else {
        return;
    };
    let Ok(mut session) = Session::begin(&mut connection).await else {
        return;
    };
    let Ok(mut sender) = Sender::attach(&mut session, "producer", lane.queue).await else {
        return;
    };
    loop {
        let id = (producer, next);
        let message = Message::builder()
            .header(Header {
                durable: true,
                ..Default::default()
            })
            .data(Binary::from(body(id, lane.size)))
            .build();
        shared.0.lock().unwrap().sent.insert(id);
        next += 1;
        let outcome = tokio::select! {
            outcome = sender.send(message) => outcome,
            _ = killed.wait_for(|k| *k) => return,
        };
        match outcome {
            Ok(Outcome::Accepted(_)) => {
                let mut ledger = shared.0.lock().unwrap();
                ledger.accepted.insert(id);
                ledger.progress.entry(lane.queue).or_default().0 += 1;
                drop(ledger);
                shared.1.notify_waiters();
            }
            Ok(other) => {
                shared
                    .0
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("{id:?} refused: {other:?}"));
                return;
            }
            Err(_) => return,
        }
    }
}

/// A consumer in rcv-settle-mode second on Ordo's client connection: accepts
/// each message unsettled and records it as settled once the broker settles
/// that disposition. Checks order and redelivery as it goes. Returns when the
/// connection fails, or, with `until_empty`, when a drain finds nothing left.
async fn consume(url: String, lane: Lane, name: String, shared: Shared, until_empty: bool) {
    // Delivery id → message, accepted by us and not yet settled by the broker.
    let mut awaiting: HashMap<u32, Id> = HashMap::new();
    run_consumer(url, lane, &name, &shared, until_empty, &mut awaiting).await;
    shared
        .0
        .lock()
        .unwrap()
        .in_doubt
        .extend(awaiting.into_values());
}

/// The body of [`consume`]; `awaiting` is left with the acceptances the
/// broker had not settled when the connection ended.
async fn run_consumer(
    url: String,
    lane: Lane,
    name: &str,
    shared: &Shared,
    until_empty: bool,
    awaiting: &mut HashMap<u32, Id>,
) {
    let mut config = match ClientConfig::from_url(&url) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    config.container_id = name.to_string();
    let Ok(mut conn) = ClientConn::connect(&config).await else {
        return;
    };
    let attach = Attach {
        name: name.to_string(),
        handle: 0.into(),
        role: Role::Receiver,
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::Second,
        source: Some(Box::new(Source::builder().address(lane.queue).build())),
        target: Some(Box::new(Target::builder().build().into())),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: None,
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    match conn.attach_link(attach).await {
        Ok(reply) => assert_eq!(
            reply.rcv_settle_mode,
            ReceiverSettleMode::Second,
            "the broker must honour rcv-settle-mode second"
        ),
        Err(_) => return,
    }
    let mut delivery_count = 0u32;
    let mut credit = lane.credit;
    let flow = |conn: &ClientConn, delivery_count, credit, drain| Flow {
        drain,
        ..conn.flow(0, delivery_count, credit)
    };
    // Draining consumers keep one drain outstanding at a time and ask again
    // once every acceptance is settled.
    let first = flow(&conn, delivery_count, credit, until_empty);
    conn.out.frame(0, &first);
    if conn.flush().await.is_err() {
        return;
    }
    // Highest sequence seen per producer on this connection.
    let mut last: HashMap<usize, u64> = HashMap::new();
    let mut partial: Option<BytesMut> = None;
    let mut got_since_drain = false;
    let mut drain_again = false;
    loop {
        let frame = match tokio::time::timeout(DEADLINE, conn.next_frame()).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(_)) => return,
            Err(_) => panic!("{name}: nothing from the broker for {DEADLINE:?}"),
        };
        match frame.body {
            FrameBody::Transfer {
                performative,
                payload,
            } => {
                conn.next_incoming_id = conn.next_incoming_id.wrapping_add(1);
                let whole = match (partial.take(), performative.more) {
                    (None, false) => payload,
                    (None, true) => {
                        partial = Some(BytesMut::from(&payload[..]));
                        continue;
                    }
                    (Some(mut p), more) => {
                        p.extend_from_slice(&payload);
                        if more {
                            partial = Some(p);
                            continue;
                        }
                        p.freeze()
                    }
                };
                delivery_count = delivery_count.wrapping_add(1);
                credit = credit.saturating_sub(1);
                got_since_drain = true;
                let delivery_id = performative.delivery_id.expect("first frame has an id");
                let body = ordo::amqp::message::data_body(&whole).expect("a data body");
                let id = parse_body(body).expect("a body the test sent");
                {
                    let mut ledger = shared.0.lock().unwrap();
                    if body.len() != lane.size {
                        ledger.violations.push(format!(
                            "{name}: {id:?} has {} bytes, not {}",
                            body.len(),
                            lane.size
                        ));
                    }
                    if !ledger.sent.contains(&id) {
                        ledger.violations.push(format!("{name}: {id:?} never sent"));
                    }
                    if ledger.settled.contains(&id) {
                        ledger.violations.push(format!(
                            "{name}: {id:?} delivered again after the broker settled its acceptance"
                        ));
                    }
                    if let Some(&before) = last.get(&id.0) {
                        if id.1 <= before {
                            ledger.violations.push(format!(
                                "{name}: producer {}'s {} after {before}",
                                id.0, id.1
                            ));
                        }
                    }
                    ledger.delivered.insert(id);
                }
                last.insert(id.0, id.1);
                // Held messages are neither accepted nor released: they must
                // come back after the broker is killed.
                let held = !until_empty && id.1.is_multiple_of(lane.hold_every);
                if !held {
                    awaiting.insert(delivery_id, id);
                    let accept = Disposition {
                        role: Role::Receiver,
                        first: delivery_id,
                        last: None,
                        settled: false,
                        state: Some(DeliveryState::Accepted(Accepted {})),
                        batchable: false,
                    };
                    conn.out.frame(0, &accept);
                }
                if credit == 0 && !until_empty {
                    credit = lane.credit;
                    let more = flow(&conn, delivery_count, credit, false);
                    conn.out.frame(0, &more);
                }
            }
            FrameBody::Disposition(d) if d.role == Role::Sender && d.settled => {
                let mut ledger = shared.0.lock().unwrap();
                let mut id = d.first;
                loop {
                    if let Some(message) = awaiting.remove(&id) {
                        ledger.settled.insert(message);
                        ledger.progress.entry(lane.queue).or_default().1 += 1;
                    }
                    if id == d.last.unwrap_or(d.first) {
                        break;
                    }
                    id = id.wrapping_add(1);
                }
                drop(ledger);
                shared.1.notify_waiters();
                if drain_again && awaiting.is_empty() {
                    drain_again = false;
                    credit = lane.credit;
                    let more = flow(&conn, delivery_count, credit, true);
                    conn.out.frame(0, &more);
                }
            }
            FrameBody::Flow(f) => {
                conn.on_flow(&f);
                if until_empty && f.handle.is_some() && f.drain && f.link_credit == Some(0) {
                    // Our drain is complete.
                    delivery_count = f.delivery_count.unwrap_or(delivery_count);
                    credit = 0;
                    if !got_since_drain && awaiting.is_empty() {
                        // It found nothing, and every acceptance is settled:
                        // the queue is empty.
                        let _ = conn.close().await;
                        return;
                    }
                    got_since_drain = false;
                    if awaiting.is_empty() {
                        credit = lane.credit;
                        let more = flow(&conn, delivery_count, credit, true);
                        conn.out.frame(0, &more);
                    } else {
                        drain_again = true;
                    }
                }
            }
            FrameBody::Detach(_) | FrameBody::Close(_) => return,
            _ => {}
        }
        if conn.flush().await.is_err() {
            return;
        }
    }
}

/// Waits until every lane has seen `accepted` producer acceptances and
/// `settled` consumer settlements this cycle, in percent of its `progress`.
async fn wait_for_progress(shared: &Shared, lanes: &[Lane], accepted: usize, settled: usize) {
    let done = || {
        let ledger = shared.0.lock().unwrap();
        lanes.iter().all(|lane| {
            let (a, s) = ledger.progress.get(lane.queue).copied().unwrap_or((0, 0));
            a * 100 >= lane.progress * accepted && s * 100 >= lane.progress * settled
        })
    };
    tokio::time::timeout(DEADLINE * 2, async {
        loop {
            let notified = shared.1.notified();
            if done() {
                return;
            }
            notified.await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let ledger = shared.0.lock().unwrap();
        panic!(
            "no progress this cycle: {:?}; violations {:?}",
            ledger.progress, ledger.violations
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_messages_survive_kill_9_and_settled_acceptances_stay_gone() {
    let lanes = [SMALL, LARGE];
    let mut broker = Broker::start();
    let shared: Shared = Arc::default();
    // Producer numbers across lanes, and where each one's sequence is.
    let producers: Vec<(Lane, usize)> = lanes
        .iter()
        .flat_map(|lane| std::iter::repeat_n(*lane, lane.producers))
        .enumerate()
        .map(|(p, lane)| (lane, p))
        .collect();
    let mut next: Vec<u64> = vec![0; producers.len()];
    for cycle in 0..KILLS {
        shared.0.lock().unwrap().progress.clear();
        let url = broker.url();
        let (kill, killed) = watch::channel(false);
        let mut producing = JoinSet::new();
        for &(lane, p) in &producers {
            producing.spawn(produce(
                url.clone(),
                lane,
                p,
                next[p],
                Arc::clone(&shared),
                killed.clone(),
            ));
        }
        // A backlog first, so each kill leaves messages queued and in flight.
        wait_for_progress(&shared, &lanes, 100, 0).await;
        let mut consuming = JoinSet::new();
        for lane in lanes {
            for c in 0..lane.consumers {
                let name = format!("{}-consumer-{c}-cycle-{cycle}", lane.queue);
                consuming.spawn(consume(url.clone(), lane, name, Arc::clone(&shared), false));
            }
        }
        // Killed while the consumers work through it and producers go on.
        wait_for_progress(&shared, &lanes, 100, 50).await;
        broker.kill9();
        kill.send_replace(true);
        // Every task ends on its broken connection.
        tokio::time::timeout(DEADLINE, async {
            while let Some(done) = producing.join_next().await {
                done.expect("producer task");
            }
            while let Some(done) = consuming.join_next().await {
                done.expect("consumer task");
            }
        })
        .await
        .expect("clients notice the broker is gone");
        // Each producer resumes after the last message it sent.
        let ledger = shared.0.lock().unwrap();
        for (p, n) in next.iter_mut().enumerate() {
            *n = ledger
                .sent
                .iter()
                .filter(|id| id.0 == p)
                .map(|id| id.1 + 1)
                .max()
                .unwrap_or(0);
        }
        drop(ledger);
        broker.restart();
    }
    // The last run: no producers; one consumer per lane takes everything left.
    let url = broker.url();
    let mut draining = JoinSet::new();
    for lane in lanes {
        draining.spawn(consume(
            url.clone(),
            lane,
            format!("{}-final", lane.queue),
            Arc::clone(&shared),
            true,
        ));
    }
    tokio::time::timeout(DEADLINE * 2, async {
        while let Some(done) = draining.join_next().await {
            done.expect("final consumer");
        }
    })
    .await
    .expect("the queues drain");

    let ledger = shared.0.lock().unwrap();
    assert!(
        ledger.violations.is_empty(),
        "violations: {:#?}",
        ledger.violations
    );
    // Every message a producer saw accepted was consumed for good: its
    // acceptance settled by the broker, or accepted by a consumer when the
    // broker was killed (then it may or may not have come back).
    let lost: BTreeSet<&Id> = ledger
        .accepted
        .iter()
        .filter(|id| !ledger.settled.contains(id) && !ledger.in_doubt.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} accepted messages never consumed: {lost:?}",
        lost.len()
    );
    let log = broker.log();
    // One recovery per start, and the kills left messages to recover.
    let recovered: Vec<u64> = log
        .lines()
        .filter_map(|l| {
            l.split_once("store recovered ")?
                .1
                .split_whitespace()
                .find_map(|f| f.strip_prefix("messages=")?.parse().ok())
        })
        .collect();
    assert_eq!(recovered.len(), KILLS + 1, "{log}");
    assert!(
        recovered[1..].iter().all(|&n| n > 0),
        "recovered {recovered:?}"
    );
    // The ledger saw real traffic in every lane.
    for lane in lanes {
        let first = producers
            .iter()
            .find(|(l, _)| l.queue == lane.queue)
            .unwrap()
            .1;
        let accepted = ledger
            .accepted
            .iter()
            .filter(|id| id.0 >= first && id.0 < first + lane.producers)
            .count();
        assert!(
            accepted >= lane.progress * KILLS,
            "{}: {accepted}",
            lane.queue
        );
    }
}
