//! The AMQP management node `$management` through the real binary, with
//! fe2o3-amqp's client: READ and QUERY of queues with known traffic, the
//! status codes (400, 403, 404, 501), and responses reaching a dynamic
//! receiver, a receiver attached to `$management` (one per connection, even
//! under the same reply address), an existing queue, and a relayed request.

mod common;

use std::io::Write;
use std::time::Instant;

use common::admin::users_config;
use common::raw::{AttachOptions, RawConsumer};
use common::{Broker, DEADLINE};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Outcome, Properties, Source,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};
use fe2o3_amqp::{Connection, Session};
use tokio::time::timeout;

/// Every attribute of a queue, in the order QUERY lists them.
const ATTRIBUTES: [&str; 19] = [
    "name",
    "identity",
    "type",
    "messages",
    "bytes",
    "unsettled",
    "consumers",
    "groups",
    "held_groups",
    "active_consumer",
    "exclusive",
    "group_ordering",
    "enqueued",
    "delivered",
    "redelivered",
    "acked",
    "dead_lettered",
    "expired",
    "oldest_message_age_ms",
];

/// A response, decoded.
#[derive(Debug)]
struct Response {
    status: i32,
    description: String,
    correlation: Option<MessageId>,
    count: Option<i32>,
    body: Value,
}

impl Response {
    /// A READ body's attribute.
    fn get(&self, name: &str) -> Value {
        match &self.body {
            Value::Map(m) => m
                .get(&Value::String(name.into()))
                .cloned()
                .unwrap_or_else(|| panic!("no {name} in {:?}", self.body)),
            other => panic!("not a map: {other:?}"),
        }
    }

    /// A QUERY body's (attributeNames, results).
    fn table(&self) -> (Vec<String>, Vec<Vec<Value>>) {
        let names = match self.get("attributeNames") {
            Value::List(l) => l
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => s,
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        };
        let rows = match self.get("results") {
            Value::List(l) => l
                .into_iter()
                .map(|v| match v {
                    Value::List(row) => row,
                    other => panic!("{other:?}"),
                })
                .collect(),
            other => panic!("{other:?}"),
        };
        (names, rows)
    }
}

/// A management client: a sender to `$management` and a receiver of
/// responses, on one session.
struct Client {
    connection: ConnectionHandle<()>,
    _session: SessionHandle<()>,
    sender: Sender,
    receiver: Receiver,
    reply_to: String,
    next_id: u64,
}

/// How the client receives responses.
enum Replies {
    /// A dynamic receiver (Proton's pattern).
    Dynamic,
    /// A receiver with source `$management` and this target address (the
    /// Azure / Qpid tools' pattern).
    Management(&'static str),
}

impl Client {
    async fn open(url: &str, replies: Replies) -> Self {
        let mut connection = timeout(DEADLINE, Connection::open("mgmt-test", url))
            .await
            .expect("in time")
            .expect("connect");
        let mut session = Session::begin(&mut connection).await.unwrap();
        let sender = Sender::attach(&mut session, "requests", "$management")
            .await
            .expect("a sender to $management");
        let (receiver, reply_to) = match replies {
            Replies::Dynamic => {
                let r = Receiver::builder()
                    .name("replies")
                    .source(Source::builder().dynamic(true).build())
                    .attach(&mut session)
                    .await
                    .expect("a dynamic receiver");
                let address = r.source().as_ref().unwrap().address.clone().unwrap();
                assert!(address.starts_with("dynamic-"), "{address}");
                (r, address)
            }
            Replies::Management(target) => {
                let r = Receiver::builder()
                    .name("replies")
                    .source("$management")
                    .target(target)
                    .attach(&mut session)
                    .await
                    .expect("a receiver on $management");
                (r, target.to_string())
            }
        };
        Self {
            connection,
            _session: session,
            sender,
            receiver,
            reply_to,
            next_id: 1,
        }
    }

    /// A request with these application properties and body, replied to
    /// `reply_to` (None: no reply-to).
    fn request(
        &mut self,
        properties: &[(&str, SimpleValue)],
        body: Value,
        reply_to: Option<&str>,
    ) -> Message<AmqpValue<Value>> {
        let mut app = ApplicationProperties::default();
        for (k, v) in properties {
            app.0.insert((*k).to_string(), v.clone());
        }
        let mut p = Properties::builder().message_id(self.next_id).build();
        p.reply_to = reply_to.map(str::to_string);
        self.next_id += 1;
        Message::builder()
            .properties(p)
            .application_properties(app)
            .value(body)
            .build()
    }

    /// Sends a request (accepted) and returns its response.
    async fn call(&mut self, properties: &[(&str, SimpleValue)], body: Value) -> Response {
        let reply_to = self.reply_to.clone();
        let id = self.next_id;
        let request = self.request(properties, body, Some(&reply_to));
        let outcome = self.sender.send(request).await.unwrap();
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
        let response = recv(&mut self.receiver).await;
        assert_eq!(response.correlation, Some(MessageId::from(id)));
        response
    }

    async fn read(&mut self, name: &str) -> Response {
        self.call(
            &[
                ("operation", s("READ")),
                ("type", s("ordo:queue")),
                ("name", s(name)),
            ],
            Value::Null,
        )
        .await
    }

    async fn query(&mut self, names: &[&str], extra: &[(&str, SimpleValue)]) -> Response {
        let mut properties = vec![("operation", s("QUERY")), ("entityType", s("queue"))];
        properties.extend(extra.iter().cloned());
        self.call(&properties, attribute_names(names)).await
    }

    async fn close(mut self) {
        let _ = self.connection.close().await;
    }
}

/// The next message on `receiver` (accepted), as a response.
async fn recv(receiver: &mut Receiver) -> Response {
    let delivery = timeout(DEADLINE, receiver.recv::<Body<Value>>())
        .await
        .expect("a response in time")
        .unwrap();
    receiver.accept(&delivery).await.unwrap();
    let message = delivery.message();
    let app = message.application_properties.clone().unwrap_or_default();
    let int = |k: &str| match app.0.get(k) {
        Some(SimpleValue::Int(n)) => Some(*n),
        None => None,
        other => panic!("{k}: {other:?}"),
    };
    Response {
        status: int("statusCode").expect("statusCode"),
        description: match app.0.get("statusDescription") {
            Some(SimpleValue::String(d)) => d.clone(),
            other => panic!("statusDescription: {other:?}"),
        },
        correlation: message
            .properties
            .as_ref()
            .and_then(|p| p.correlation_id.clone()),
        count: int("count"),
        body: match &message.body {
            Body::Value(v) => v.0.clone(),
            other => panic!("body {other:?}"),
        },
    }
}

fn s(v: &str) -> SimpleValue {
    SimpleValue::String(v.to_string())
}

fn attribute_names(names: &[&str]) -> Value {
    let mut map = OrderedMap::new();
    map.insert(
        Value::String("attributeNames".into()),
        Value::List(names.iter().map(|n| Value::String((*n).into())).collect()),
    );
    Value::Map(map)
}

fn text(v: &str) -> Value {
    Value::String(v.into())
}

async fn send(url: &str, address: &str, n: usize) {
    let mut c = Connection::open("producer", url).await.unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let mut sender = Sender::attach(&mut s, "p", address).await.unwrap();
    for i in 0..n {
        sender.send(format!("m{i}")).await.unwrap();
    }
    sender.close().await.unwrap();
    c.close().await.unwrap();
}

/// READs `name` until `pred` holds for the response (counters follow the
/// consumer's frames, which another connection carries).
async fn read_until(client: &mut Client, name: &str, pred: impl Fn(&Response) -> bool) -> Response {
    let started = Instant::now();
    loop {
        let r = client.read(name).await;
        if pred(&r) {
            return r;
        }
        assert!(started.elapsed() < DEADLINE, "never true: {r:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn read_and_query_queues_with_known_traffic_through_a_dynamic_receiver() {
    let broker = Broker::start();
    send(&broker.url(), "orders", 3).await;
    // One message accepted, one left unsettled, one waiting.
    let mut consumer = RawConsumer::attach(&broker.url(), "c", "orders", AttachOptions::default())
        .await
        .unwrap();
    consumer.credit(2).await;
    let first = consumer.next().await;
    let _second = consumer.next().await;
    consumer.accept(first.delivery_id).await;

    let mut client = Client::open(&broker.url(), Replies::Dynamic).await;
    let r = read_until(&mut client, "orders", |r| r.get("acked") == Value::Long(1)).await;
    assert_eq!((r.status, r.description.as_str()), (200, "OK"));
    assert_eq!(r.get("name"), text("orders"));
    assert_eq!(r.get("identity"), text("orders"));
    assert_eq!(r.get("type"), text("ordo:queue"));
    assert_eq!(r.get("messages"), Value::Long(1));
    assert_eq!(r.get("unsettled"), Value::Long(1));
    assert_eq!(r.get("consumers"), Value::Long(1));
    assert_eq!(r.get("enqueued"), Value::Long(3));
    assert_eq!(r.get("delivered"), Value::Long(2));
    assert_eq!(r.get("redelivered"), Value::Long(0));
    assert_eq!(r.get("exclusive"), Value::Bool(false));
    assert_eq!(r.get("group_ordering"), text("none"));
    assert_eq!(r.get("active_consumer"), Value::Null);
    assert!(
        matches!(r.get("oldest_message_age_ms"), Value::Long(ms) if ms < 60_000),
        "one message waits: {:?}",
        r.get("oldest_message_age_ms")
    );
    let Value::Map(attributes) = &r.body else {
        unreachable!()
    };
    assert_eq!(attributes.len(), ATTRIBUTES.len());

    // QUERY with chosen attributes: names echoed, one row per queue.
    let q = client.query(&["name", "messages", "acked"], &[]).await;
    assert_eq!(q.status, 200);
    let (names, rows) = q.table();
    assert_eq!(names, ["name", "messages", "acked"]);
    assert_eq!(q.count, Some(rows.len() as i32));
    assert!(
        rows.contains(&vec![text("orders"), Value::Long(1), Value::Long(1)]),
        "{rows:?}"
    );
    assert!(rows.contains(&vec![text("DLQ"), Value::Long(0), Value::Long(0)]));
    assert!(
        !rows.iter().any(|row| row[0] == text("$management")),
        "no queue is made for the management node: {rows:?}"
    );
    // QUERY of all attributes: the READ's values, positionally.
    let all = client.query(&[], &[]).await;
    let (names, rows) = all.table();
    assert_eq!(names, ATTRIBUTES);
    let orders = rows.iter().find(|row| row[0] == text("orders")).unwrap();
    for (name, value) in names.iter().zip(orders) {
        if name != "oldest_message_age_ms" {
            assert_eq!(&r.get(name), value, "{name}");
        }
    }
    // Paging: offset and count.
    let page = client
        .query(
            &["name"],
            &[
                ("offset", SimpleValue::Int(1)),
                ("count", SimpleValue::Uint(1)),
            ],
        )
        .await;
    let (_, page_rows) = page.table();
    assert_eq!(page_rows, vec![rows[1][..1].to_vec()]);
    assert_eq!(page.count, Some(1));

    // The status codes of what cannot be done.
    let r = client.read("no.such.queue").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.description.contains("no.such.queue"), "{r:?}");
    assert_eq!(r.body, Value::Null);
    let r = client
        .call(
            &[("operation", s("FROB")), ("type", s("ordo:queue"))],
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = client
        .call(
            &[
                ("operation", s("READ")),
                ("type", s("ordo:topic")),
                ("name", s("orders")),
            ],
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = client
        .call(
            &[("operation", s("QUERY")), ("offset", SimpleValue::Int(-1))],
            attribute_names(&[]),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let r = client
        .call(
            &[("operation", s("CREATE")), ("type", s("ordo:queue"))],
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 501, "{r:?}");
    let r = client
        .call(&[("operation", s("GET-ATTRIBUTES"))], Value::Null)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.get("ordo:queue"),
        Value::List(ATTRIBUTES.iter().map(|a| text(a)).collect())
    );

    // Requests that cannot be answered are rejected, and the link goes on.
    let no_reply = client.request(&[("operation", s("READ"))], Value::Null, None);
    match client.sender.send(no_reply).await.unwrap() {
        Outcome::Rejected(r) => assert!(format!("{:?}", r.error).contains("InvalidField"), "{r:?}"),
        other => panic!("{other:?}"),
    }
    let nowhere = client.request(&[("operation", s("READ"))], Value::Null, Some("nowhere"));
    match client.sender.send(nowhere).await.unwrap() {
        Outcome::Rejected(r) => assert!(format!("{:?}", r.error).contains("NotFound"), "{r:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(client.read("orders").await.status, 200);
    client.close().await;
    consumer.close().await;
    assert!(broker.log().contains("management requester attached"));
}

#[tokio::test]
async fn replies_reach_receivers_attached_to_management_one_per_connection() {
    let broker = Broker::start();
    send(&broker.url(), "jobs", 2).await;
    // Two clients with the same reply address: each gets its own answers.
    let mut one = Client::open(&broker.url(), Replies::Management("mgmt-client")).await;
    let mut two = Client::open(&broker.url(), Replies::Management("mgmt-client")).await;
    for _ in 0..3 {
        let r = one.read("jobs").await;
        assert_eq!((r.status, r.get("messages")), (200, Value::Long(2)));
        let r = two.read("nope").await;
        assert_eq!(r.status, 404);
    }
    // A relayed request (anonymous sender, `to` = $management) is answered too.
    let mut relay = Sender::builder()
        .name("relay")
        .target(fe2o3_amqp::types::messaging::Target::builder().build())
        .attach(&mut one._session)
        .await
        .unwrap();
    let mut request = one.request(
        &[
            ("operation", s("READ")),
            ("type", s("queue")),
            ("identity", s("jobs")),
        ],
        Value::Null,
        Some("mgmt-client"),
    );
    request.properties.as_mut().unwrap().to = Some("$management".into());
    let id = one.next_id - 1;
    assert!(matches!(
        relay.send(request).await.unwrap(),
        Outcome::Accepted(_)
    ));
    let r = recv(&mut one.receiver).await;
    assert_eq!(r.correlation, Some(MessageId::from(id)));
    assert_eq!(r.get("name"), text("jobs"));
    relay.close().await.unwrap();
    one.close().await;
    // The first client's reply queue went with it; the second's remains.
    assert_eq!(two.read("jobs").await.status, 200);
    two.close().await;
}

#[tokio::test]
async fn replies_reach_an_existing_queue_named_in_reply_to() {
    let broker = Broker::start();
    let mut consumer = RawConsumer::attach(&broker.url(), "c", "answers", AttachOptions::default())
        .await
        .unwrap();
    consumer.credit(10).await;
    let mut client = Client::open(&broker.url(), Replies::Dynamic).await;
    let request = client.request(
        &[("operation", s("GET-TYPES"))],
        Value::Null,
        Some("answers"),
    );
    assert!(matches!(
        client.sender.send(request).await.unwrap(),
        Outcome::Accepted(_)
    ));
    let got = consumer.next().await;
    let app = got.message.application_properties.clone().unwrap();
    assert_eq!(app.0.get("statusCode"), Some(&SimpleValue::Int(200)));
    assert_eq!(
        got.message.properties.as_ref().unwrap().to.as_deref(),
        Some("answers")
    );
    client.close().await;
    consumer.close().await;
}

#[tokio::test]
async fn the_manage_permission_filters_and_forbids() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        "{}",
        users_config(&[("admin", &["ops"]), ("bob", &[])], &[("#", "@ops")])
    )
    .unwrap();
    let broker = Broker::start_with(Some(file.path()));
    let admin_url = broker.url_as("admin", "secret");
    send(&admin_url, "ops.q", 1).await;

    let mut bob = Client::open(&broker.url_as("bob", "secret"), Replies::Management("bob")).await;
    let r = bob.read("ops.q").await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.description.contains("bob"), "{r:?}");
    // Forbidden, not "not found", for a queue that does not exist either.
    assert_eq!(bob.read("no.such").await.status, 403);
    let q = bob.query(&["name"], &[]).await;
    assert_eq!(
        (q.status, q.table().1.len()),
        (200, 0),
        "bob manages nothing"
    );
    bob.close().await;

    let mut admin = Client::open(&admin_url, Replies::Dynamic).await;
    let r = admin.read("ops.q").await;
    assert_eq!((r.status, r.get("messages")), (200, Value::Long(1)));
    let (_, rows) = admin.query(&["name"], &[]).await.table();
    assert!(rows.contains(&vec![text("ops.q")]), "{rows:?}");
    admin.close().await;
    assert!(broker.log().contains("management: manage denied"));
}

/// Outside testing found `$management` replies to a dynamic receiver
/// refused once any `[[access]]` rule existed, even for an admin with
/// `manage` on `#`: the reply needs `send` on the caller's own
/// `dynamic-<uuid>` queue, which no rule but `#` can name. A connection
/// may now always send to and receive from the dynamic nodes it created,
/// and only those.
#[tokio::test]
async fn replies_reach_a_dynamic_receiver_whatever_the_access_rules() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    let users = users_config(&[("admin", &["ops"]), ("bob", &[])], &[("ops.#", "@ops")]);
    write!(
        file,
        "{users}\n[[access]]\npattern = \"#\"\nmanage = [\"@ops\"]\n"
    )
    .unwrap();
    let broker = Broker::start_with(Some(file.path()));
    let admin_url = broker.url_as("admin", "secret");
    send(&admin_url, "ops.q", 1).await;
    let mut admin = Client::open(&admin_url, Replies::Dynamic).await;
    let r = admin.read("ops.q").await;
    assert_eq!((r.status, r.get("messages")), (200, Value::Long(1)));
    // Another connection, even of the same user, may not send there.
    for url in [broker.url_as("bob", "secret"), admin_url.clone()] {
        let mut c = Connection::open("other", url.as_str()).await.unwrap();
        let mut s = Session::begin(&mut c).await.unwrap();
        let refused = Sender::attach(&mut s, "intruder", admin.reply_to.as_str()).await;
        assert!(
            format!("{refused:?}").contains("UnauthorizedAccess"),
            "{refused:?}"
        );
        let _ = c.close().await;
    }
    admin.close().await;
}
