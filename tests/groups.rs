//! Exclusive consumers (SPEC §4) and message groups (SPEC §5) through the
//! real broker: fe2o3-amqp producers, and consumers on Ordo's client
//! connection so the broker's attach, its `active` flows and a crash of the
//! consumer are visible.

mod common;

use common::raw::{flow_active, AttachOptions, RawConsumer};
use common::{Broker, DEADLINE};
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::types::definitions::Fields;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, FilterSet, Message, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Connection, Session};
use std::collections::BTreeMap;
use std::time::Duration;

/// Sends `(body, group)` messages to `address`, each accepted.
async fn send(url: &str, address: &str, messages: &[(String, Option<&str>)]) {
    let mut connection = Connection::open("producer", url).await.expect("connect");
    let mut session = Session::begin(&mut connection).await.expect("begin");
    let mut sender = Sender::attach(&mut session, "producer", address)
        .await
        .expect("attach");
    for (body, group) in messages {
        let mut builder = Message::builder();
        if let Some(g) = group {
            builder = builder.properties(Properties::builder().group_id(g.to_string()).build());
        }
        let message = builder.value(body.clone()).build();
        let outcome = tokio::time::timeout(DEADLINE, sender.send(message))
            .await
            .expect("sent in time")
            .expect("send");
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    }
    sender.close().await.expect("close sender");
    session.end().await.expect("end");
    connection.close().await.expect("close");
}

fn plain(bodies: std::ops::Range<u32>) -> Vec<(String, Option<&'static str>)> {
    bodies.map(|n| (format!("m{n}"), None)).collect()
}

fn props(entries: &[(&str, Value)]) -> Option<Fields> {
    let mut f = Fields::new();
    for (k, v) in entries {
        f.insert(Symbol::from(*k), v.clone());
    }
    Some(f)
}

fn exclusive(priority: i32) -> AttachOptions {
    AttachOptions {
        properties: props(&[
            ("exclusive-consumer", Value::Bool(true)),
            ("priority", Value::Int(priority)),
        ]),
        ..Default::default()
    }
}

fn echoed_exclusive(c: &RawConsumer) -> bool {
    c.attach.properties.as_ref().is_some_and(|p| {
        p.iter()
            .any(|(k, v)| k.as_str() == "exclusive-consumer" && *v == Value::Bool(true))
    })
}

#[tokio::test]
async fn exclusive_failover_keeps_order_and_tells_each_consumer_whether_it_is_active() {
    let broker = Broker::start();
    let url = broker.url();
    let mut a = RawConsumer::attach(&url, "a", "ex", exclusive(0))
        .await
        .unwrap();
    let mut b = RawConsumer::attach(&url, "b", "ex", exclusive(0))
        .await
        .unwrap();
    assert!(echoed_exclusive(&a) && echoed_exclusive(&b));
    a.wait_flow(|f| flow_active(f) == Some(true)).await;
    b.wait_flow(|f| flow_active(f) == Some(false)).await;
    a.credit(10).await;
    b.credit(10).await;
    send(&url, "ex", &plain(0..6)).await;
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(a.next().await);
    }
    assert_eq!(
        got.iter().map(|r| r.text()).collect::<Vec<_>>(),
        (0..6).map(|n| format!("m{n}")).collect::<Vec<_>>()
    );
    assert!(b.next_within(Duration::from_millis(200)).await.is_none());
    a.accept(got[0].delivery_id).await;
    a.accept(got[1].delivery_id).await;
    // Make sure the acceptances arrived before the crash.
    a.drain(0).await;
    a.wait_flow(|f| f.drain).await;
    a.kill();
    b.wait_flow(|f| flow_active(f) == Some(true)).await;
    let mut again = Vec::new();
    for _ in 0..4 {
        again.push(b.next().await);
    }
    assert_eq!(
        again
            .iter()
            .map(|r| (r.text(), r.delivery_count()))
            .collect::<Vec<_>>(),
        vec![
            ("m2".to_string(), 1),
            ("m3".to_string(), 1),
            ("m4".to_string(), 1),
            ("m5".to_string(), 1)
        ]
    );
}

#[tokio::test]
async fn a_higher_priority_consumer_takes_over_once_the_active_one_settled() {
    let broker = Broker::start();
    let url = broker.url();
    let mut a = RawConsumer::attach(&url, "a", "takeover", exclusive(0))
        .await
        .unwrap();
    a.credit(2).await;
    send(&url, "takeover", &plain(0..4)).await;
    let (m0, m1) = (a.next().await, a.next().await);
    let mut b = RawConsumer::attach(&url, "b", "takeover", exclusive(5))
        .await
        .unwrap();
    b.credit(10).await;
    a.credit(10).await;
    // A holds m0 and m1 unsettled: nobody gets more meanwhile.
    assert!(a.next_within(Duration::from_millis(200)).await.is_none());
    assert!(b.next_within(Duration::from_millis(50)).await.is_none());
    a.accept(m0.delivery_id).await;
    a.accept(m1.delivery_id).await;
    a.wait_flow(|f| flow_active(f) == Some(false)).await;
    b.wait_flow(|f| flow_active(f) == Some(true)).await;
    assert_eq!(
        (b.next().await.text(), b.next().await.text()),
        ("m2".into(), "m3".into())
    );
}

#[tokio::test]
async fn exclusivity_and_priority_from_address_options_and_the_queue_setting() {
    let broker = Broker::start();
    let url = broker.url();
    let opts = AttachOptions::default();
    let a = RawConsumer::attach(&url, "a", "opt?consumer.exclusive=true", opts.clone())
        .await
        .unwrap();
    assert!(echoed_exclusive(&a));
    let b = RawConsumer::attach(&url, "b", "sac?queue.exclusive=true", opts.clone())
        .await
        .unwrap();
    assert!(
        echoed_exclusive(&b),
        "x-single-active-consumer queue: every consumer exclusive"
    );
    let refused = RawConsumer::attach(&url, "c", "opt?consumer.exclusive=maybe", opts).await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn many_groups_spread_over_three_consumers_each_group_in_order_on_one() {
    let broker = Broker::start();
    let url = broker.url();
    let mut consumers = Vec::new();
    for name in ["a", "b", "c"] {
        let mut c = RawConsumer::attach(&url, name, "grouped", AttachOptions::default())
            .await
            .unwrap();
        c.credit(1000).await;
        consumers.push(c);
    }
    let groups: Vec<String> = (0..30).map(|g| format!("g{g}")).collect();
    let messages: Vec<(String, Option<&str>)> = (0..300)
        .map(|n| (format!("{n}"), Some(groups[n % 30].as_str())))
        .collect();
    send(&url, "grouped", &messages).await;
    // Who got which group, in what order, and the first-for-consumer marks.
    let mut seen: BTreeMap<usize, Vec<(usize, u32, bool)>> = BTreeMap::new();
    let mut total = 0;
    while total < 300 {
        for (i, c) in consumers.iter_mut().enumerate() {
            while let Some(r) = c.next_within(Duration::from_millis(20)).await {
                let n: usize = r.text().parse().unwrap();
                let first =
                    r.annotation("x-opt-group-first-for-consumer") == Some(Value::Bool(true));
                seen.entry(n % 30).or_default().push((i, n as u32, first));
                c.accept(r.delivery_id).await;
                total += 1;
            }
        }
    }
    let mut per_consumer = [0; 3];
    for (group, list) in &seen {
        let owner = list[0].0;
        assert!(
            list.iter().all(|(c, _, _)| *c == owner),
            "group {group} split: {list:?}"
        );
        assert!(
            list.windows(2).all(|w| w[0].1 < w[1].1),
            "group {group} out of order"
        );
        assert!(list[0].2, "group {group}: first message not marked");
        assert!(
            list[1..].iter().all(|(_, _, f)| !f),
            "group {group}: later message marked"
        );
        per_consumer[owner] += 1;
    }
    assert_eq!(per_consumer, [10, 10, 10], "groups spread evenly");
}

#[tokio::test]
async fn a_crashed_group_owner_hands_its_group_on_in_order() {
    let broker = Broker::start();
    let url = broker.url();
    let mut a = RawConsumer::attach(&url, "a", "crash", AttachOptions::default())
        .await
        .unwrap();
    a.credit(3).await;
    let messages: Vec<(String, Option<&str>)> =
        (0..6).map(|n| (format!("{n}"), Some("g"))).collect();
    send(&url, "crash", &messages).await;
    let first = a.next().await;
    let _second = a.next().await;
    let _third = a.next().await;
    a.accept(first.delivery_id).await;
    a.drain(0).await;
    a.wait_flow(|f| f.drain).await;
    let mut b = RawConsumer::attach(&url, "b", "crash", AttachOptions::default())
        .await
        .unwrap();
    b.credit(10).await;
    // A late joiner does not take a live group.
    assert!(b.next_within(Duration::from_millis(200)).await.is_none());
    a.kill();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(b.next().await);
    }
    assert_eq!(
        got.iter().map(|r| r.text()).collect::<Vec<_>>(),
        vec!["1", "2", "3", "4", "5"]
    );
    assert_eq!(
        got[0].annotation("x-opt-group-first-for-consumer"),
        Some(Value::Bool(true))
    );
    assert_eq!((got[0].delivery_count(), got[2].delivery_count()), (1, 0));
}

#[tokio::test]
async fn a_group_closed_by_its_last_message_is_released() {
    let broker = Broker::start();
    let url = broker.url();
    let mut a = RawConsumer::attach(&url, "a", "close", AttachOptions::default())
        .await
        .unwrap();
    a.credit(2).await;
    // Qpid JMS sends JMSXGroupSeq = -1 as group-sequence 4294967295.
    let mut connection = Connection::open("producer", url.as_str()).await.unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut sender = Sender::attach(&mut session, "p", "close").await.unwrap();
    let open = Message::builder()
        .properties(Properties::builder().group_id("g".to_string()).build())
        .value("open")
        .build();
    let close = Message::builder()
        .properties(
            Properties::builder()
                .group_id("g".to_string())
                .group_sequence(u32::MAX)
                .build(),
        )
        .value("close")
        .build();
    sender.send(open).await.unwrap();
    sender.send(close).await.unwrap();
    let (m0, m1) = (a.next().await, a.next().await);
    a.accept(m0.delivery_id).await;
    a.accept(m1.delivery_id).await;
    a.drain(0).await;
    a.wait_flow(|f| f.drain).await;
    // A has no credit left; the group is free, so its next message goes
    // to B instead of waiting for A.
    let mut b = RawConsumer::attach(&url, "b", "close", AttachOptions::default())
        .await
        .unwrap();
    b.credit(5).await;
    let again = Message::builder()
        .properties(Properties::builder().group_id("g".to_string()).build())
        .value("again")
        .build();
    sender.send(again).await.unwrap();
    assert_eq!(b.next().await.text(), "again");
}

#[tokio::test]
async fn jmsx_group_id_in_application_properties_groups_too() {
    let broker = Broker::start();
    let url = broker.url();
    let mut a = RawConsumer::attach(&url, "a", "jms", AttachOptions::default())
        .await
        .unwrap();
    a.credit(1).await;
    let mut connection = Connection::open("producer", url.as_str()).await.unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut sender = Sender::attach(&mut session, "p", "jms").await.unwrap();
    for n in 0..3 {
        let m = Message::builder()
            .application_properties(
                ApplicationProperties::builder()
                    .insert("JMSXGroupID", "order-7")
                    .build(),
            )
            .value(format!("{n}"))
            .build();
        sender.send(m).await.unwrap();
    }
    assert_eq!(a.next().await.text(), "0");
    let mut b = RawConsumer::attach(&url, "b", "jms", AttachOptions::default())
        .await
        .unwrap();
    b.credit(10).await;
    // The rest of order-7 waits for its owner A.
    assert!(b.next_within(Duration::from_millis(200)).await.is_none());
    a.credit(10).await;
    assert_eq!(
        (a.next().await.text(), a.next().await.text()),
        ("1".into(), "2".into())
    );
}

fn session_filter(value: Value) -> Option<FilterSet> {
    let mut f = FilterSet::new();
    f.insert(Symbol::from("com.microsoft:session-filter"), value);
    Some(f)
}

#[tokio::test]
async fn group_filters_by_property_option_and_session_filter() {
    let broker = Broker::start();
    let url = broker.url();
    let messages: Vec<(String, Option<&str>)> = vec![
        ("a1".into(), Some("a")),
        ("b1".into(), Some("b")),
        ("c1".into(), Some("c")),
        ("d1".into(), Some("d")),
        ("a2".into(), Some("a")),
    ];
    send(&url, "filtered", &messages).await;
    let by_property = AttachOptions {
        properties: props(&[("group-filter", Value::String("a".into()))]),
        ..Default::default()
    };
    let mut a = RawConsumer::attach(&url, "fa", "filtered", by_property)
        .await
        .unwrap();
    a.credit(10).await;
    assert_eq!(
        (a.next().await.text(), a.next().await.text()),
        ("a1".into(), "a2".into())
    );
    let mut b = RawConsumer::attach(
        &url,
        "fb",
        "filtered?consumer.group-filter=b",
        AttachOptions::default(),
    )
    .await
    .unwrap();
    b.credit(10).await;
    assert_eq!(b.next().await.text(), "b1");
    assert!(b.next_within(Duration::from_millis(100)).await.is_none());
    let session_c = AttachOptions {
        filter: session_filter(Value::String("c".into())),
        ..Default::default()
    };
    let mut c = RawConsumer::attach(&url, "fc", "filtered", session_c.clone())
        .await
        .unwrap();
    c.credit(10).await;
    assert_eq!(c.next().await.text(), "c1");
    // A second session receiver for c is refused as Service Bus does.
    let refused = RawConsumer::attach(&url, "fc2", "filtered", session_c).await;
    let error = format!("{:?}", refused.err().expect("refused"));
    assert!(
        error.contains("com.microsoft:session-cannot-be-locked"),
        "{error}"
    );
    // A null session filter gets whichever unowned group has messages: d.
    let any = AttachOptions {
        filter: session_filter(Value::Null),
        ..Default::default()
    };
    let mut d = RawConsumer::attach(&url, "fd", "filtered", any.clone())
        .await
        .unwrap();
    let echoed = d
        .attach
        .source
        .as_ref()
        .and_then(|s| s.filter.as_ref())
        .and_then(|f| {
            f.iter()
                .find(|(k, _)| k.as_str() == "com.microsoft:session-filter")
        })
        .map(|(_, v)| v.clone());
    assert_eq!(echoed, Some(Value::String("d".into())));
    d.credit(10).await;
    assert_eq!(d.next().await.text(), "d1");
    // None left: refused with com.microsoft:timeout.
    let none = RawConsumer::attach(&url, "fe", "filtered", any).await;
    let error = format!("{:?}", none.err().expect("refused"));
    assert!(error.contains("com.microsoft:timeout"), "{error}");
}
