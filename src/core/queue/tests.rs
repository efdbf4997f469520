use super::*;
use bytes::Bytes;

use crate::core::settings::QueueSettings;

fn msg(n: u32) -> Arc<Message> {
    Arc::new(Message::from_bare(Bytes::from(n.to_be_bytes().to_vec())))
}

fn body(m: &Message) -> u32 {
    u32::from_be_bytes(m.bare[..4].try_into().expect("4-byte body"))
}

/// Deliveries in `actions`, as (consumer, delivery id, body, delivery count).
fn delivered(actions: &mut Vec<Action>) -> Vec<(u64, u64, u32, u32)> {
    actions
        .drain(..)
        .filter_map(|a| match a {
            Action::Deliver(d) => Some((
                d.consumer.0,
                d.delivery_id,
                body(&d.message),
                d.delivery_count,
            )),
            _ => None,
        })
        .collect()
}

const A: ConsumerId = ConsumerId(1);
const B: ConsumerId = ConsumerId(2);

#[test]
fn messages_wait_for_credit_and_go_in_order() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    for n in 0..5 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    q.add_consumer(A, ConsumerOptions::default());
    assert!(delivered(&mut actions).is_empty());
    q.flow(A, 0, 3, false, false, &mut actions).unwrap();
    let got: Vec<u32> = delivered(&mut actions).iter().map(|d| d.2).collect();
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(q.depth(), 2);
    assert_eq!(q.unacked(), 3);
}

#[test]
fn never_more_than_credit() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 2, false, false, &mut actions).unwrap();
    for n in 0..10 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    assert_eq!(delivered(&mut actions).len(), 2);
    // Re-stating the same credit limit grants nothing new.
    q.flow(A, 0, 2, false, false, &mut actions).unwrap();
    assert!(delivered(&mut actions).is_empty());
    // The consumer saw 2 deliveries and grants 2 more.
    q.flow(A, 2, 2, false, false, &mut actions).unwrap();
    assert_eq!(delivered(&mut actions).len(), 2);
}

#[test]
fn competing_consumers_round_robin() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    q.add_consumer(B, ConsumerOptions::default());
    q.flow(A, 0, 10, false, false, &mut actions).unwrap();
    q.flow(B, 0, 10, false, false, &mut actions).unwrap();
    for n in 0..4 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    let who: Vec<u64> = delivered(&mut actions).iter().map(|d| d.0).collect();
    assert_eq!(who, vec![1, 2, 1, 2]);
}

#[test]
fn released_message_returns_to_its_original_position() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    for n in 0..3 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 1, false, false, &mut actions).unwrap();
    let first = delivered(&mut actions);
    assert_eq!(first[0].2, 0);
    q.settle(A, first[0].1, Outcome::Released, &mut actions)
        .unwrap();
    q.flow(A, 1, 3, false, false, &mut actions).unwrap();
    let again: Vec<(u32, u32)> = delivered(&mut actions).iter().map(|d| (d.2, d.3)).collect();
    // Released: same place, delivery count unchanged.
    assert_eq!(again, vec![(0, 0), (1, 0), (2, 0)]);
}

#[test]
fn lost_consumer_returns_messages_in_order_with_count_plus_one() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    for n in 0..6 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 4, false, false, &mut actions).unwrap();
    let got = delivered(&mut actions);
    // A accepts message 1 only, then goes away holding 0, 2 and 3.
    q.settle(A, got[1].1, Outcome::Accepted, &mut actions)
        .unwrap();
    q.remove_consumer(A, &mut actions);
    assert_eq!(q.depth(), 5);
    q.add_consumer(B, ConsumerOptions::default());
    q.flow(B, 0, 10, false, false, &mut actions).unwrap();
    let again: Vec<(u32, u32)> = delivered(&mut actions).iter().map(|d| (d.2, d.3)).collect();
    assert_eq!(again, vec![(0, 1), (2, 1), (3, 1), (4, 0), (5, 0)]);
}

#[test]
fn accepted_is_removed_and_cannot_be_settled_twice() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.enqueue(msg(7), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 1, false, false, &mut actions).unwrap();
    let d = delivered(&mut actions)[0].1;
    q.settle(A, d, Outcome::Accepted, &mut actions).unwrap();
    assert_eq!(q.depth() + q.unacked(), 0);
    assert_eq!(
        q.settle(A, d, Outcome::Accepted, &mut actions),
        Err(CoreError::UnknownDelivery { delivery_id: d })
    );
}

#[test]
fn another_consumer_cannot_settle_my_delivery() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    q.add_consumer(B, ConsumerOptions::default());
    q.flow(A, 0, 1, false, false, &mut actions).unwrap();
    let d = delivered(&mut actions)[0].1;
    assert!(q.settle(B, d, Outcome::Accepted, &mut actions).is_err());
    assert_eq!(q.unacked(), 1);
}

#[test]
fn modified_delivery_failed_counts_the_attempt() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 5, false, false, &mut actions).unwrap();
    let d = delivered(&mut actions)[0].1;
    let outcome = Outcome::Modified {
        delivery_failed: true,
        undeliverable_here: false,
    };
    q.settle(A, d, outcome, &mut actions).unwrap();
    let again = delivered(&mut actions);
    assert_eq!((again[0].2, again[0].3), (1, 1));
}

#[test]
fn drain_uses_up_credit_and_reports_it() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 5, true, false, &mut actions).unwrap();
    let flows: Vec<FlowState> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Flow(f) => Some(*f),
            _ => None,
        })
        .collect();
    assert_eq!(delivered(&mut actions).len(), 1);
    assert_eq!(flows.len(), 1);
    assert_eq!(
        (flows[0].delivery_count, flows[0].credit, flows[0].drain),
        (5, 0, true)
    );
    // After the drain, new messages wait: no credit is left.
    q.enqueue(msg(2), &mut actions).unwrap();
    assert!(delivered(&mut actions).is_empty());
}

#[test]
fn credit_behind_what_was_sent_is_zero_not_huge() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 3, false, false, &mut actions).unwrap();
    for n in 0..3 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    assert_eq!(delivered(&mut actions).len(), 3);
    // A stale flow from before those deliveries arrived: limit 1 < sent 3.
    q.flow(A, 0, 1, false, false, &mut actions).unwrap();
    q.enqueue(msg(9), &mut actions).unwrap();
    assert!(delivered(&mut actions).is_empty());
}

#[test]
fn delivery_count_wraps_with_serial_arithmetic() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.add_consumer(A, ConsumerOptions::default());
    // Two drains move the link's delivery count to just below the wrap.
    let half = i32::MAX as u32;
    q.flow(A, 0, half, true, false, &mut actions).unwrap();
    q.flow(A, half, half, true, false, &mut actions).unwrap();
    actions.clear();
    // The credit limit wraps past zero: still 4 deliveries of credit.
    q.flow(A, u32::MAX - 1, 4, false, false, &mut actions)
        .unwrap();
    for n in 0..4 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    assert_eq!(delivered(&mut actions).len(), 4);
}

#[test]
fn presettled_consumer_takes_messages_for_good() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.add_consumer(
        A,
        ConsumerOptions {
            presettled: true,
            ..ConsumerOptions::default()
        },
    );
    q.flow(A, 0, 5, false, false, &mut actions).unwrap();
    assert_eq!(delivered(&mut actions).len(), 1);
    q.remove_consumer(A, &mut actions);
    assert_eq!(q.depth() + q.unacked(), 0);
}

fn with_settings(f: impl FnOnce(&mut QueueSettings)) -> QueueState {
    let mut settings = QueueSettings::default();
    f(&mut settings);
    QueueState::new("q", settings)
}

fn msg_with(n: u32, f: impl FnOnce(&mut Message)) -> Arc<Message> {
    let mut m = Message::from_bare(Bytes::from(n.to_be_bytes().to_vec()));
    f(&mut m);
    Arc::new(m)
}

fn forwards(actions: &mut Vec<Action>) -> Vec<(String, Message)> {
    actions
        .drain(..)
        .filter_map(|a| match a {
            Action::Forward {
                address, message, ..
            } => Some((address, message)),
            _ => None,
        })
        .collect()
}

fn annotation(m: &Message, key: &str) -> Option<String> {
    m.broker_annotations()
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| match v {
            crate::core::message::AnnotationValue::String(s) => s.clone(),
            crate::core::message::AnnotationValue::Bool(b) => b.to_string(),
            crate::core::message::AnnotationValue::Encoded(b) => format!("{b:?}"),
        })
}

#[test]
fn higher_priority_first_fifo_within_a_priority() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    for (n, p) in [(0, 4), (1, 9), (2, 4), (3, 9), (4, 0), (5, 12)] {
        q.enqueue(msg_with(n, |m| m.header.priority = p), &mut actions)
            .unwrap();
    }
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 10, false, false, &mut actions).unwrap();
    let got: Vec<u32> = delivered(&mut actions).iter().map(|d| d.2).collect();
    // Priorities above 9 count as 9.
    assert_eq!(got, vec![1, 3, 5, 0, 2, 4]);
}

#[test]
fn released_high_priority_message_goes_back_before_lower_ones() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.enqueue(msg_with(0, |m| m.header.priority = 9), &mut actions)
        .unwrap();
    q.enqueue(msg_with(1, |m| m.header.priority = 1), &mut actions)
        .unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 1, false, false, &mut actions).unwrap();
    let d = delivered(&mut actions)[0].1;
    q.settle(A, d, Outcome::Released, &mut actions).unwrap();
    q.flow(A, 1, 2, false, false, &mut actions).unwrap();
    let got: Vec<u32> = delivered(&mut actions).iter().map(|d| d.2).collect();
    assert_eq!(got, vec![0, 1]);
}

#[test]
fn consumers_of_higher_priority_with_credit_go_first() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.add_consumer(
        A,
        ConsumerOptions {
            priority: 0,
            ..Default::default()
        },
    );
    q.add_consumer(
        B,
        ConsumerOptions {
            priority: 5,
            ..Default::default()
        },
    );
    q.flow(A, 0, 10, false, false, &mut actions).unwrap();
    q.flow(B, 0, 2, false, false, &mut actions).unwrap();
    for n in 0..4 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    let who: Vec<u64> = delivered(&mut actions).iter().map(|d| d.0).collect();
    // B (priority 5) until its credit runs out, then A.
    assert_eq!(who, vec![2, 2, 1, 1]);
}

#[test]
fn undeliverable_here_keeps_a_message_away_from_that_consumer() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.enqueue(msg(7), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 5, false, false, &mut actions).unwrap();
    let d = delivered(&mut actions)[0].1;
    let outcome = Outcome::Modified {
        delivery_failed: false,
        undeliverable_here: true,
    };
    q.settle(A, d, outcome, &mut actions).unwrap();
    // A has credit but does not get it again; the message waits at the head.
    assert!(delivered(&mut actions).is_empty());
    q.enqueue(msg(8), &mut actions).unwrap();
    assert_eq!(
        delivered(&mut actions)
            .iter()
            .map(|d| d.2)
            .collect::<Vec<_>>(),
        vec![8]
    );
    q.add_consumer(B, ConsumerOptions::default());
    q.flow(B, 0, 5, false, false, &mut actions).unwrap();
    let got = delivered(&mut actions);
    assert_eq!((got[0].0, got[0].2), (2, 7));
}

#[test]
fn a_consumers_rejection_error_travels_with_the_dead_lettered_message() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 1, false, false, &mut actions).unwrap();
    let d = delivered(&mut actions)[0].1;
    let rejection = super::Rejection {
        condition: "app:bad-price".into(),
        description: Some("price is negative".into()),
        info: Some(bytes::Bytes::from_static(b"\xc1\x01\x00")),
    };
    let outcome = Outcome::Rejected(Some(Arc::new(rejection)));
    q.settle(A, d, outcome, &mut actions).unwrap();
    let moved = forwards(&mut actions);
    let m = &moved[0].1;
    assert_eq!(moved[0].0, "DLQ");
    assert_eq!(
        annotation(m, "x-opt-dead-letter-reason").as_deref(),
        Some("app:bad-price")
    );
    assert_eq!(
        annotation(m, "x-opt-dead-letter-description").as_deref(),
        Some("price is negative")
    );
    assert!(m
        .broker_annotations()
        .iter()
        .any(|(k, v)| k == "x-opt-dead-letter-info"
            && *v
                == crate::core::message::AnnotationValue::Encoded(bytes::Bytes::from_static(
                    b"\xc1\x01\x00"
                ))));
}

#[test]
fn rejected_goes_to_the_dead_letter_address_with_reason_and_origin() {
    let mut q = with_settings(|s| s.dead_letter_address = "my-dlq".into());
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 1, false, false, &mut actions).unwrap();
    let d = delivered(&mut actions)[0].1;
    q.settle(A, d, Outcome::Rejected(None), &mut actions)
        .unwrap();
    let moved = forwards(&mut actions);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].0, "my-dlq");
    assert_eq!(
        annotation(&moved[0].1, "x-opt-dead-letter-reason").as_deref(),
        Some("rejected")
    );
    assert_eq!(
        annotation(&moved[0].1, "x-opt-original-address").as_deref(),
        Some("q")
    );
    assert_eq!(q.depth() + q.unacked(), 0);
}

#[test]
fn max_delivery_attempts_dead_letters_after_the_last_failure() {
    let mut q = with_settings(|s| s.max_delivery_attempts = 3);
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    let failed = Outcome::Modified {
        delivery_failed: true,
        undeliverable_here: false,
    };
    for attempt in 0..3u32 {
        q.flow(A, attempt, 1, false, false, &mut actions).unwrap();
        let got = delivered(&mut actions);
        assert_eq!(got.len(), 1, "attempt {attempt}");
        assert_eq!(got[0].3, attempt);
        q.settle(A, got[0].1, failed.clone(), &mut actions).unwrap();
    }
    let moved = forwards(&mut actions);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].0, "DLQ");
    assert_eq!(moved[0].1.header.delivery_count, 3);
    assert_eq!(q.depth(), 0);
    assert_eq!(q.counters().dead_lettered, 1);
}

#[test]
fn consumer_loss_counts_toward_max_delivery_attempts() {
    let mut q = with_settings(|s| s.max_delivery_attempts = 1);
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 1, false, false, &mut actions).unwrap();
    assert_eq!(delivered(&mut actions).len(), 1);
    q.remove_consumer(A, &mut actions);
    assert_eq!(forwards(&mut actions).len(), 1);
}

#[test]
fn zero_max_delivery_attempts_means_unlimited() {
    let mut q = with_settings(|s| s.max_delivery_attempts = 0);
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    let failed = Outcome::Modified {
        delivery_failed: true,
        undeliverable_here: false,
    };
    for attempt in 0..50u32 {
        q.flow(A, attempt, 1, false, false, &mut actions).unwrap();
        let got = delivered(&mut actions);
        q.settle(A, got[0].1, failed.clone(), &mut actions).unwrap();
    }
    assert!(forwards(&mut actions).is_empty());
    assert_eq!(q.depth(), 1);
}

#[test]
fn ttl_expiry_drops_without_an_expiry_address() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    q.set_now(1_000);
    q.enqueue(msg_with(1, |m| m.header.ttl = Some(100)), &mut actions)
        .unwrap();
    q.enqueue(msg(2), &mut actions).unwrap();
    q.set_now(1_100);
    q.expire_due(&mut actions);
    assert_eq!(q.depth(), 1);
    assert_eq!(q.counters().expired, 1);
    assert!(forwards(&mut actions).is_empty());
}

#[test]
fn expired_messages_move_to_the_expiry_address_and_are_skipped_at_dispatch() {
    let mut q = with_settings(|s| s.expiry_address = Some("expired".into()));
    let mut actions = Vec::new();
    q.set_now(1_000);
    q.enqueue(
        msg_with(1, |m| {
            m.routing = Some(Box::new(crate::core::RoutingFields {
                absolute_expiry: Some(1_050),
                ..Default::default()
            }))
        }),
        &mut actions,
    )
    .unwrap();
    q.enqueue(msg(2), &mut actions).unwrap();
    q.set_now(2_000);
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 5, false, false, &mut actions).unwrap();
    let got: Vec<u32> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Deliver(d) => Some(body(&d.message)),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![2]);
    let moved = forwards(&mut actions);
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].0, "expired");
    assert_eq!(
        moved[0].1.absolute_expiry(),
        None,
        "it does not expire again"
    );
    assert_eq!(
        annotation(&moved[0].1, "x-opt-original-address").as_deref(),
        Some("q")
    );
}

#[test]
fn max_length_with_reject_refuses_new_messages() {
    let mut q = with_settings(|s| s.max_length = Some(2));
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.enqueue(msg(2), &mut actions).unwrap();
    assert_eq!(
        q.enqueue(msg(3), &mut actions),
        Err(CoreError::QueueFull { queue: "q".into() })
    );
    assert_eq!(q.depth(), 2);
}

#[test]
fn max_length_with_drop_oldest_keeps_the_newest() {
    let mut q = with_settings(|s| {
        s.max_length = Some(2);
        s.overflow = crate::core::settings::OverflowPolicy::DropOldest;
    });
    let mut actions = Vec::new();
    for n in 0..5 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 5, false, false, &mut actions).unwrap();
    let got: Vec<u32> = delivered(&mut actions).iter().map(|d| d.2).collect();
    assert_eq!(got, vec![3, 4]);
    assert_eq!(q.counters().dropped, 3);
}

#[test]
fn max_bytes_counts_message_sizes() {
    let mut q = with_settings(|s| s.max_bytes = Some(10));
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.enqueue(msg(2), &mut actions).unwrap();
    assert!(q.enqueue(msg(3), &mut actions).is_err(), "12 bytes > 10");
}

#[test]
fn browsers_see_messages_without_taking_them() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    for n in 0..3 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    q.add_consumer(
        B,
        ConsumerOptions {
            browse: true,
            presettled: true,
            ..Default::default()
        },
    );
    q.flow(B, 0, 2, false, false, &mut actions).unwrap();
    let got: Vec<u32> = delivered(&mut actions).iter().map(|d| d.2).collect();
    assert_eq!(got, vec![0, 1]);
    q.flow(B, 2, 5, false, false, &mut actions).unwrap();
    let got: Vec<u32> = delivered(&mut actions).iter().map(|d| d.2).collect();
    assert_eq!(got, vec![2]);
    assert_eq!(q.depth(), 3, "browsing takes nothing");
    // A real consumer still gets all of them.
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 5, false, false, &mut actions).unwrap();
    assert_eq!(delivered(&mut actions).len(), 3);
}

#[test]
fn drop_oldest_drops_the_oldest_arrival_not_the_highest_priority() {
    let mut q = with_settings(|s| {
        s.max_length = Some(3);
        s.overflow = crate::core::settings::OverflowPolicy::DropOldest;
    });
    let mut actions = Vec::new();
    for (n, p) in [(0, 0), (1, 9), (2, 4), (3, 4)] {
        q.enqueue(msg_with(n, |m| m.header.priority = p), &mut actions)
            .unwrap();
    }
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 5, false, false, &mut actions).unwrap();
    let got: Vec<u32> = delivered(&mut actions).iter().map(|d| d.2).collect();
    assert_eq!(got, vec![1, 2, 3], "message 0 was the oldest");
}

#[test]
fn dead_lettering_within_the_dead_letter_queue_keeps_the_message_at_the_back() {
    let mut q = QueueState::new("DLQ", QueueSettings::default());
    let mut actions = Vec::new();
    q.enqueue(msg(1), &mut actions).unwrap();
    q.enqueue(msg(2), &mut actions).unwrap();
    q.add_consumer(A, ConsumerOptions::default());
    q.flow(A, 0, 1, false, false, &mut actions).unwrap();
    let d = delivered(&mut actions)[0].1;
    q.settle(A, d, Outcome::Rejected(None), &mut actions)
        .unwrap();
    assert!(forwards(&mut actions).is_empty());
    q.flow(A, 1, 2, false, false, &mut actions).unwrap();
    let got: Vec<u32> = delivered(&mut actions).iter().map(|d| d.2).collect();
    assert_eq!(got, vec![2, 1], "kept, behind the others");
}

#[test]
fn a_consumer_holds_at_most_max_unsettled_whatever_its_credit() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    for n in 0..6 {
        q.enqueue(msg(n), &mut actions).unwrap();
    }
    let limited = ConsumerOptions {
        max_unsettled: 2,
        ..ConsumerOptions::default()
    };
    q.add_consumer(A, limited);
    q.add_consumer(B, ConsumerOptions::default());
    q.flow(A, 0, 100, false, false, &mut actions).unwrap();
    let got = delivered(&mut actions);
    assert_eq!(got.iter().map(|d| d.2).collect::<Vec<_>>(), vec![0, 1]);
    // The rest waits for A to settle, or goes to another consumer.
    q.settle(A, got[0].1, Outcome::Accepted, &mut actions)
        .unwrap();
    let next = delivered(&mut actions);
    assert_eq!(
        next.iter().map(|d| (d.0, d.2)).collect::<Vec<_>>(),
        vec![(1, 2)]
    );
    q.flow(B, 0, 1, false, false, &mut actions).unwrap();
    assert_eq!(
        delivered(&mut actions)
            .iter()
            .map(|d| (d.0, d.2))
            .collect::<Vec<_>>(),
        vec![(2, 3)]
    );
    // Settling both gives A two more, in order.
    q.settle(A, got[1].1, Outcome::Accepted, &mut actions)
        .unwrap();
    q.settle(A, next[0].1, Outcome::Accepted, &mut actions)
        .unwrap();
    assert_eq!(
        delivered(&mut actions)
            .iter()
            .map(|d| d.2)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
}

#[test]
fn a_subscription_dead_letter_moves_back_to_its_queue_while_it_exists() {
    // A subscription queue of topic "prices" dead-letters a message ...
    let mut sub = QueueState::new("app.prices-sub", QueueSettings::default());
    sub.set_origin("prices");
    let mut actions = Vec::new();
    sub.enqueue(msg(1), &mut actions).unwrap();
    sub.add_consumer(A, ConsumerOptions::default());
    sub.flow(A, 0, 1, false, false, &mut actions).unwrap();
    let d = delivered(&mut actions)[0].1;
    sub.settle(A, d, Outcome::Rejected(None), &mut actions)
        .unwrap();
    let (_, dead) = forwards(&mut actions).remove(0);
    assert_eq!(
        annotation(&dead, "x-opt-original-queue").as_deref(),
        Some("app.prices-sub")
    );
    // ... which waits in the DLQ behind and before others.
    let mut dlq = QueueState::new("DLQ", QueueSettings::default());
    dlq.enqueue(msg(0), &mut actions).unwrap();
    dlq.enqueue(Arc::new(dead), &mut actions).unwrap();
    dlq.enqueue(msg(2), &mut actions).unwrap();
    // Back to the subscription, not to every subscriber of the topic; the
    // move stops, keeping order, at the message with no origin.
    let exists = |q: &str| q == "app.prices-sub";
    let report = dlq.move_out(&MoveTo::Original, usize::MAX, &exists, &mut actions);
    assert_eq!(report.moved, 0, "the oldest has no original address");
    assert_eq!(report.left, 3);
    assert!(report.stopped.is_some());
    let report = dlq.move_out(&MoveTo::Address("x".into()), 1, &exists, &mut actions);
    assert_eq!((report.moved, report.left), (1, 2));
    let report = dlq.move_out(&MoveTo::Original, 1, &exists, &mut actions);
    assert_eq!(report.moved, 1);
    let moved = forwards(&mut actions);
    assert_eq!(moved[0].0, "x");
    assert_eq!(body(&moved[0].1), 0);
    assert_eq!(
        (moved[1].0.as_str(), body(&moved[1].1)),
        ("app.prices-sub", 1)
    );
    assert_eq!(moved[1].1.header.delivery_count, 0, "it starts afresh");
    // Once the subscription is gone, to its topic.
    let mut again = QueueState::new("DLQ", QueueSettings::default());
    again
        .enqueue(Arc::new(moved[1].1.clone()), &mut actions)
        .unwrap();
    let report = again.move_out(&MoveTo::Original, usize::MAX, &|_| false, &mut actions);
    assert_eq!(report.moved, 1);
    assert_eq!(forwards(&mut actions)[0].0, "prices");
}

#[test]
fn a_move_takes_grouped_messages_oldest_first_across_groups() {
    let mut q = QueueState::new("q", QueueSettings::default());
    let mut actions = Vec::new();
    for (n, group) in [(0, "a"), (1, "b"), (2, "a"), (3, "b")] {
        let m = msg_with(n, |m| {
            m.routing = Some(Box::new(crate::core::message::RoutingFields {
                group_id: Some(Bytes::from(group)),
                ..Default::default()
            }))
        });
        q.enqueue(m, &mut actions).unwrap();
    }
    let report = q.move_out(&MoveTo::Address("t".into()), 3, &|_| true, &mut actions);
    assert_eq!((report.moved, report.left), (3, 1));
    let bodies: Vec<u32> = forwards(&mut actions)
        .iter()
        .map(|(_, m)| body(m))
        .collect();
    assert_eq!(bodies, vec![0, 1, 2]);
}
