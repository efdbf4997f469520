//! fe2o3-amqp client helpers: connect with a container-id, send bodies,
//! receive with manual credit, read bodies and annotations.

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Outcome, Source};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Connection, Session};
use tokio::time::timeout;

use super::{Broker, DEADLINE};

/// A client connection.
pub type Conn = ConnectionHandle<()>;
/// A client session.
pub type Sess = SessionHandle<()>;

/// Opens a connection as `container` and begins a session.
pub async fn connect(broker: &Broker, container: &str) -> (Conn, Sess) {
    let mut connection = Connection::builder()
        .container_id(container)
        .open(broker.url().as_str())
        .await
        .expect("connect");
    let session = Session::begin(&mut connection).await.expect("begin");
    (connection, session)
}

/// Sends each body (a string value) on a new link; returns the outcomes.
pub async fn send(session: &mut Sess, address: &str, bodies: &[&str]) -> Vec<Outcome> {
    let mut sender = Sender::attach(session, format!("sender-{address}"), address)
        .await
        .expect("attach sender");
    let mut outcomes = Vec::new();
    for body in bodies {
        outcomes.push(sender.send(body.to_string()).await.expect("send"));
    }
    sender.close().await.expect("close sender");
    outcomes
}

/// Attaches a receiver with manual credit.
pub async fn receiver(session: &mut Sess, name: &str, source: impl Into<Source>) -> Receiver {
    Receiver::builder()
        .name(name)
        .source(source)
        .credit_mode(CreditMode::Manual)
        .attach(session)
        .await
        .expect("attach receiver")
}

/// The next delivery, within the deadline.
pub async fn recv(receiver: &mut Receiver) -> Delivery<Value> {
    timeout(DEADLINE, receiver.recv::<Value>())
        .await
        .expect("a message in time")
        .expect("recv")
}

/// Receives exactly `n` messages (granting `n` credit) and accepts them.
pub async fn take(receiver: &mut Receiver, n: u32) -> Vec<Delivery<Value>> {
    receiver.set_credit(n).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..n {
        let d = recv(receiver).await;
        receiver.accept(&d).await.unwrap();
        got.push(d);
    }
    got
}

/// Drains the receiver's credit and returns what came (nothing if empty).
pub async fn drain_all(receiver: &mut Receiver, credit: u32) -> Vec<String> {
    receiver.set_credit(credit).await.unwrap();
    receiver.drain().await.unwrap();
    let mut got = Vec::new();
    while let Ok(Ok(d)) = timeout(
        std::time::Duration::from_millis(300),
        receiver.recv::<Value>(),
    )
    .await
    {
        receiver.accept(&d).await.unwrap();
        got.push(text(&d));
    }
    got
}

/// The body of a string-valued message.
pub fn text(d: &Delivery<Value>) -> String {
    match d.body() {
        Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// A message annotation, by key.
pub fn annotation(d: &Delivery<Value>, key: &str) -> Option<Value> {
    let annotations = d.message().message_annotations.as_ref()?;
    annotations
        .0
        .iter()
        .find(|(k, _)| format!("{k:?}").contains(key))
        .map(|(_, v)| v.clone())
}
