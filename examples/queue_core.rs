//! The queue state machine alone, with no network: nanoseconds per message
//! through enqueue, dispatch and acceptance, for a number of groups and
//! consumers. It shows what dispatch costs as groups and consumers grow
//! (nothing in it walks them per message), apart from connection costs.
//!
//! ```sh
//! cargo run --release --example queue_core            # the standard table
//! cargo run --release --example queue_core -- 10000 8 # one run: groups consumers
//! ```

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ordo::core::queue::{Action, ConsumerOptions, Outcome, QueueState};
use ordo::core::settings::{GroupOrdering, QueueSettings};
use ordo::core::{ConsumerId, Message, RoutingFields};

/// Messages per run.
const MESSAGES: u64 = 2_000_000;

/// Deliveries accepted at once.
const SETTLE_BATCH: usize = 256;

/// Runs `MESSAGES` through a queue with `groups` groups (0: none) and
/// `consumers` consumers that grant 100 credit whenever theirs runs out and
/// accept in batches of 256 (one at a time on a strict queue). Returns
/// nanoseconds per message.
fn run(groups: u32, consumers: u64, strict: bool) -> f64 {
    let settings = QueueSettings {
        group_ordering: if strict {
            GroupOrdering::Strict
        } else {
            GroupOrdering::None
        },
        ..Default::default()
    };
    let mut q = QueueState::new("q", settings);
    let mut actions = Vec::new();
    for c in 0..consumers {
        q.attach_consumer(ConsumerId(c), ConsumerOptions::default(), &mut actions)
            .expect("attach");
    }
    let names: Vec<Bytes> = (0..groups).map(|g| Bytes::from(format!("g{g}"))).collect();
    let messages: Vec<Arc<Message>> = (0..1000u32)
        .map(|i| {
            let mut m = Message::from_bare(Bytes::from(vec![0u8; 1024]));
            if groups > 0 {
                m.routing = Some(Box::new(RoutingFields {
                    group_id: Some(names[i as usize % groups as usize].clone()),
                    ..Default::default()
                }));
            }
            Arc::new(m)
        })
        .collect();
    let mut delivery_counts = vec![0u32; consumers as usize];
    let mut credit = vec![100u32; consumers as usize];
    for c in 0..consumers {
        q.flow(ConsumerId(c), 0, 100, false, false, &mut actions)
            .expect("flow");
    }
    let mut held: Vec<(u64, u64)> = Vec::new();
    let started = Instant::now();
    for i in 0..MESSAGES {
        q.enqueue(Arc::clone(&messages[(i % 1000) as usize]), &mut actions)
            .expect("enqueue");
        let mut out_of_credit = Vec::new();
        for action in actions.drain(..) {
            if let Action::Deliver(d) = action {
                let c = d.consumer.0 as usize;
                delivery_counts[c] += 1;
                credit[c] -= 1;
                if credit[c] == 0 {
                    out_of_credit.push(c);
                }
                held.push((d.consumer.0, d.delivery_id));
            }
        }
        for c in out_of_credit {
            credit[c] = 100;
            q.flow(
                ConsumerId(c as u64),
                delivery_counts[c],
                100,
                false,
                false,
                &mut actions,
            )
            .expect("flow");
        }
        if held.len() >= SETTLE_BATCH || strict {
            for (c, id) in held.drain(..) {
                q.settle(ConsumerId(c), id, Outcome::Accepted, &mut actions)
                    .expect("settle");
            }
        }
    }
    started.elapsed().as_nanos() as f64 / MESSAGES as f64
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if let [groups, consumers] = args[..] {
        println!("{:.0} ns/msg", run(groups as u32, consumers, false));
        return;
    }
    println!("| groups | consumers | strict | ns/msg |");
    println!("|---|---|---|---|");
    for (groups, consumers, strict) in [
        (0, 2, false),
        (0, 200, false),
        (10, 8, false),
        (10_000, 8, false),
        (10_000, 200, false),
        (1_000, 8, true),
    ] {
        let ns = run(groups, consumers, strict);
        println!("| {groups} | {consumers} | {strict} | {ns:.0} |");
    }
}
