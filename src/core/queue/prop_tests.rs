//! Randomized runs of the queue state machine (proptest): consumers attach
//! and detach, grant credit and settle in random orders while grouped and
//! ungrouped messages arrive. After every step the invariants of SPEC §4–§5
//! are checked against a model of what must be true:
//! - never more deliveries than credit;
//! - a group's next delivery is its oldest queued message (its head), so
//!   a redelivered message may repeat but never skips back past a later one;
//! - a group's deliveries in flight are all held by one consumer;
//! - on an exclusive queue only the active consumer receives;
//! - on a strict queue a group has at most one delivery in flight, a
//!   delivery locked to a transaction included;
//! - a transaction's outcomes apply at its commit; its rollback puts the
//!   messages back (and they are then the next of their group);
//! - nothing is lost and nothing is delivered twice beyond redeliveries:
//!   at the end every message is accepted exactly once.
//!
//! And one property the replicated log of clustering relies on: a queue's
//! decisions are a pure function of the commands it is given and the time
//! passed in (no clock, randomness or I/O inside), so the same sequence
//! applied twice to fresh queues yields the same actions, in the same order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::core::settings::QueueSettings;

/// One random step.
#[derive(Debug, Clone)]
enum Op {
    Attach(u64, i32),
    Detach(u64),
    Credit(u64, u32),
    Enqueue(Option<u8>),
    Settle(usize, u8),
    /// A transactional outcome for an in-flight delivery.
    TxnSettle(usize, u8),
    Commit,
    Rollback,
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0u64..4, 0i32..3).prop_map(|(c, p)| Op::Attach(c, p)),
        1 => (0u64..4).prop_map(Op::Detach),
        3 => (0u64..4, 0u32..6).prop_map(|(c, n)| Op::Credit(c, n)),
        4 => proptest::option::weighted(0.8, 0u8..5).prop_map(Op::Enqueue),
        4 => (0usize..64, 0u8..4).prop_map(|(i, o)| Op::Settle(i, o)),
        2 => (0usize..64, 0u8..4).prop_map(|(i, o)| Op::TxnSettle(i, o)),
        1 => Just(Op::Commit),
        1 => Just(Op::Rollback),
        1 => Just(Op::Tick),
    ]
}

/// What the test knows about the queue.
#[derive(Default)]
struct Model {
    /// Queued messages per group (None: ungrouped), by sequence.
    queued: BTreeMap<Option<u8>, BTreeSet<u32>>,
    /// Deliveries in flight: delivery id → (consumer, group, body).
    inflight: HashMap<u64, (u64, Option<u8>, u32)>,
    /// In-flight deliveries locked to the open transaction, with the
    /// outcome its commit applies.
    locked: HashMap<u64, Outcome>,
    /// Credit each attached consumer has, as the queue should see it.
    credit: HashMap<u64, u32>,
    /// Link delivery count of each attached consumer.
    delivery_count: HashMap<u64, u32>,
    /// Accepted bodies, with how many times.
    accepted: BTreeMap<u32, u32>,
    /// Messages enqueued.
    sent: u32,
    /// Group of each body.
    group_of: HashMap<u32, Option<u8>>,
    /// Every action the queue returned, in order, as text.
    transcript: Vec<String>,
}

fn message(n: u32, group: Option<u8>) -> Arc<Message> {
    let mut m = Message::from_bare(Bytes::from(n.to_be_bytes().to_vec()));
    if let Some(g) = group {
        m.routing = Some(Box::new(crate::core::RoutingFields {
            group_id: Some(Bytes::from(format!("g{g}"))),
            ..Default::default()
        }));
    }
    Arc::new(m)
}

impl Model {
    /// Checks every delivery in `actions` against the model and records it.
    fn observe(
        &mut self,
        q: &QueueState,
        actions: &mut Vec<Action>,
        exclusive: bool,
        strict: bool,
    ) {
        self.transcript
            .extend(actions.iter().map(|a| format!("{a:?}")));
        for a in actions.drain(..) {
            let Action::Deliver(d) = a else { continue };
            let body = u32::from_be_bytes(d.message.bare[..4].try_into().unwrap());
            let consumer = d.consumer.0;
            let group = self.group_of[&body];
            let credit = self
                .credit
                .get_mut(&consumer)
                .expect("delivered to an attached consumer");
            assert!(*credit > 0, "delivery beyond credit to {consumer}");
            *credit -= 1;
            *self.delivery_count.get_mut(&consumer).unwrap() += 1;
            let queued = self.queued.get_mut(&group).unwrap();
            if group.is_some() {
                assert_eq!(
                    queued.first().copied(),
                    Some(body),
                    "group {group:?}: {body} delivered while an earlier message waits"
                );
                let holders: BTreeSet<u64> = self
                    .inflight
                    .values()
                    .filter(|(_, g, _)| *g == group)
                    .map(|(c, _, _)| *c)
                    .collect();
                assert!(
                    holders.is_empty() || holders == BTreeSet::from([consumer]),
                    "group {group:?} in flight at {holders:?} and now at {consumer}"
                );
                if strict && !d.settled {
                    assert!(
                        holders.is_empty(),
                        "strict group {group:?}: a second delivery in flight"
                    );
                }
            }
            assert!(queued.remove(&body), "{body} delivered but not queued");
            if exclusive {
                assert_eq!(
                    q.active_consumer(),
                    Some(d.consumer),
                    "only the active consumer receives"
                );
                let others: Vec<u64> = self
                    .inflight
                    .values()
                    .map(|(c, _, _)| *c)
                    .filter(|c| *c != consumer)
                    .collect();
                assert!(
                    others.is_empty(),
                    "{consumer} receives while {others:?} hold deliveries"
                );
            }
            if d.settled {
                // Pre-settled: gone for good.
                *self.accepted.entry(body).or_default() += 1;
            } else {
                self.inflight.insert(d.delivery_id, (consumer, group, body));
            }
        }
    }

    /// A message came back to the queue.
    fn back(&mut self, body: u32) {
        let group = self.group_of[&body];
        self.queued.entry(group).or_default().insert(body);
    }
}

fn outcome_of(o: u8) -> Outcome {
    match o {
        0 | 1 => Outcome::Accepted,
        2 => Outcome::Released,
        _ => Outcome::Modified {
            delivery_failed: true,
            undeliverable_here: false,
        },
    }
}

/// Runs `ops` against a fresh queue, checking the model after each step;
/// returns the transcript of the queue's actions.
fn run(ops: Vec<Op>, settings: QueueSettings, exclusive: bool) -> Vec<String> {
    let strict = settings.group_ordering == crate::core::settings::GroupOrdering::Strict;
    let mut q = QueueState::new("q", settings);
    let mut m = Model::default();
    let mut a = Vec::new();
    // Consumer slots of the ops → the attached consumer's id: every attach
    // gets a new id, as the broker gives every link one.
    let mut slots: HashMap<u64, u64> = HashMap::new();
    let mut next_id = 100;
    for op in ops {
        let op = match op {
            Op::Attach(slot, priority) => {
                if slots.contains_key(&slot) {
                    continue;
                }
                next_id += 1;
                slots.insert(slot, next_id);
                Op::Attach(next_id, priority)
            }
            Op::Detach(slot) => match slots.remove(&slot) {
                Some(id) => Op::Detach(id),
                None => continue,
            },
            Op::Credit(slot, n) => match slots.get(&slot) {
                Some(&id) => Op::Credit(id, n),
                None => continue,
            },
            other => other,
        };
        match op {
            Op::Attach(c, priority) => {
                let options = ConsumerOptions {
                    priority,
                    exclusive,
                    ..Default::default()
                };
                q.attach_consumer(ConsumerId(c), options, &mut a).unwrap();
                m.credit.insert(c, 0);
                m.delivery_count.insert(c, 0);
            }
            Op::Detach(c) => {
                if m.credit.remove(&c).is_none() {
                    continue;
                }
                m.delivery_count.remove(&c);
                // Deliveries locked to the transaction stay with it.
                let mine: Vec<u64> = m
                    .inflight
                    .iter()
                    .filter(|(d, (holder, _, _))| *holder == c && !m.locked.contains_key(d))
                    .map(|(d, _)| *d)
                    .collect();
                for d in mine {
                    let (_, _, body) = m.inflight.remove(&d).unwrap();
                    m.back(body);
                }
                q.remove_consumer(ConsumerId(c), &mut a);
            }
            Op::Credit(c, n) => {
                let Some(dc) = m.delivery_count.get(&c).copied() else {
                    continue;
                };
                m.credit.insert(c, n);
                q.flow(ConsumerId(c), dc, n, false, false, &mut a).unwrap();
            }
            Op::Enqueue(group) => {
                let body = m.sent;
                m.sent += 1;
                m.group_of.insert(body, group);
                m.queued.entry(group).or_default().insert(body);
                q.enqueue(message(body, group), &mut a).unwrap();
            }
            Op::Settle(i, outcome) => {
                let mut ids: Vec<u64> = m
                    .inflight
                    .keys()
                    .copied()
                    .filter(|d| !m.locked.contains_key(d))
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                ids.sort_unstable();
                let d = ids[i % ids.len()];
                let (holder, _, body) = m.inflight.remove(&d).unwrap();
                let outcome = outcome_of(outcome);
                if outcome == Outcome::Accepted {
                    *m.accepted.entry(body).or_default() += 1;
                } else {
                    m.back(body);
                }
                q.settle(ConsumerId(holder), d, outcome, &mut a).unwrap();
            }
            Op::TxnSettle(i, outcome) => {
                let mut ids: Vec<u64> = m
                    .inflight
                    .iter()
                    .filter(|(d, (holder, _, _))| {
                        !m.locked.contains_key(d) && m.credit.contains_key(holder)
                    })
                    .map(|(d, _)| *d)
                    .collect();
                if ids.is_empty() {
                    continue;
                }
                ids.sort_unstable();
                let d = ids[i % ids.len()];
                let holder = m.inflight[&d].0;
                q.lock_to_transaction(ConsumerId(holder), d).unwrap();
                m.locked.insert(d, outcome_of(outcome));
            }
            Op::Commit => {
                let mut locked: Vec<(u64, Outcome)> = m.locked.drain().collect();
                locked.sort_unstable_by_key(|(d, _)| *d);
                for (d, outcome) in &locked {
                    let (_, _, body) = m.inflight.remove(d).unwrap();
                    if *outcome == Outcome::Accepted {
                        *m.accepted.entry(body).or_default() += 1;
                    } else {
                        m.back(body);
                    }
                }
                q.commit_retirements(&locked, &mut a);
            }
            Op::Rollback => {
                let mut locked: Vec<u64> = m.locked.drain().map(|(d, _)| d).collect();
                locked.sort_unstable();
                for d in &locked {
                    let (_, _, body) = m.inflight.remove(d).unwrap();
                    m.back(body);
                }
                q.roll_back_retirements(&locked, &mut a);
            }
            Op::Tick => {
                q.set_now(q.now + 1_000);
                q.tick(&mut a);
            }
        }
        m.observe(&q, &mut a, exclusive, strict);
    }
    // The transaction rolls back; everyone leaves; one consumer takes and
    // accepts what is left.
    let mut locked: Vec<u64> = m.locked.drain().map(|(d, _)| d).collect();
    locked.sort_unstable();
    for d in &locked {
        let (_, _, body) = m.inflight.remove(d).unwrap();
        m.back(body);
    }
    q.roll_back_retirements(&locked, &mut a);
    m.observe(&q, &mut a, exclusive, strict);
    let mut attached: Vec<u64> = m.credit.keys().copied().collect();
    attached.sort_unstable();
    for c in attached {
        let mine: Vec<u64> = m
            .inflight
            .iter()
            .filter(|(_, (holder, _, _))| *holder == c)
            .map(|(d, _)| *d)
            .collect();
        for d in mine {
            let (_, _, body) = m.inflight.remove(&d).unwrap();
            m.back(body);
        }
        m.credit.remove(&c);
        q.remove_consumer(ConsumerId(c), &mut a);
        m.observe(&q, &mut a, exclusive, strict);
    }
    let last = 99;
    q.attach_consumer(ConsumerId(last), ConsumerOptions::default(), &mut a)
        .unwrap();
    m.credit.insert(last, u32::MAX / 2);
    m.delivery_count.insert(last, 0);
    q.flow(ConsumerId(last), 0, u32::MAX / 2, false, false, &mut a)
        .unwrap();
    m.observe(&q, &mut a, false, false);
    // Accept until nothing is left (a strict group gives one at a time).
    while !m.inflight.is_empty() {
        let mut ids: Vec<u64> = m.inflight.keys().copied().collect();
        ids.sort_unstable();
        for d in ids {
            let (_, _, body) = m.inflight.remove(&d).unwrap();
            *m.accepted.entry(body).or_default() += 1;
            q.settle(ConsumerId(last), d, Outcome::Accepted, &mut a)
                .unwrap();
            m.observe(&q, &mut a, false, strict);
        }
    }
    assert_eq!(q.depth() + q.unacked(), 0, "messages left behind");
    let once: Vec<u32> = (0..m.sent).collect();
    let accepted: Vec<u32> = m.accepted.keys().copied().collect();
    assert_eq!(accepted, once, "every message accepted");
    assert!(
        m.accepted.values().all(|&n| n == 1),
        "a message accepted twice"
    );
    m.transcript
}

fn unlimited() -> QueueSettings {
    QueueSettings {
        max_delivery_attempts: 0,
        ..Default::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn groups_keep_order_and_one_owner(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops, unlimited(), false);
    }

    #[test]
    fn exclusive_queues_have_one_receiver(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops, unlimited(), true);
    }

    #[test]
    fn groups_past_max_groups_keep_order(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops, QueueSettings { max_groups: 2, ..unlimited() }, false);
    }

    #[test]
    fn strict_groups_have_one_delivery_in_flight(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops, QueueSettings { group_ordering: crate::core::settings::GroupOrdering::Strict, ..unlimited() }, false);
    }

    #[test]
    fn decisions_are_a_pure_function_of_commands_and_time(ops in proptest::collection::vec(op(), 1..200)) {
        let strict = QueueSettings { group_ordering: crate::core::settings::GroupOrdering::Strict, max_groups: 2, ..unlimited() };
        for (settings, exclusive) in [(unlimited(), false), (strict, false), (unlimited(), true)] {
            let first = run(ops.clone(), settings.clone(), exclusive);
            let again = run(ops.clone(), settings, exclusive);
            prop_assert!(!first.is_empty() || ops.iter().all(|o| !matches!(o, Op::Enqueue(_))));
            prop_assert_eq!(first, again);
        }
    }

    #[test]
    fn groups_forgotten_at_once_keep_order(ops in proptest::collection::vec(op(), 1..200)) {
        run(ops, QueueSettings { group_idle_timeout: std::time::Duration::ZERO, ..unlimited() }, false);
    }
}
