//! Exclusive consumers (SPEC §4) and message groups (SPEC §5) in the queue
//! state machine, with no runtime.

use std::time::Duration;

use super::*;
use bytes::Bytes;

use crate::core::settings::QueueSettings;

const A: ConsumerId = ConsumerId(1);
const B: ConsumerId = ConsumerId(2);
const C: ConsumerId = ConsumerId(3);

fn plain(n: u32) -> Arc<Message> {
    Arc::new(Message::from_bare(Bytes::from(n.to_be_bytes().to_vec())))
}

fn grouped(n: u32, group: &str) -> Arc<Message> {
    let mut m = Message::from_bare(Bytes::from(n.to_be_bytes().to_vec()));
    m.routing = Some(Box::new(crate::core::RoutingFields {
        group_id: Some(Bytes::from(group.to_string())),
        ..Default::default()
    }));
    Arc::new(m)
}

fn closing(n: u32, group: &str) -> Arc<Message> {
    let mut m = (*grouped(n, group)).clone();
    if let Some(r) = m.routing.as_mut() {
        r.closes_group = true;
    }
    Arc::new(m)
}

fn body(m: &Message) -> u32 {
    u32::from_be_bytes(m.bare[..4].try_into().expect("4-byte body"))
}

/// A delivery as the tests look at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Got {
    consumer: u64,
    id: u64,
    body: u32,
    count: u32,
    group_first: bool,
}

fn delivered(actions: &mut Vec<Action>) -> Vec<Got> {
    actions
        .drain(..)
        .filter_map(|a| match a {
            Action::Deliver(d) => Some(Got {
                consumer: d.consumer.0,
                id: d.delivery_id,
                body: body(&d.message),
                count: d.delivery_count,
                group_first: d.group_first,
            }),
            _ => None,
        })
        .collect()
}

/// Active-state flows in `actions`: (consumer, active).
fn active_flows(actions: &[Action]) -> Vec<(u64, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Flow(f) => f.active.map(|act| (f.consumer.0, act)),
            _ => None,
        })
        .collect()
}

fn exclusive(priority: i32) -> ConsumerOptions {
    ConsumerOptions {
        exclusive: true,
        priority,
        ..Default::default()
    }
}

fn attach(q: &mut QueueState, id: ConsumerId, options: ConsumerOptions, a: &mut Vec<Action>) {
    q.attach_consumer(id, options, a).expect("attaches");
}

fn credit(q: &mut QueueState, id: ConsumerId, n: u32, a: &mut Vec<Action>) {
    let dc = q.consumers[q.consumer_index(id).expect("attached")].delivery_count;
    q.flow(id, dc, n, false, false, a).unwrap();
}

fn bodies(got: &[Got]) -> Vec<u32> {
    got.iter().map(|g| g.body).collect()
}

// ---------------------------------------------------------------- §4

#[test]
fn only_the_active_exclusive_consumer_receives_and_is_told_so() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, exclusive(0), &mut a);
    attach(&mut q, B, exclusive(0), &mut a);
    assert_eq!(active_flows(&a), vec![(1, true), (2, false)]);
    a.clear();
    credit(&mut q, A, 10, &mut a);
    credit(&mut q, B, 10, &mut a);
    for n in 0..4 {
        q.enqueue(plain(n), &mut a).unwrap();
    }
    let got = delivered(&mut a);
    assert!(got.iter().all(|g| g.consumer == 1), "{got:?}");
    assert_eq!(bodies(&got), vec![0, 1, 2, 3]);
    assert!(q.is_exclusive(A) && q.is_exclusive(B));
}

#[test]
fn failover_returns_unsettled_in_order_to_the_next_consumer_at_once() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, exclusive(0), &mut a);
    attach(&mut q, B, exclusive(0), &mut a);
    credit(&mut q, A, 3, &mut a);
    credit(&mut q, B, 10, &mut a);
    for n in 0..5 {
        q.enqueue(plain(n), &mut a).unwrap();
    }
    let got = delivered(&mut a);
    assert_eq!(bodies(&got), vec![0, 1, 2]);
    q.settle(A, got[0].id, Outcome::Accepted, &mut a).unwrap();
    a.clear();
    q.remove_consumer(A, &mut a);
    assert_eq!(active_flows(&a), vec![(2, true)]);
    let again = delivered(&mut a);
    assert!(again.iter().all(|g| g.consumer == 2));
    assert_eq!(
        again.iter().map(|g| (g.body, g.count)).collect::<Vec<_>>(),
        vec![(1, 1), (2, 1), (3, 0), (4, 0)]
    );
}

#[test]
fn higher_priority_newcomer_takes_over_once_the_active_has_nothing_unsettled() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, exclusive(0), &mut a);
    credit(&mut q, A, 2, &mut a);
    for n in 0..4 {
        q.enqueue(plain(n), &mut a).unwrap();
    }
    let got = delivered(&mut a);
    assert_eq!(bodies(&got), vec![0, 1]);
    a.clear();
    attach(&mut q, B, exclusive(5), &mut a);
    credit(&mut q, B, 10, &mut a);
    credit(&mut q, A, 10, &mut a);
    // A still holds 0 and 1: nobody gets anything meanwhile.
    assert!(delivered(&mut a).is_empty());
    q.settle(A, got[0].id, Outcome::Accepted, &mut a).unwrap();
    assert!(delivered(&mut a).is_empty());
    q.settle(A, got[1].id, Outcome::Accepted, &mut a).unwrap();
    let flows = active_flows(&a);
    assert!(
        flows.contains(&(1, false)) && flows.contains(&(2, true)),
        "{flows:?}"
    );
    let next = delivered(&mut a);
    assert!(next.iter().all(|g| g.consumer == 2));
    assert_eq!(bodies(&next), vec![2, 3]);
}

#[test]
fn equal_priority_newcomer_waits_and_the_earliest_stays_active() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, exclusive(3), &mut a);
    attach(&mut q, B, exclusive(3), &mut a);
    credit(&mut q, A, 1, &mut a);
    credit(&mut q, B, 1, &mut a);
    q.enqueue(plain(0), &mut a).unwrap();
    q.enqueue(plain(1), &mut a).unwrap();
    let got = delivered(&mut a);
    assert_eq!((got.len(), got[0].consumer), (1, 1));
    assert_eq!(q.active_consumer(), Some(A));
}

#[test]
fn a_drain_from_an_inactive_consumer_completes_at_once() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, exclusive(0), &mut a);
    attach(&mut q, B, exclusive(0), &mut a);
    q.enqueue(plain(0), &mut a).unwrap();
    a.clear();
    q.flow(B, 0, 5, true, false, &mut a).unwrap();
    let drained: Vec<(u32, u32, bool)> = a
        .iter()
        .filter_map(|x| match x {
            Action::Flow(f) if f.consumer == B => Some((f.delivery_count, f.credit, f.drain)),
            _ => None,
        })
        .collect();
    assert_eq!(drained, vec![(5, 0, true)]);
    assert!(delivered(&mut a).is_empty());
}

#[test]
fn the_exclusive_queue_setting_makes_every_consumer_exclusive() {
    let mut q = QueueState::new(
        "q",
        QueueSettings {
            exclusive: true,
            ..Default::default()
        },
    );
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    attach(&mut q, B, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 10, &mut a);
    credit(&mut q, B, 10, &mut a);
    for n in 0..3 {
        q.enqueue(plain(n), &mut a).unwrap();
    }
    assert!(delivered(&mut a).iter().all(|g| g.consumer == 1));
    assert!(q.is_exclusive(B));
}

#[test]
fn non_exclusive_consumers_wait_while_an_exclusive_one_is_attached() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    attach(&mut q, B, exclusive(0), &mut a);
    credit(&mut q, A, 10, &mut a);
    credit(&mut q, B, 10, &mut a);
    q.enqueue(plain(0), &mut a).unwrap();
    q.enqueue(plain(1), &mut a).unwrap();
    assert!(delivered(&mut a).iter().all(|g| g.consumer == 2));
    // B goes without settling: A competes again and gets everything, in order.
    q.remove_consumer(B, &mut a);
    q.enqueue(plain(2), &mut a).unwrap();
    let got = delivered(&mut a);
    assert!(got.iter().all(|g| g.consumer == 1));
    assert_eq!(bodies(&got), vec![0, 1, 2]);
}

// ---------------------------------------------------------------- §5

#[test]
fn a_group_sticks_to_its_owner_and_groups_spread_by_fewest_owned() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    attach(&mut q, B, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 100, &mut a);
    credit(&mut q, B, 100, &mut a);
    for n in 0..12 {
        let g = ["x", "y", "z"][n as usize % 3];
        q.enqueue(grouped(n, g), &mut a).unwrap();
    }
    let got = delivered(&mut a);
    let owner = |g: &str| q.group_owner(g).unwrap().0;
    for (n, d) in got.iter().enumerate() {
        let g = ["x", "y", "z"][d.body as usize % 3];
        assert_eq!(d.consumer, owner(g), "message {n}");
    }
    // x and y went to different consumers; z to whoever had fewer then.
    assert_ne!(owner("x"), owner("y"));
    // Each group's messages arrive in order, the first one marked.
    for g in ["x", "y", "z"] {
        let mine: Vec<&Got> = got
            .iter()
            .filter(|d| ["x", "y", "z"][d.body as usize % 3] == g)
            .collect();
        assert!(mine.windows(2).all(|w| w[0].body < w[1].body));
        assert!(mine[0].group_first);
        assert!(mine[1..].iter().all(|d| !d.group_first));
    }
}

#[test]
fn a_group_waits_for_its_owner_credit_while_other_groups_flow() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    attach(&mut q, B, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 1, &mut a);
    q.enqueue(grouped(0, "slow"), &mut a).unwrap();
    assert_eq!(delivered(&mut a)[0].consumer, 1);
    credit(&mut q, B, 10, &mut a);
    for n in 1..4 {
        q.enqueue(grouped(n, "slow"), &mut a).unwrap();
    }
    for n in 10..13 {
        q.enqueue(grouped(n, "fast"), &mut a).unwrap();
    }
    let got = delivered(&mut a);
    // slow's messages wait for A; fast's go to B.
    assert_eq!(bodies(&got), vec![10, 11, 12]);
    assert!(got.iter().all(|g| g.consumer == 2));
    credit(&mut q, A, 10, &mut a);
    assert_eq!(bodies(&delivered(&mut a)), vec![1, 2, 3]);
}

#[test]
fn an_owner_that_goes_returns_the_group_in_order_to_a_new_owner() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 2, &mut a);
    for n in 0..4 {
        q.enqueue(grouped(n, "g"), &mut a).unwrap();
    }
    let got = delivered(&mut a);
    assert_eq!(bodies(&got), vec![0, 1]);
    attach(&mut q, B, ConsumerOptions::default(), &mut a);
    credit(&mut q, B, 10, &mut a);
    // A late joiner does not take over a live group.
    assert!(delivered(&mut a).is_empty());
    q.remove_consumer(A, &mut a);
    let again = delivered(&mut a);
    assert_eq!(
        again
            .iter()
            .map(|g| (g.consumer, g.body, g.count))
            .collect::<Vec<_>>(),
        vec![(2, 0, 1), (2, 1, 1), (2, 2, 0), (2, 3, 0)]
    );
    assert!(again[0].group_first);
    assert_eq!(q.group_owner("g"), Some(B));
}

#[test]
fn released_group_message_goes_back_to_the_head_of_its_group() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 2, &mut a);
    for n in 0..3 {
        q.enqueue(grouped(n, "g"), &mut a).unwrap();
    }
    let got = delivered(&mut a);
    q.settle(A, got[0].id, Outcome::Released, &mut a).unwrap();
    credit(&mut q, A, 5, &mut a);
    let next = delivered(&mut a);
    assert_eq!(bodies(&next), vec![0, 2]);
}

#[test]
fn closing_message_accepted_releases_the_group() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 2, &mut a);
    q.enqueue(grouped(0, "g"), &mut a).unwrap();
    q.enqueue(closing(1, "g"), &mut a).unwrap();
    let got = delivered(&mut a);
    q.settle(A, got[0].id, Outcome::Accepted, &mut a).unwrap();
    assert_eq!(q.group_owner("g"), Some(A));
    q.settle(A, got[1].id, Outcome::Accepted, &mut a).unwrap();
    assert_eq!(q.group_owner("g"), None);
    assert_eq!(q.group_count(), 0);
    // The next message of that id starts a new assignment: with A out of
    // credit it goes to B instead of waiting for A.
    attach(&mut q, B, ConsumerOptions::default(), &mut a);
    credit(&mut q, B, 10, &mut a);
    q.enqueue(grouped(2, "g"), &mut a).unwrap();
    let next = delivered(&mut a);
    assert_eq!((next[0].consumer, next[0].group_first), (2, true));
}

#[test]
fn idle_groups_are_remembered_then_forgotten() {
    let mut q = QueueState::new(
        "q",
        QueueSettings {
            group_idle_timeout: Duration::from_secs(10),
            ..Default::default()
        },
    );
    let mut a = Vec::new();
    q.set_now(1_000);
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    attach(&mut q, B, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 10, &mut a);
    credit(&mut q, B, 10, &mut a);
    q.enqueue(grouped(0, "g"), &mut a).unwrap();
    let got = delivered(&mut a);
    let owner = got[0].consumer;
    q.settle(ConsumerId(owner), got[0].id, Outcome::Accepted, &mut a)
        .unwrap();
    assert_eq!(q.group_count(), 1);
    q.set_now(5_000);
    q.tick(&mut a);
    q.enqueue(grouped(1, "g"), &mut a).unwrap();
    let again = delivered(&mut a);
    assert_eq!(
        again[0].consumer, owner,
        "still its group within the timeout"
    );
    q.settle(ConsumerId(owner), again[0].id, Outcome::Accepted, &mut a)
        .unwrap();
    q.set_now(20_000);
    q.tick(&mut a);
    assert_eq!(q.group_count(), 0);
}

#[test]
fn zero_idle_timeout_forgets_a_group_as_soon_as_it_is_done() {
    let mut q = QueueState::new(
        "q",
        QueueSettings {
            group_idle_timeout: Duration::ZERO,
            ..Default::default()
        },
    );
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 1000, &mut a);
    for n in 0..500 {
        q.enqueue(grouped(n, &format!("g{n}")), &mut a).unwrap();
        let got = delivered(&mut a);
        q.settle(A, got[0].id, Outcome::Accepted, &mut a).unwrap();
    }
    assert_eq!(q.group_count(), 0);
}

#[test]
fn past_max_groups_new_groups_share_buckets_in_order() {
    let mut q = QueueState::new(
        "q",
        QueueSettings {
            max_groups: 4,
            ..Default::default()
        },
    );
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    attach(&mut q, B, ConsumerOptions::default(), &mut a);
    for n in 0..100 {
        q.enqueue(grouped(n, &format!("g{}", n % 20)), &mut a)
            .unwrap();
    }
    assert!(q.group_count() <= 8, "{} live groups", q.group_count());
    credit(&mut q, A, 1000, &mut a);
    credit(&mut q, B, 1000, &mut a);
    let got = delivered(&mut a);
    assert_eq!(got.len(), 100);
    // Every original group's messages went to one consumer, in order.
    for g in 0..20 {
        let mine: Vec<&Got> = got.iter().filter(|d| d.body % 20 == g).collect();
        assert!(mine.iter().all(|d| d.consumer == mine[0].consumer));
        assert!(mine.windows(2).all(|w| w[0].body < w[1].body));
    }
}

#[test]
fn rebalance_moves_idle_groups_at_once_and_busy_ones_after_they_settle() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 100, &mut a);
    for n in 0..4 {
        q.enqueue(grouped(n, &format!("g{n}")), &mut a).unwrap();
    }
    let got = delivered(&mut a);
    // g0 and g1 settled; g2 and g3 still in flight at A.
    q.settle(A, got[0].id, Outcome::Accepted, &mut a).unwrap();
    q.settle(A, got[1].id, Outcome::Accepted, &mut a).unwrap();
    attach(&mut q, B, ConsumerOptions::default(), &mut a);
    credit(&mut q, B, 100, &mut a);
    assert_eq!(q.rebalance(), 2);
    // The idle groups moved; none of the busy ones did yet.
    let moved: Vec<String> = (0..4)
        .map(|n| format!("g{n}"))
        .filter(|g| q.group_owner(g) == Some(B))
        .collect();
    assert_eq!(moved, vec!["g0", "g1"]);
    // The moved group's next message goes to its new owner.
    q.enqueue(grouped(10, "g0"), &mut a).unwrap();
    assert_eq!(delivered(&mut a)[0].consumer, 2);
}

#[test]
fn a_rebalance_hand_over_that_takes_too_long_is_cancelled() {
    let mut q = QueueState::new(
        "q",
        QueueSettings {
            group_handover_timeout: Duration::from_secs(30),
            ..Default::default()
        },
    );
    let mut a = Vec::new();
    q.set_now(0);
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 100, &mut a);
    q.enqueue(grouped(0, "g0"), &mut a).unwrap();
    q.enqueue(grouped(1, "g1"), &mut a).unwrap();
    let got = delivered(&mut a);
    attach(&mut q, B, ConsumerOptions::default(), &mut a);
    credit(&mut q, B, 100, &mut a);
    assert_eq!(q.rebalance(), 1);
    let waits = |q: &QueueState, g: &str| {
        q.groups
            .find(g)
            .and_then(|s| q.groups.get(s))
            .is_some_and(|g| g.handover.is_some())
    };
    let moving = if waits(&q, "g0") { "g0" } else { "g1" };
    assert!(waits(&q, moving));
    assert_eq!(q.group_owner(moving), Some(A));
    let held = got
        .iter()
        .find(|d| format!("g{}", d.body) == moving)
        .unwrap()
        .id;
    // While the move waits, the group's next message waits too.
    q.enqueue(grouped(5, moving), &mut a).unwrap();
    assert!(delivered(&mut a).is_empty());
    q.set_now(31_000);
    q.tick(&mut a);
    // Cancelled: the group stays with A, and flows again to A.
    assert_eq!(q.group_owner(moving), Some(A));
    let next = delivered(&mut a);
    assert_eq!((next[0].consumer, next[0].body), (1, 5));
    q.settle(A, held, Outcome::Accepted, &mut a).unwrap();
    assert_eq!(q.group_owner(moving), Some(A));
}

#[test]
fn a_group_filter_consumer_gets_only_its_group_and_holds_it() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    let filter = |g: &str| ConsumerOptions {
        group_filter: Some(GroupFilter::Group(g.into())),
        ..Default::default()
    };
    attach(&mut q, B, filter("mine"), &mut a);
    assert_eq!(
        q.attach_consumer(C, filter("mine"), &mut a),
        Err(CoreError::GroupLocked {
            group: "mine".into()
        })
    );
    credit(&mut q, A, 10, &mut a);
    credit(&mut q, B, 10, &mut a);
    q.enqueue(plain(0), &mut a).unwrap();
    q.enqueue(grouped(1, "mine"), &mut a).unwrap();
    q.enqueue(grouped(2, "other"), &mut a).unwrap();
    let got = delivered(&mut a);
    assert_eq!(
        got.iter().map(|g| (g.consumer, g.body)).collect::<Vec<_>>(),
        vec![(1, 0), (2, 1), (1, 2)]
    );
    // Released when it goes: the group is free for anyone again.
    q.remove_consumer(B, &mut a);
    assert!(q.attach_consumer(C, filter("mine"), &mut a).is_ok());
}

#[test]
fn a_group_filter_for_a_group_another_consumer_owns_moves_it_after_its_deliveries_settle() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 10, &mut a);
    q.enqueue(grouped(0, "g"), &mut a).unwrap();
    let got = delivered(&mut a);
    let filter = ConsumerOptions {
        group_filter: Some(GroupFilter::Group("g".into())),
        ..Default::default()
    };
    attach(&mut q, B, filter, &mut a);
    credit(&mut q, B, 10, &mut a);
    q.enqueue(grouped(1, "g"), &mut a).unwrap();
    assert!(delivered(&mut a).is_empty(), "waits for A's delivery");
    q.settle(A, got[0].id, Outcome::Accepted, &mut a).unwrap();
    let next = delivered(&mut a);
    assert_eq!(
        (next[0].consumer, next[0].body, next[0].group_first),
        (2, 1, true)
    );
}

#[test]
fn any_group_filter_picks_an_unowned_group_with_messages() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    let any = ConsumerOptions {
        group_filter: Some(GroupFilter::Any),
        ..Default::default()
    };
    assert!(matches!(
        q.attach_consumer(A, any.clone(), &mut a),
        Err(CoreError::NoGroupAvailable { .. })
    ));
    q.enqueue(grouped(0, "first"), &mut a).unwrap();
    q.enqueue(grouped(1, "second"), &mut a).unwrap();
    assert_eq!(
        q.attach_consumer(A, any.clone(), &mut a),
        Ok(Some("first".into()))
    );
    assert_eq!(
        q.attach_consumer(B, any.clone(), &mut a),
        Ok(Some("second".into()))
    );
    assert!(q.attach_consumer(C, any, &mut a).is_err());
    credit(&mut q, B, 10, &mut a);
    assert_eq!(bodies(&delivered(&mut a)), vec![1]);
}

#[test]
fn undeliverable_here_keeps_a_group_head_waiting_for_another_owner() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    credit(&mut q, A, 10, &mut a);
    q.enqueue(grouped(0, "g"), &mut a).unwrap();
    q.enqueue(grouped(1, "g"), &mut a).unwrap();
    let got = delivered(&mut a);
    let outcome = Outcome::Modified {
        delivery_failed: false,
        undeliverable_here: true,
    };
    q.settle(A, got[0].id, outcome, &mut a).unwrap();
    // 0 waits at the head; 1 (in flight) is not overtaken by anything.
    assert!(delivered(&mut a).is_empty());
    attach(&mut q, B, ConsumerOptions::default(), &mut a);
    credit(&mut q, B, 10, &mut a);
    assert!(delivered(&mut a).is_empty());
    q.remove_consumer(A, &mut a);
    let again = delivered(&mut a);
    assert_eq!(
        again
            .iter()
            .map(|g| (g.consumer, g.body))
            .collect::<Vec<_>>(),
        vec![(2, 0), (2, 1)]
    );
}

#[test]
fn grouped_and_ungrouped_messages_keep_queue_order() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, ConsumerOptions::default(), &mut a);
    for n in 0..6 {
        if n % 2 == 0 {
            q.enqueue(plain(n), &mut a).unwrap();
        } else {
            q.enqueue(grouped(n, "g"), &mut a).unwrap();
        }
    }
    credit(&mut q, A, 10, &mut a);
    assert_eq!(bodies(&delivered(&mut a)), vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn browsers_see_grouped_messages_too() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    q.enqueue(plain(0), &mut a).unwrap();
    q.enqueue(grouped(1, "g"), &mut a).unwrap();
    q.enqueue(grouped(2, "h"), &mut a).unwrap();
    let browse = ConsumerOptions {
        browse: true,
        ..Default::default()
    };
    attach(&mut q, A, browse, &mut a);
    credit(&mut q, A, 10, &mut a);
    assert_eq!(bodies(&delivered(&mut a)), vec![0, 1, 2]);
    assert_eq!(q.depth(), 3);
}

#[test]
fn undeliverable_here_on_an_exclusive_queue_blocks_the_queue_in_order() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut a = Vec::new();
    attach(&mut q, A, exclusive(0), &mut a);
    attach(&mut q, B, exclusive(0), &mut a);
    for n in 0..3 {
        q.enqueue(plain(n), &mut a).unwrap();
    }
    credit(&mut q, A, 1, &mut a);
    let got = delivered(&mut a);
    let outcome = Outcome::Modified {
        delivery_failed: false,
        undeliverable_here: true,
    };
    q.settle(A, got[0].id, outcome, &mut a).unwrap();
    credit(&mut q, A, 5, &mut a);
    // 0 waits at the head for another consumer; 1 and 2 do not overtake it.
    assert!(delivered(&mut a).is_empty());
    credit(&mut q, B, 5, &mut a);
    q.remove_consumer(A, &mut a);
    let again = delivered(&mut a);
    assert_eq!(
        again
            .iter()
            .map(|g| (g.consumer, g.body))
            .collect::<Vec<_>>(),
        vec![(2, 0), (2, 1), (2, 2)]
    );
}
