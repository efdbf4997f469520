//! Delivery semantics end to end (SPEC §2–§3) with fe2o3-amqp's client:
//! dead-lettering, expiry, priority, limits, options, topics, relay,
//! dynamic nodes and browsing.

mod common;

use common::client::{annotation, connect, drain_all, receiver, recv, send, take, text};
use common::{fixture, Broker};
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{
    DistributionMode, Header, Message, Modified, Outcome, Priority, Properties, Source,
    TerminusDurability, TerminusExpiryPolicy,
};
use fe2o3_amqp::types::primitives::{Symbol, Value};

#[tokio::test]
async fn rejected_messages_go_to_the_dead_letter_queue_annotated() {
    let broker = Broker::start();
    let (mut c, mut s) = connect(&broker, "dlq-test").await;
    send(&mut s, "work", &["bad"]).await;
    let mut r = receiver(&mut s, "r", "work").await;
    r.set_credit(1).await.unwrap();
    let d = recv(&mut r).await;
    r.reject(&d, None).await.unwrap();
    let mut dlq = receiver(&mut s, "dlq", "DLQ").await;
    let dead = &take(&mut dlq, 1).await[0];
    assert_eq!(text(dead), "bad");
    assert_eq!(
        annotation(dead, "x-opt-dead-letter-reason"),
        Some(Value::String("rejected".into()))
    );
    assert_eq!(
        annotation(dead, "x-opt-original-address"),
        Some(Value::String("work".into()))
    );
    c.close().await.unwrap();
}

#[tokio::test]
async fn max_delivery_attempts_dead_letters_with_the_count() {
    let broker = Broker::start_with(Some(&fixture("semantics.toml")));
    let (mut c, mut s) = connect(&broker, "retry-test").await;
    send(&mut s, "retry.orders", &["flaky"]).await;
    let mut r = receiver(&mut s, "r", "retry.orders").await;
    let failed = Modified {
        delivery_failed: Some(true),
        undeliverable_here: None,
        message_annotations: None,
    };
    for attempt in 0..2u32 {
        r.set_credit(1).await.unwrap();
        let d = recv(&mut r).await;
        assert_eq!(
            d.message().header.as_ref().map_or(0, |h| h.delivery_count),
            attempt
        );
        r.modify(&d, failed.clone()).await.unwrap();
    }
    assert!(
        drain_all(&mut r, 5).await.is_empty(),
        "the queue is empty after two failures"
    );
    let mut dlq = receiver(&mut s, "dlq", "DLQ").await;
    let dead = &take(&mut dlq, 1).await[0];
    assert_eq!(text(dead), "flaky");
    assert_eq!(dead.message().header.as_ref().unwrap().delivery_count, 2);
    assert_eq!(
        annotation(dead, "x-opt-original-address"),
        Some(Value::String("retry.orders".into()))
    );
    c.close().await.unwrap();
}

#[tokio::test]
async fn expired_messages_are_dropped_or_moved_to_the_expiry_address() {
    let broker = Broker::start_with(Some(&fixture("semantics.toml")));
    let (mut c, mut s) = connect(&broker, "ttl-test").await;
    let mut sender = Sender::attach(&mut s, "ttl", "short.lived").await.unwrap();
    let header = Header {
        ttl: Some(50),
        ..Default::default()
    };
    sender
        .send(
            Message::builder()
                .header(header.clone())
                .value("gone")
                .build(),
        )
        .await
        .unwrap();
    sender.send("stays").await.unwrap();
    let mut plain = Sender::attach(&mut s, "ttl2", "plain").await.unwrap();
    plain
        .send(Message::builder().header(header).value("dropped").build())
        .await
        .unwrap();
    plain.send("kept").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let mut r = receiver(&mut s, "r", "short.lived").await;
    assert_eq!(drain_all(&mut r, 5).await, vec!["stays".to_string()]);
    let mut expired = receiver(&mut s, "e", "expired").await;
    let moved = &take(&mut expired, 1).await[0];
    assert_eq!(text(moved), "gone");
    assert_eq!(
        annotation(moved, "x-opt-original-address"),
        Some(Value::String("short.lived".into()))
    );
    let mut r = receiver(&mut s, "r2", "plain").await;
    assert_eq!(drain_all(&mut r, 5).await, vec!["kept".to_string()]);
    c.close().await.unwrap();
}

#[tokio::test]
async fn higher_priority_messages_are_delivered_first() {
    let broker = Broker::start();
    let (mut c, mut s) = connect(&broker, "prio-test").await;
    let mut sender = Sender::attach(&mut s, "p", "prio").await.unwrap();
    for (body, p) in [("low", 1u8), ("high", 9), ("mid", 4), ("high2", 9)] {
        let header = Header {
            priority: Priority(p),
            ..Default::default()
        };
        sender
            .send(Message::builder().header(header).value(body).build())
            .await
            .unwrap();
    }
    let mut r = receiver(&mut s, "r", "prio").await;
    let got: Vec<String> = take(&mut r, 4).await.iter().map(text).collect();
    assert_eq!(got, vec!["high", "high2", "mid", "low"]);
    c.close().await.unwrap();
}

#[tokio::test]
async fn consumer_priority_from_link_properties_and_options() {
    let broker = Broker::start();
    let (mut c, mut s) = connect(&broker, "cprio-test").await;
    let mut low = receiver(&mut s, "low", "cprio").await;
    let mut high = Receiver::builder()
        .name("high")
        .source("cprio")
        .credit_mode(CreditMode::Manual)
        .properties({
            let mut props = fe2o3_amqp::types::definitions::Fields::new();
            props.insert(Symbol::from("priority"), Value::Int(10));
            props
        })
        .attach(&mut s)
        .await
        .unwrap();
    let mut option = receiver(&mut s, "opt", "cprio?consumer.priority=5").await;
    low.set_credit(10).await.unwrap();
    option.set_credit(10).await.unwrap();
    high.set_credit(2).await.unwrap();
    send(&mut s, "cprio", &["a", "b", "c", "d"]).await;
    for expected in ["a", "b"] {
        let d = recv(&mut high).await;
        assert_eq!(text(&d), expected);
        high.accept(&d).await.unwrap();
    }
    for expected in ["c", "d"] {
        let d = recv(&mut option).await;
        assert_eq!(text(&d), expected);
        option.accept(&d).await.unwrap();
    }
    assert!(drain_all(&mut low, 1).await.is_empty());
    c.close().await.unwrap();
}

#[tokio::test]
async fn undeliverable_here_goes_to_another_consumer() {
    let broker = Broker::start();
    let (mut c, mut s) = connect(&broker, "udh-test").await;
    send(&mut s, "udh", &["x"]).await;
    let mut a = receiver(&mut s, "a", "udh").await;
    a.set_credit(5).await.unwrap();
    let d = recv(&mut a).await;
    let modified = Modified {
        delivery_failed: None,
        undeliverable_here: Some(true),
        message_annotations: None,
    };
    a.modify(&d, modified).await.unwrap();
    let mut b = receiver(&mut s, "b", "udh").await;
    let got = &take(&mut b, 1).await[0];
    assert_eq!(text(got), "x");
    assert!(drain_all(&mut a, 1).await.is_empty());
    c.close().await.unwrap();
}

#[tokio::test]
async fn queue_limits_reject_or_drop_the_oldest() {
    let broker = Broker::start_with(Some(&fixture("semantics.toml")));
    let (mut c, mut s) = connect(&broker, "limit-test").await;
    let outcomes = send(&mut s, "bounded.q", &["1", "2", "3"]).await;
    assert!(matches!(outcomes[1], Outcome::Accepted(_)));
    match &outcomes[2] {
        Outcome::Rejected(r) => {
            let e = r.error.as_ref().unwrap();
            assert!(
                format!("{:?}", e.condition).contains("ResourceLimitExceeded"),
                "{e:?}"
            );
        }
        other => panic!("expected rejected, got {other:?}"),
    }
    send(&mut s, "rolling.q", &["1", "2", "3"]).await;
    let mut r = receiver(&mut s, "r", "rolling.q").await;
    assert_eq!(
        drain_all(&mut r, 5).await,
        vec!["2".to_string(), "3".to_string()]
    );
    c.close().await.unwrap();
}

#[tokio::test]
async fn queue_options_apply_at_auto_create_and_mismatches_are_refused() {
    let broker = Broker::start();
    let (mut c, mut s) = connect(&broker, "opt-test").await;
    let outcomes = send(&mut s, "made?queue.max-length=1", &["1", "2"]).await;
    assert!(matches!(outcomes[1], Outcome::Rejected(_)), "{outcomes:?}");
    // Same value: fine. Different value: precondition-failed.
    Sender::attach(&mut s, "same", "made?queue.max-length=1")
        .await
        .expect("same settings");
    let err = Sender::attach(&mut s, "other", "made?queue.max-length=7")
        .await
        .expect_err("refused");
    assert!(format!("{err:?}").contains("PreconditionFailed"), "{err:?}");
    let _ = c.close().await;
    let (mut c, mut s) = connect(&broker, "opt-test-2").await;
    let err = Sender::attach(&mut s, "bad", "made2?queue.no-such-setting=1")
        .await
        .expect_err("refused");
    assert!(
        format!("{err:?}").contains("InvalidField")
            && format!("{err:?}").contains("no-such-setting"),
        "{err:?}"
    );
    let _ = c.close().await;
}

#[tokio::test]
async fn every_topic_subscriber_gets_a_copy() {
    let broker = Broker::start_with(Some(&fixture("semantics.toml")));
    let (mut c, mut s) = connect(&broker, "topic-test").await;
    let mut a = receiver(&mut s, "a", "topic://prices").await;
    let mut b = receiver(&mut s, "b", "topic://prices").await;
    // news.# is a topic by configuration: no prefix needed.
    let mut n = receiver(&mut s, "n", "news.sport").await;
    send(&mut s, "topic://prices", &["p1", "p2"]).await;
    send(&mut s, "news.sport", &["goal"]).await;
    for r in [&mut a, &mut b] {
        let got: Vec<String> = take(r, 2).await.iter().map(text).collect();
        assert_eq!(got, vec!["p1", "p2"]);
    }
    assert_eq!(text(&take(&mut n, 1).await[0]), "goal");
    c.close().await.unwrap();
}

fn durable_source(address: &str) -> Source {
    Source::builder()
        .address(address)
        .durable(TerminusDurability::UnsettledState)
        .expiry_policy(TerminusExpiryPolicy::Never)
        .build()
}

#[tokio::test]
async fn a_durable_subscription_keeps_messages_while_its_subscriber_is_away() {
    let broker = Broker::start();
    {
        let (mut c, mut s) = connect(&broker, "client-1").await;
        let r = receiver(&mut s, "sub", durable_source("topic://events")).await;
        // Detach without closing: the subscription stays.
        r.detach().await.expect("detach");
        c.close().await.unwrap();
    }
    let (mut c, mut s) = connect(&broker, "publisher").await;
    send(&mut s, "topic://events", &["while-away-1", "while-away-2"]).await;
    c.close().await.unwrap();
    let (mut c, mut s) = connect(&broker, "client-1").await;
    let mut r = receiver(&mut s, "sub", durable_source("topic://events")).await;
    let got: Vec<String> = take(&mut r, 2).await.iter().map(text).collect();
    assert_eq!(got, vec!["while-away-1", "while-away-2"]);
    // Closing the link removes the subscription.
    r.close().await.unwrap();
    c.close().await.unwrap();
    let (mut c, mut s) = connect(&broker, "publisher").await;
    send(&mut s, "topic://events", &["after-unsubscribe"]).await;
    c.close().await.unwrap();
    let (mut c, mut s) = connect(&broker, "client-1").await;
    let mut r = receiver(&mut s, "sub", durable_source("topic://events")).await;
    assert!(drain_all(&mut r, 5).await.is_empty());
    c.close().await.unwrap();
}

#[tokio::test]
async fn anonymous_relay_routes_on_properties_to() {
    let broker = Broker::start();
    let (mut c, mut s) = connect(&broker, "relay-test").await;
    let mut relay = Sender::builder()
        .name("relay")
        .target(fe2o3_amqp::types::messaging::Target::builder().build())
        .attach(&mut s)
        .await
        .expect("null target accepted");
    for to in ["relay-a", "relay-b", "queue://relay-a"] {
        let props = Properties::builder().to(to.to_string()).build();
        let outcome = relay
            .send(Message::builder().properties(props).value(to).build())
            .await
            .unwrap();
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    }
    let outcome = relay
        .send(Message::builder().value("nowhere").build())
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Rejected(_)),
        "a message without `to` is rejected"
    );
    let mut a = receiver(&mut s, "a", "relay-a").await;
    let got: Vec<String> = take(&mut a, 2).await.iter().map(text).collect();
    assert_eq!(got, vec!["relay-a", "queue://relay-a"]);
    c.close().await.unwrap();
}

#[tokio::test]
async fn anonymous_relay_to_an_unknown_address_without_auto_create_is_not_found() {
    let broker = Broker::start_with(Some(&fixture("no-autocreate.toml")));
    let (mut c, mut s) = connect(&broker, "relay-nf").await;
    let mut relay = Sender::builder()
        .name("relay")
        .target(fe2o3_amqp::types::messaging::Target::builder().build())
        .attach(&mut s)
        .await
        .unwrap();
    let props = Properties::builder().to("missing".to_string()).build();
    match relay
        .send(Message::builder().properties(props).value("x").build())
        .await
        .unwrap()
    {
        Outcome::Rejected(r) => assert!(format!("{:?}", r.error).contains("NotFound"), "{r:?}"),
        other => panic!("expected rejected, got {other:?}"),
    }
    c.close().await.unwrap();
}

#[tokio::test]
async fn browsing_sees_messages_without_consuming_them() {
    let broker = Broker::start();
    let (mut c, mut s) = connect(&broker, "browse-test").await;
    send(&mut s, "browsed", &["one", "two"]).await;
    let source = Source::builder()
        .address("browsed")
        .distribution_mode(DistributionMode::Copy)
        .build();
    let mut browser = Receiver::builder()
        .name("browser")
        .source(source)
        .sender_settle_mode(SenderSettleMode::Settled)
        .credit_mode(CreditMode::Manual)
        .attach(&mut s)
        .await
        .unwrap();
    browser.set_credit(5).await.unwrap();
    for expected in ["one", "two"] {
        assert_eq!(text(&recv(&mut browser).await), expected);
    }
    browser.close().await.unwrap();
    let mut r = receiver(&mut s, "r", "browsed").await;
    let got: Vec<String> = take(&mut r, 2).await.iter().map(text).collect();
    assert_eq!(got, vec!["one", "two"]);
    c.close().await.unwrap();
}
