//! Strict ordering groups (SPEC §6) and deliveries locked to transactions
//! (SPEC §7) in the queue state machine, with no runtime.

use super::*;
use bytes::Bytes;

use crate::core::settings::{GroupOrdering, PoisonPolicy, QueueSettings};

const A: ConsumerId = ConsumerId(1);
const B: ConsumerId = ConsumerId(2);

fn grouped(n: u32, group: &str, priority: u8) -> Arc<Message> {
    let mut m = Message::from_bare(Bytes::from(n.to_be_bytes().to_vec()));
    m.header.priority = priority;
    m.routing = Some(Box::new(crate::core::RoutingFields {
        group_id: Some(Bytes::from(group.to_string())),
        ..Default::default()
    }));
    Arc::new(m)
}

fn plain(n: u32) -> Arc<Message> {
    Arc::new(Message::from_bare(Bytes::from(n.to_be_bytes().to_vec())))
}

/// (consumer, delivery id, body, delivery count) of each delivery.
fn delivered(actions: &mut Vec<Action>) -> Vec<(u64, u64, u32, u32)> {
    actions
        .drain(..)
        .filter_map(|a| match a {
            Action::Deliver(d) => Some((
                d.consumer.0,
                d.delivery_id,
                u32::from_be_bytes(d.message.bare[..4].try_into().expect("body")),
                d.delivery_count,
            )),
            _ => None,
        })
        .collect()
}

fn bodies(got: &[(u64, u64, u32, u32)]) -> Vec<u32> {
    got.iter().map(|g| g.2).collect()
}

fn strict() -> QueueState {
    QueueState::new(
        "q",
        QueueSettings {
            group_ordering: GroupOrdering::Strict,
            ..Default::default()
        },
    )
}

fn credit(q: &mut QueueState, id: ConsumerId, n: u32, a: &mut Vec<Action>) {
    let dc = q.consumers[q.consumer_index(id).expect("attached")].delivery_count;
    q.flow(id, dc, n, false, false, a).unwrap();
}

#[test]
fn a_strict_group_has_one_delivery_out_and_others_flow() {
    let mut q = strict();
    let mut a = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    credit(&mut q, A, 10, &mut a);
    for n in 0..3 {
        q.enqueue(grouped(n, "g", 4), &mut a).unwrap();
    }
    q.enqueue(grouped(10, "h", 4), &mut a).unwrap();
    q.enqueue(plain(20), &mut a).unwrap();
    q.enqueue(plain(21), &mut a).unwrap();
    let got = delivered(&mut a);
    // g's head, h's head, and the ungrouped ones (not gated).
    assert_eq!(bodies(&got), vec![0, 10, 20, 21]);
    q.settle(A, got[0].1, Outcome::Accepted, &mut a).unwrap();
    assert_eq!(bodies(&delivered(&mut a)), vec![1]);
}

#[test]
fn a_released_strict_message_is_the_next_one_delivered() {
    let mut q = strict();
    let mut a = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    credit(&mut q, A, 10, &mut a);
    for n in 0..3 {
        q.enqueue(grouped(n, "g", 4), &mut a).unwrap();
    }
    let first = delivered(&mut a);
    q.settle(A, first[0].1, Outcome::Accepted, &mut a).unwrap();
    let second = delivered(&mut a);
    let failed = Outcome::Modified {
        delivery_failed: true,
        undeliverable_here: false,
    };
    q.settle(A, second[0].1, failed, &mut a).unwrap();
    let again = delivered(&mut a);
    // 0, 1, 1, 2: never 0, 2, 1.
    assert_eq!((again[0].2, again[0].3), (1, 1));
    q.settle(A, again[0].1, Outcome::Accepted, &mut a).unwrap();
    assert_eq!(bodies(&delivered(&mut a)), vec![2]);
}

#[test]
fn priority_does_not_reorder_a_strict_group() {
    let mut q = strict();
    let mut a = Vec::new();
    q.enqueue(grouped(0, "g", 1), &mut a).unwrap();
    q.enqueue(grouped(1, "g", 9), &mut a).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    credit(&mut q, A, 10, &mut a);
    let got = delivered(&mut a);
    assert_eq!(bodies(&got), vec![0]);
    q.settle(A, got[0].1, Outcome::Accepted, &mut a).unwrap();
    assert_eq!(bodies(&delivered(&mut a)), vec![1]);
}

#[test]
fn a_presettled_consumer_on_a_strict_queue_is_not_gated() {
    let mut q = strict();
    let mut a = Vec::new();
    for n in 0..3 {
        q.enqueue(grouped(n, "g", 4), &mut a).unwrap();
    }
    q.add_consumer(
        A,
        ConsumerOptions {
            presettled: true,
            ..Default::default()
        },
    );
    credit(&mut q, A, 10, &mut a);
    assert_eq!(bodies(&delivered(&mut a)), vec![0, 1, 2]);
}

#[test]
fn the_next_strict_message_waits_for_the_commit_of_a_transactional_accept() {
    let mut q = strict();
    let mut a = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    credit(&mut q, A, 10, &mut a);
    q.enqueue(grouped(0, "g", 4), &mut a).unwrap();
    q.enqueue(grouped(1, "g", 4), &mut a).unwrap();
    let got = delivered(&mut a);
    q.lock_to_transaction(A, got[0].1).unwrap();
    // The consumer's own settlement cannot bypass the transaction.
    assert!(q.settle(A, got[0].1, Outcome::Accepted, &mut a).is_err());
    assert!(delivered(&mut a).is_empty(), "1 waits for the commit");
    q.commit_retirement(got[0].1, Outcome::Accepted, &mut a);
    assert_eq!(bodies(&delivered(&mut a)), vec![1]);
    assert_eq!(q.depth() + q.unacked(), 1);
}

#[test]
fn a_rollback_puts_the_message_back_first_with_its_count_raised() {
    let mut q = strict();
    let mut a = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    credit(&mut q, A, 10, &mut a);
    q.enqueue(grouped(0, "g", 4), &mut a).unwrap();
    q.enqueue(grouped(1, "g", 4), &mut a).unwrap();
    let got = delivered(&mut a);
    q.lock_to_transaction(A, got[0].1).unwrap();
    q.roll_back_retirement(got[0].1, &mut a);
    let again = delivered(&mut a);
    assert_eq!((again[0].2, again[0].3), (0, 1));
}

#[test]
fn locked_deliveries_stay_when_their_consumer_goes_and_the_group_waits() {
    let mut q = strict();
    let mut a = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    credit(&mut q, A, 10, &mut a);
    q.enqueue(grouped(0, "g", 4), &mut a).unwrap();
    q.enqueue(grouped(1, "g", 4), &mut a).unwrap();
    let got = delivered(&mut a);
    q.lock_to_transaction(A, got[0].1).unwrap();
    q.remove_consumer(A, &mut a);
    q.add_consumer(B, ConsumerOptions::default());
    credit(&mut q, B, 10, &mut a);
    assert!(
        delivered(&mut a).is_empty(),
        "the group waits for the transaction"
    );
    q.roll_back_retirement(got[0].1, &mut a);
    let again = delivered(&mut a);
    assert_eq!((again[0].0, again[0].2, again[0].3), (2, 0, 1));
}

#[test]
fn a_non_strict_group_of_a_gone_owner_waits_for_its_locked_deliveries() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    credit(&mut q, A, 1, &mut a);
    q.enqueue(grouped(0, "g", 4), &mut a).unwrap();
    q.enqueue(grouped(1, "g", 4), &mut a).unwrap();
    let got = delivered(&mut a);
    q.lock_to_transaction(A, got[0].1).unwrap();
    q.remove_consumer(A, &mut a);
    q.add_consumer(B, ConsumerOptions::default());
    credit(&mut q, B, 10, &mut a);
    // 1 must not overtake 0, which a rollback would put back first.
    assert!(delivered(&mut a).is_empty());
    q.roll_back_retirement(got[0].1, &mut a);
    let again = delivered(&mut a);
    assert_eq!(bodies(&again), vec![0, 1]);
    assert_eq!(again[0].3, 1);
}

#[test]
fn an_exclusive_queue_waits_for_the_locked_deliveries_of_a_gone_active_consumer() {
    let mut q = QueueState::new(
        "q",
        QueueSettings {
            exclusive: true,
            ..Default::default()
        },
    );
    let mut a = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    q.add_consumer(B, ConsumerOptions::default());
    credit(&mut q, A, 1, &mut a);
    credit(&mut q, B, 10, &mut a);
    q.enqueue(plain(0), &mut a).unwrap();
    q.enqueue(plain(1), &mut a).unwrap();
    let got = delivered(&mut a);
    assert_eq!(bodies(&got), vec![0]);
    q.lock_to_transaction(A, got[0].1).unwrap();
    q.remove_consumer(A, &mut a);
    assert!(delivered(&mut a).is_empty(), "B waits for A's transaction");
    q.commit_retirement(got[0].1, Outcome::Accepted, &mut a);
    let next = delivered(&mut a);
    assert_eq!((next[0].0, next[0].2), (2, 1));
}

#[test]
fn poison_hold_stops_the_group_at_its_head_until_released() {
    let mut q = QueueState::new(
        "q",
        QueueSettings {
            group_ordering: GroupOrdering::Strict,
            max_delivery_attempts: 2,
            poison: PoisonPolicy::Hold,
            ..Default::default()
        },
    );
    let mut a = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    credit(&mut q, A, 100, &mut a);
    q.enqueue(grouped(0, "g", 4), &mut a).unwrap();
    q.enqueue(grouped(1, "g", 4), &mut a).unwrap();
    q.enqueue(grouped(10, "h", 4), &mut a).unwrap();
    let failed = Outcome::Modified {
        delivery_failed: true,
        undeliverable_here: false,
    };
    let mut got = delivered(&mut a);
    for _ in 0..2 {
        let head = *got.iter().find(|g| g.2 == 0).expect("0 delivered");
        q.settle(A, head.1, failed.clone(), &mut a).unwrap();
        got = delivered(&mut a);
    }
    // Held at 0: nothing of g moves; h went on; 0 is not dead-lettered.
    assert!(got.iter().all(|g| g.2 != 0 && g.2 != 1), "{got:?}");
    assert_eq!(q.held_groups(), vec!["g".to_string()]);
    assert_eq!(q.counters().held, 1);
    assert_eq!(q.counters().dead_lettered, 0);
    assert!(q.release_held("g"));
    q.tick(&mut a);
    let again = delivered(&mut a);
    assert_eq!((again[0].2, again[0].3), (0, 2));
}

#[test]
fn poison_dead_letter_lets_a_strict_group_go_on() {
    let mut q = QueueState::new(
        "q",
        QueueSettings {
            group_ordering: GroupOrdering::Strict,
            max_delivery_attempts: 1,
            ..Default::default()
        },
    );
    let mut a = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    credit(&mut q, A, 100, &mut a);
    q.enqueue(grouped(0, "g", 4), &mut a).unwrap();
    q.enqueue(grouped(1, "g", 4), &mut a).unwrap();
    let got = delivered(&mut a);
    let failed = Outcome::Modified {
        delivery_failed: true,
        undeliverable_here: false,
    };
    q.settle(A, got[0].1, failed, &mut a).unwrap();
    let dead: usize = a
        .iter()
        .filter(|x| matches!(x, Action::Forward { address, .. } if address == "DLQ"))
        .count();
    assert_eq!(dead, 1);
    assert_eq!(bodies(&delivered(&mut a)), vec![1]);
}

#[test]
fn check_room_counts_what_a_commit_would_add() {
    let mut q = QueueState::new(
        "q",
        QueueSettings {
            max_length: Some(3),
            ..Default::default()
        },
    );
    let mut a = Vec::new();
    q.enqueue(plain(0), &mut a).unwrap();
    assert!(q.check_room(2, 8).is_ok());
    assert!(matches!(
        q.check_room(3, 12),
        Err(CoreError::QueueFull { .. })
    ));
}
