//! Scheduled delivery, redelivery delay and duplicate detection in the
//! queue state machine, with the clock set by hand.

use std::time::Duration;

use super::*;
use bytes::Bytes;

use crate::core::settings::QueueSettings;

const A: ConsumerId = ConsumerId(1);

fn message(n: u32, group: Option<&str>, time: Option<u64>, delay: Option<u64>) -> Arc<Message> {
    let mut m = Message::from_bare(Bytes::from(n.to_be_bytes().to_vec()));
    if group.is_some() || time.is_some() || delay.is_some() {
        m.routing = Some(Box::new(crate::core::RoutingFields {
            group_id: group.map(|g| Bytes::from(g.to_string())),
            delivery_time: time,
            delivery_delay: delay,
            ..Default::default()
        }));
    }
    Arc::new(m)
}

fn plain(n: u32) -> Arc<Message> {
    message(n, None, None, None)
}

/// Bodies delivered, with their delivery ids.
fn delivered(actions: &mut Vec<Action>) -> Vec<(u64, u32)> {
    actions
        .drain(..)
        .filter_map(|a| match a {
            Action::Deliver(d) => Some((
                d.delivery_id,
                u32::from_be_bytes(d.message.bare[..4].try_into().expect("4 bytes")),
            )),
            _ => None,
        })
        .collect()
}

fn bodies(actions: &mut Vec<Action>) -> Vec<u32> {
    delivered(actions).into_iter().map(|d| d.1).collect()
}

const FAILED: Outcome = Outcome::Modified {
    delivery_failed: true,
    undeliverable_here: false,
};

fn queue(settings: QueueSettings) -> (QueueState, Vec<Action>) {
    let mut q = QueueState::new("q", settings);
    q.set_now(1_000);
    let mut actions = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 100, false, false, &mut actions).unwrap();
    (q, actions)
}

#[test]
fn a_scheduled_message_waits_for_its_time_then_takes_its_place() {
    let (mut q, mut actions) = queue(QueueSettings::default());
    q.enqueue(message(0, None, Some(5_000), None), &mut actions)
        .unwrap();
    q.enqueue(message(1, None, None, Some(2_000)), &mut actions)
        .unwrap();
    q.enqueue(plain(2), &mut actions).unwrap();
    assert_eq!(bodies(&mut actions), vec![2]);
    assert_eq!(q.depth(), 2);
    assert_eq!(q.scheduled(), 2);
    assert_eq!(q.next_due(), Some(3_000));
    q.set_now(2_999);
    q.tick(&mut actions);
    assert!(bodies(&mut actions).is_empty(), "not early");
    q.set_now(3_000);
    q.tick(&mut actions);
    assert_eq!(bodies(&mut actions), vec![1]);
    assert_eq!(q.next_due(), Some(5_000));
    q.set_now(5_001);
    q.tick(&mut actions);
    assert_eq!(bodies(&mut actions), vec![0]);
    assert_eq!(q.next_due(), None);
    assert_eq!(q.depth(), 0);
}

#[test]
fn a_delivery_time_in_the_past_is_delivered_at_once() {
    let (mut q, mut actions) = queue(QueueSettings::default());
    q.enqueue(message(0, None, Some(10), None), &mut actions)
        .unwrap();
    assert_eq!(bodies(&mut actions), vec![0]);
    assert_eq!(q.scheduled(), 0);
}

#[test]
fn purge_removes_scheduled_messages() {
    let (mut q, mut actions) = queue(QueueSettings::default());
    q.enqueue(message(0, None, Some(9_000), None), &mut actions)
        .unwrap();
    assert_eq!(q.purge(&mut actions), 1);
    assert_eq!(q.depth(), 0);
    q.set_now(10_000);
    q.tick(&mut actions);
    assert!(bodies(&mut actions).is_empty());
}

fn delayed() -> QueueSettings {
    QueueSettings {
        redelivery_delay: Duration::from_millis(500),
        ..QueueSettings::default()
    }
}

#[test]
fn redelivery_delay_lets_other_messages_of_a_shared_queue_go_first() {
    let (mut q, mut actions) = queue(delayed());
    q.enqueue(plain(0), &mut actions).unwrap();
    let (id, _) = delivered(&mut actions)[0];
    q.enqueue(plain(1), &mut actions).unwrap();
    let (second, _) = delivered(&mut actions)[0];
    q.settle(A, id, FAILED, &mut actions).unwrap();
    q.settle(A, second, Outcome::Accepted, &mut actions)
        .unwrap();
    q.enqueue(plain(2), &mut actions).unwrap();
    assert_eq!(bodies(&mut actions), vec![2], "0 waits out its delay");
    q.set_now(1_499);
    q.tick(&mut actions);
    assert!(bodies(&mut actions).is_empty());
    q.set_now(1_500);
    q.tick(&mut actions);
    assert_eq!(bodies(&mut actions), vec![0]);
}

#[test]
fn released_messages_come_back_without_delay() {
    let (mut q, mut actions) = queue(delayed());
    q.enqueue(plain(0), &mut actions).unwrap();
    let (id, _) = delivered(&mut actions)[0];
    q.settle(A, id, Outcome::Released, &mut actions).unwrap();
    assert_eq!(bodies(&mut actions), vec![0]);
}

#[test]
fn redelivery_delay_inside_a_group_holds_the_group_in_order() {
    let (mut q, mut actions) = queue(delayed());
    for n in 0..3 {
        q.enqueue(message(n, Some("g"), None, None), &mut actions)
            .unwrap();
    }
    q.enqueue(plain(9), &mut actions).unwrap();
    let got = delivered(&mut actions);
    assert_eq!(
        got.iter().map(|g| g.1).collect::<Vec<_>>(),
        vec![0, 1, 2, 9]
    );
    // 0 fails, 1 and 2 are given back by a consumer that goes away later:
    // here they fail too. Nothing of the group may go before 0.
    q.settle_many(A, &[got[0].0, got[1].0, got[2].0], FAILED, &mut actions)
        .unwrap();
    q.enqueue(message(3, Some("g"), None, None), &mut actions)
        .unwrap();
    q.enqueue(plain(10), &mut actions).unwrap();
    assert_eq!(
        bodies(&mut actions),
        vec![10],
        "the group waits, others go on"
    );
    q.set_now(1_499);
    q.tick(&mut actions);
    assert!(bodies(&mut actions).is_empty());
    q.set_now(1_500);
    q.tick(&mut actions);
    assert_eq!(bodies(&mut actions), vec![0, 1, 2, 3]);
}

#[test]
fn redelivery_delay_on_an_exclusive_queue_holds_everything_behind() {
    let settings = QueueSettings {
        exclusive: true,
        ..delayed()
    };
    let (mut q, mut actions) = queue(settings);
    q.enqueue(plain(0), &mut actions).unwrap();
    let (id, _) = delivered(&mut actions)[0];
    q.settle(A, id, FAILED, &mut actions).unwrap();
    q.enqueue(plain(1), &mut actions).unwrap();
    assert!(bodies(&mut actions).is_empty(), "1 must not overtake 0");
    q.set_now(1_500);
    q.tick(&mut actions);
    assert_eq!(bodies(&mut actions), vec![0, 1]);
}

fn dedup(window: u64, time: Duration) -> QueueSettings {
    QueueSettings {
        duplicate_window: window,
        duplicate_window_time: time,
        ..QueueSettings::default()
    }
}

#[test]
fn a_duplicate_is_accepted_and_dropped() {
    let (mut q, mut actions) = queue(dedup(100, Duration::ZERO));
    let id = Bytes::from_static(b"\xa1\x01a");
    assert!(q.enqueue_with(plain(0), Some(&id), &mut actions).unwrap());
    assert!(!q.enqueue_with(plain(1), Some(&id), &mut actions).unwrap());
    let other = Bytes::from_static(b"\xa1\x01b");
    assert!(q
        .enqueue_with(plain(2), Some(&other), &mut actions)
        .unwrap());
    assert_eq!(bodies(&mut actions), vec![0, 2]);
    assert_eq!(q.counters().duplicates, 1);
}

#[test]
fn the_window_forgets_the_oldest_ids_past_its_count() {
    let (mut q, mut actions) = queue(dedup(2, Duration::ZERO));
    let ids: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![0x52, i])).collect();
    for (n, id) in ids.iter().enumerate() {
        assert!(q
            .enqueue_with(plain(n as u32), Some(id), &mut actions)
            .unwrap());
    }
    assert_eq!(q.remembered_ids(), 2);
    // The first was forgotten; the last two are still known.
    assert!(q
        .enqueue_with(plain(10), Some(&ids[0]), &mut actions)
        .unwrap());
    assert!(!q
        .enqueue_with(plain(11), Some(&ids[2]), &mut actions)
        .unwrap());
}

#[test]
fn the_window_forgets_ids_past_its_time() {
    let (mut q, mut actions) = queue(dedup(0, Duration::from_secs(10)));
    let id = Bytes::from_static(b"\x52\x07");
    assert!(q.enqueue_with(plain(0), Some(&id), &mut actions).unwrap());
    q.set_now(10_999);
    assert!(!q.enqueue_with(plain(1), Some(&id), &mut actions).unwrap());
    q.set_now(11_000);
    assert!(q.enqueue_with(plain(2), Some(&id), &mut actions).unwrap());
}

#[test]
fn without_a_window_ids_are_ignored() {
    let (mut q, mut actions) = queue(QueueSettings::default());
    let id = Bytes::from_static(b"\x52\x07");
    assert!(q.enqueue_with(plain(0), Some(&id), &mut actions).unwrap());
    assert!(q.enqueue_with(plain(1), Some(&id), &mut actions).unwrap());
    assert_eq!(q.remembered_ids(), 0);
}

#[test]
fn a_refused_message_is_not_remembered() {
    let settings = QueueSettings {
        max_length: Some(1),
        ..dedup(10, Duration::ZERO)
    };
    let mut q = QueueState::new("q", settings);
    let mut actions = Vec::new();
    q.enqueue(plain(0), &mut actions).unwrap();
    let id = Bytes::from_static(b"\x52\x01");
    assert!(q.enqueue_with(plain(1), Some(&id), &mut actions).is_err());
    assert_eq!(q.remembered_ids(), 0);
}
