//! Wire details outside testing found wrong, through the real broker: link
//! credit of 2³¹ and more, message formats other than 0, the broker's
//! settlement of a consumer's rejection, `$` names, URL addresses, the
//! attach of a refused consumer, and the length of node names.

mod common;

use std::time::Duration;

use common::raw::{AttachOptions, RawConsumer};
use common::{Broker, DEADLINE};
use fe2o3_amqp::frames::amqp::FrameBody;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::{AmqpError, Error as ErrorFrame, ErrorCondition, Role};
use fe2o3_amqp::types::messaging::{
    AmqpValue, DeliveryState, FilterSet, Message, Outcome, Rejected, Source,
};
use fe2o3_amqp::types::performatives::{Attach, Transfer};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::{Connection, Session};
use ordo::amqp::client::{ClientConfig, ClientConn, ClientError};
use ordo::amqp::frame::write_frame;
use tokio::time::timeout;

/// Sends `bodies` to `address` on a new connection; their outcomes.
async fn send(url: &str, address: &str, bodies: &[&str]) -> Vec<Outcome> {
    let mut c = Connection::open("producer", url).await.unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let mut sender = Sender::attach(&mut s, "producer", address).await.unwrap();
    let mut outcomes = Vec::new();
    for body in bodies {
        let outcome = timeout(DEADLINE, sender.send(body.to_string()))
            .await
            .expect("settled in time")
            .unwrap();
        outcomes.push(outcome);
    }
    c.close().await.unwrap();
    outcomes
}

/// The refusal of attaching a consumer to `address`.
async fn refused(url: &str, address: &str) -> String {
    match RawConsumer::attach(url, "refused", address, AttachOptions::default()).await {
        Err(ClientError::Refused(error)) => error,
        Ok(_) => panic!("attaching to {} bytes must be refused", address.len()),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn link_credit_of_two_to_the_31_and_more_delivers() {
    let broker = Broker::start();
    let url = broker.url();
    for credit in [1u32 << 31, u32::MAX] {
        let queue = format!("credit-{credit}");
        let bodies: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        send(&url, &queue, &refs).await;
        let mut c = RawConsumer::attach(&url, "big", &queue, AttachOptions::default())
            .await
            .unwrap();
        c.credit(credit).await;
        let mut got = Vec::new();
        for _ in 0..20 {
            let r = c.next().await;
            c.accept(r.delivery_id).await;
            got.push(r.text());
        }
        assert_eq!(got, bodies, "credit {credit}");
        c.close().await;
    }
}

#[tokio::test]
async fn a_batch_in_the_service_bus_format_is_refused_not_stored() {
    let broker = Broker::start();
    let config = ClientConfig::from_url(&broker.url()).unwrap();
    let mut conn = ClientConn::connect(&config).await.unwrap();
    conn.attach(0, "batcher", Role::Sender, Some("formats"), false)
        .await
        .unwrap();
    let message = serde_amqp::to_vec(&AmqpValue(Value::String("inner".into()))).unwrap();
    let envelope = serde_amqp::to_vec(&fe2o3_amqp::types::messaging::Data(Binary::from(
        message.clone(),
    )))
    .unwrap();
    for (id, format) in [(0u32, 0x8001_3700u32), (1, 0)] {
        let transfer = Transfer {
            handle: 0.into(),
            delivery_id: Some(id),
            delivery_tag: Some(Binary::from(id.to_be_bytes().to_vec())),
            message_format: Some(format),
            settled: Some(false),
            more: false,
            rcv_settle_mode: None,
            state: None,
            resume: false,
            aborted: false,
            batchable: false,
        };
        let payload = if format == 0 { &message } else { &envelope };
        write_frame(&mut conn.out.buf, false, 0, &transfer, payload);
        conn.next_outgoing_id = conn.next_outgoing_id.wrapping_add(1);
    }
    conn.flush().await.unwrap();
    let mut outcomes = std::collections::BTreeMap::new();
    while outcomes.len() < 2 {
        let frame = timeout(DEADLINE, conn.next_frame()).await.unwrap().unwrap();
        if let FrameBody::Disposition(d) = frame.body {
            for id in d.first..=d.last.unwrap_or(d.first) {
                outcomes.insert(id, d.state.clone());
            }
        }
    }
    match &outcomes[&0] {
        Some(DeliveryState::Rejected(r)) => assert_eq!(
            r.error.as_ref().map(|e| e.condition.clone()),
            Some(ErrorCondition::AmqpError(AmqpError::NotImplemented))
        ),
        other => panic!("the batch must be rejected: {other:?}"),
    }
    assert!(matches!(outcomes[&1], Some(DeliveryState::Accepted(_))));
    // Only the plain message is in the queue.
    let mut c = RawConsumer::attach(&broker.url(), "c", "formats", AttachOptions::default())
        .await
        .unwrap();
    c.credit(10).await;
    assert_eq!(c.next().await.text(), "inner");
    assert!(c.next_within(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn a_rejection_is_settled_without_the_consumers_error_which_goes_to_the_dlq() {
    let broker = Broker::start();
    let url = broker.url();
    send(&url, "checks", &["bad order"]).await;
    let mut c = RawConsumer::attach(&url, "checker", "checks", AttachOptions::default())
        .await
        .unwrap();
    c.credit(1).await;
    let r = c.next().await;
    let error = ErrorFrame {
        condition: ErrorCondition::Custom("app:bad-price".into()),
        description: Some("price is negative".into()),
        info: None,
    };
    let rejected = DeliveryState::Rejected(Rejected { error: Some(error) });
    c.dispose(r.delivery_id, rejected, false).await;
    assert_eq!(
        c.settlement(r.delivery_id).await,
        Some(DeliveryState::Rejected(Rejected { error: None })),
        "a plain rejected: no error echoed back"
    );
    let mut dlq = RawConsumer::attach(&url, "dlq", "DLQ", AttachOptions::default())
        .await
        .unwrap();
    dlq.credit(1).await;
    let dead = dlq.next().await;
    assert_eq!(dead.text(), "bad order");
    let annotation = |key| dead.annotation(key).map(|v| format!("{v:?}"));
    assert!(annotation("x-opt-dead-letter-reason")
        .unwrap()
        .contains("app:bad-price"));
    assert!(annotation("x-opt-dead-letter-description")
        .unwrap()
        .contains("price is negative"));
}

#[tokio::test]
async fn dollar_names_are_not_created_and_a_cbs_request_reaches_nobody() {
    let broker = Broker::start();
    let url = broker.url();
    // Another client waits on `$cbs` for what it should never see.
    assert!(refused(&url, "$cbs").await.contains("NotFound"));
    let mut c = Connection::open("sdk", url.as_str()).await.unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let attach = Sender::attach(&mut s, "cbs", "$cbs").await;
    assert!(attach.is_err(), "a producer to $cbs is refused: {attach:?}");
    drop(s);
    let _ = c.close().await;
    // Through the anonymous relay: rejected, not queued.
    let mut c = Connection::open("sdk", url.as_str()).await.unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let mut relay = Sender::builder()
        .name("relay")
        .target(fe2o3_amqp::types::messaging::Target::builder().build())
        .attach(&mut s)
        .await
        .unwrap();
    let token = Message::builder()
        .properties(
            fe2o3_amqp::types::messaging::Properties::builder()
                .to("$cbs")
                .build(),
        )
        .value("SharedAccessSignature sr=x&sig=secret")
        .build();
    let outcome = relay.send(token).await.unwrap();
    assert!(
        matches!(&outcome, Outcome::Rejected(r)
            if r.error.as_ref().map(|e| e.condition.clone())
                == Some(ErrorCondition::AmqpError(AmqpError::NotFound))),
        "{outcome:?}"
    );
    c.close().await.unwrap();
    assert!(!broker.log().contains("queue created queue=$cbs"));
}

#[tokio::test]
async fn a_url_address_names_its_node() {
    let broker = Broker::start();
    let url = broker.url();
    let address = format!("amqps://{}/orders", broker.addr);
    send(&url, &address, &["via url"]).await;
    let mut c = Connection::open("consumer", url.as_str()).await.unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let mut receiver = Receiver::attach(&mut s, "r", "orders").await.unwrap();
    let d = timeout(DEADLINE, receiver.recv::<String>())
        .await
        .expect("the message reached 'orders'")
        .unwrap();
    assert_eq!(d.body(), "via url");
    receiver.accept(&d).await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_refused_consumer_attach_carries_its_initial_delivery_count() {
    let broker = Broker::start();
    let config = ClientConfig::from_url(&broker.url()).unwrap();
    let mut conn = ClientConn::connect(&config).await.unwrap();
    let mut attach: Attach =
        ClientConn::link_attach(0, "bad-selector", Role::Receiver, Some("q"), false);
    let mut filters = FilterSet::new();
    filters.insert("jms-selector".into(), Value::String("a = = 1".into()));
    attach.source = Some(Box::new(
        Source::builder().address("q").filter(filters).build(),
    ));
    conn.out.frame(0, &attach);
    conn.flush().await.unwrap();
    let reply = loop {
        let frame = timeout(DEADLINE, conn.next_frame()).await.unwrap().unwrap();
        if let FrameBody::Attach(a) = frame.body {
            break a;
        }
    };
    assert_eq!(reply.role, Role::Sender);
    assert!(reply.source.is_none(), "refused");
    assert_eq!(reply.initial_delivery_count, Some(0));
}

#[tokio::test]
async fn node_names_are_capped_by_max_address_length() {
    let broker = Broker::start();
    let url = broker.url();
    let error = refused(&url, &"q".repeat(900 * 1024)).await;
    assert!(
        error.contains("InvalidField") && error.contains("max-address-length"),
        "{error}"
    );
    RawConsumer::attach(&url, "max", &"q".repeat(255), AttachOptions::default())
        .await
        .expect("255 bytes is the default limit");
    assert!(refused(&url, &"q".repeat(256))
        .await
        .contains("InvalidField"));
    let long_dlq = format!("orders?queue.dead-letter-address={}", "d".repeat(300));
    assert!(refused(&url, &long_dlq).await.contains("InvalidField"));
    // Configurable.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, b"[limits]\nmax-address-length = 16\n").unwrap();
    let small = Broker::start_with(Some(file.path()));
    assert!(refused(&small.url(), "seventeen-chars-x")
        .await
        .contains("InvalidField"));
    RawConsumer::attach(
        &small.url(),
        "ok",
        "sixteen-chars-xx",
        AttachOptions::default(),
    )
    .await
    .expect("16 bytes fits");
}
