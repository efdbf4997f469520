//! Operator actions through the real binary: connections listed, inspected
//! and closed (API and CLI, who may see which), consumers across queues,
//! topics, moving messages out of the DLQ back where they came from in
//! order, run-time queue settings surviving a restart, and the gauges and
//! histogram that go with them in /metrics.

mod common;

use common::admin::{call, json, ordo, request, start_admin, users_config, wait_for};
use common::client::{self as client, connect, drain_all, receiver, recv, send, take};
use common::DEADLINE;
use fe2o3_amqp::types::messaging::Outcome;
use serde_json::{json, Value};
use tokio::time::timeout;

/// The connection whose container-id is `container` in a listing.
fn by_container<'a>(list: &'a Value, container: &str) -> Option<&'a Value> {
    list.as_array()?
        .iter()
        .find(|c| c["container"] == container)
}

/// The value of an unlabelled sample in a metrics text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn connections_are_listed_with_their_consumers_and_one_can_be_closed() {
    let (broker, _file) = start_admin("");
    let (mut one, mut s1) = connect(&broker, "app-one").await;
    let mut work = receiver(&mut s1, "work-in", "work").await;
    work.set_credit(5).await.unwrap();
    let (mut two, mut s2) = connect(&broker, "app-two").await;

    // Each state an assertion reads is waited for: the broker applies the
    // client's frames (attach, flow, begin) in its own time.
    let list = wait_for(&broker, "/api/connections", None, |v| {
        by_container(v, "app-one").is_some_and(|c| c["links"] == 1)
            && by_container(v, "app-two").is_some_and(|c| c["sessions"] == 1)
    })
    .await;
    let first = by_container(&list, "app-one").unwrap();
    assert_eq!(first["sessions"], 1);
    assert_eq!(first["user"], Value::Null, "anonymous");
    assert_eq!(first["tls"], false);
    assert!(first["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    let id = first["id"].as_u64().unwrap();

    // The connection's page and the consumer listing name each other.
    let detail = wait_for(&broker, &format!("/api/connections/{id}"), None, |v| {
        v["consumers"][0]["credit"] == 5
    })
    .await;
    assert_eq!(detail["consumers"][0]["queue"], "work");
    assert_eq!(detail["consumers"][0]["link"], "work-in");
    assert_eq!(detail["consumers"][0]["credit"], 5);
    let consumers = json(&broker, "GET", "/api/consumers");
    let consumer = consumers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["queue"] == "work")
        .expect("the consumer of work is listed");
    assert_eq!(consumer["connection"], id);

    let (ok, text) = ordo(&broker, &["connections"]);
    assert!(ok, "{text}");
    assert!(text.starts_with("CONNECTION  PEER"), "{text}");
    assert!(
        text.contains("app-one") && text.contains("app-two"),
        "{text}"
    );
    let (ok, text) = ordo(&broker, &["consumers"]);
    assert!(
        ok && text.starts_with("QUEUE") && text.contains("work"),
        "{text}"
    );

    // Gauges over every connection: two sessions, one link.
    let (_, metrics) = call(&broker, "GET", "/metrics", None);
    assert_eq!(sample(&metrics, "ordo_sessions"), Some(2.0), "{metrics}");
    assert_eq!(sample(&metrics, "ordo_links"), Some(1.0), "{metrics}");

    // Closed by an operator: the client learns why, the other goes on.
    let (ok, text) = ordo(
        &broker,
        &[
            "close-connection",
            &id.to_string(),
            "--reason",
            "maintenance window",
        ],
    );
    assert!(
        ok && text.contains(&format!("closed connection {id}")),
        "{text}"
    );
    let closed = timeout(DEADLINE, one.on_close()).await.expect("closed");
    let closed = format!("{closed:?}");
    assert!(
        closed.contains("ConnectionForced") && closed.contains("maintenance window"),
        "{closed}"
    );
    let outcomes = send(&mut s2, "after", &["still here"]).await;
    assert!(matches!(outcomes[0], Outcome::Accepted(_)));
    let mut after = receiver(&mut s2, "after-in", "after").await;
    assert_eq!(client::text(&take(&mut after, 1).await[0]), "still here");
    // app-two sent one message and had it delivered.
    wait_for(&broker, "/api/connections", None, |v| {
        by_container(v, "app-one").is_none()
            && by_container(v, "app-two").is_some_and(|c| c["received"] == 1 && c["delivered"] == 1)
    })
    .await;
    let (status, _) = request(
        &broker,
        "DELETE",
        &format!("/api/connections/{id}"),
        None,
        None,
        &[],
    );
    assert_eq!(status, 404, "already gone");
    let (ok, text) = ordo(&broker, &["close-connection", "999999"]);
    assert!(!ok && text.contains("404"), "{text}");
    two.close().await.unwrap();
}

#[tokio::test]
async fn only_broker_wide_managers_see_and_close_other_users_connections() {
    let (broker, _file) = start_admin(&users_config(
        &[("alice", &[]), ("bob", &[])],
        &[("#", "alice"), ("bob.#", "bob")],
    ));
    let open = |user: &str| {
        let url = broker.url_as(user, "secret");
        let container = format!("{user}-app");
        async move {
            let mut c = fe2o3_amqp::Connection::builder()
                .container_id(container)
                .open(url.as_str())
                .await
                .unwrap();
            let s = fe2o3_amqp::Session::begin(&mut c).await.unwrap();
            (c, s)
        }
    };
    let (mut alice, _sa) = open("alice").await;
    let (mut bob, _sb) = open("bob").await;
    let everyone = wait_for(&broker, "/api/connections", Some("alice:secret"), |v| {
        by_container(v, "alice-app").is_some() && by_container(v, "bob-app").is_some()
    })
    .await;
    assert_eq!(by_container(&everyone, "bob-app").unwrap()["user"], "bob");
    let alice_id = by_container(&everyone, "alice-app").unwrap()["id"]
        .as_u64()
        .unwrap();
    let (status, body) = call(&broker, "GET", "/api/connections", Some("bob:secret"));
    assert_eq!(status, 200);
    let own: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(own.as_array().unwrap().len(), 1, "bob sees his own: {own}");
    assert_eq!(own[0]["container"], "bob-app");
    let path = format!("/api/connections/{alice_id}");
    let (status, _) = request(&broker, "DELETE", &path, Some("bob:secret"), None, &[]);
    assert_eq!(status, 403);
    let (status, _) = call(&broker, "GET", &path, Some("bob:secret"));
    assert_eq!(status, 403);
    // Alice's connection is untouched; she may close bob's.
    assert_eq!(call(&broker, "GET", &path, Some("alice:secret")).0, 200);
    let bob_id = own[0]["id"].as_u64().unwrap();
    let (status, _) = request(
        &broker,
        "DELETE",
        &format!("/api/connections/{bob_id}"),
        Some("alice:secret"),
        None,
        &[("X-Reason", "bob, go home")],
    );
    assert_eq!(status, 200);
    let closed = format!("{:?}", timeout(DEADLINE, bob.on_close()).await.unwrap());
    assert!(closed.contains("bob, go home"), "{closed}");
    alice.close().await.unwrap();
}

#[tokio::test]
async fn dead_letters_move_back_to_their_queue_in_order() {
    let (broker, _file) = start_admin("");
    let (mut c, mut s) = connect(&broker, "mover").await;
    let bodies = ["m0", "m1", "m2", "m3", "m4"];
    send(&mut s, "orders", &bodies).await;
    let mut orders = receiver(&mut s, "orders-in", "orders").await;
    orders.set_credit(5).await.unwrap();
    for _ in 0..5 {
        let d = recv(&mut orders).await;
        orders.reject(&d, None).await.unwrap();
    }
    let dlq = wait_for(&broker, "/api/queues/DLQ", None, |q| q["messages"] == 5).await;
    assert!(dlq["oldest_message_age_ms"].as_u64().unwrap() < 60_000);
    // A message sent to the DLQ directly has no original address.
    send(&mut s, "DLQ", &["stray"]).await;

    let (ok, text) = ordo(&broker, &["move", "DLQ"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("moved 5 messages from DLQ to their original addresses; 1 left"),
        "{text}"
    );
    assert!(text.contains("has no original address"), "{text}");
    // Back in order, each starting afresh.
    orders.set_credit(5).await.unwrap();
    for body in bodies {
        let d = recv(&mut orders).await;
        assert_eq!(client::text(&d), body);
        assert_eq!(
            d.message().header.as_ref().map_or(0, |h| h.delivery_count),
            0
        );
        orders.accept(&d).await.unwrap();
    }
    let orders_info = json(&broker, "GET", "/api/queues/orders");
    assert_eq!(orders_info["messages"], 0);

    // To an address named explicitly, at most `limit`.
    send(&mut s, "DLQ", &["x1", "x2"]).await;
    let moved = request(
        &broker,
        "POST",
        "/api/queues/DLQ/move",
        None,
        Some(&json!({ "to": "parking", "limit": 2 })),
        &[],
    );
    assert_eq!(moved.0, 200, "{}", moved.1);
    let report: Value = serde_json::from_str(&moved.1).unwrap();
    assert_eq!(report["moved"], 2);
    assert_eq!(report["left"], 1);
    let mut parking = receiver(&mut s, "parking-in", "parking").await;
    assert_eq!(drain_all(&mut parking, 10).await, vec!["stray", "x1"]);
    let (status, body) = request(
        &broker,
        "POST",
        "/api/queues/DLQ/move",
        None,
        Some(&json!({ "to": "DLQ" })),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    let empty = json(&broker, "GET", "/api/queues/parking");
    assert_eq!(empty["oldest_message_age_ms"], Value::Null);
    c.close().await.unwrap();
}

#[tokio::test]
async fn run_time_settings_apply_at_once_and_survive_a_restart() {
    let (mut broker, _file) = start_admin("");
    let (mut c, mut s) = connect(&broker, "settings").await;
    send(&mut s, "capped", &["1"]).await;
    let (ok, text) = ordo(
        &broker,
        &[
            "set-queue",
            "capped",
            "max-length=2",
            "redelivery-delay=250ms",
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("max-length") && text.contains('2'), "{text}");
    let outcomes = send(&mut s, "capped", &["2", "3"]).await;
    assert!(matches!(outcomes[0], Outcome::Accepted(_)));
    assert!(
        matches!(&outcomes[1], Outcome::Rejected(_)),
        "the new limit refuses the third: {outcomes:?}"
    );
    // Settings that shape what the queue built cannot change; nothing does.
    let (status, body) = request(
        &broker,
        "PATCH",
        "/api/queues/capped",
        None,
        Some(&json!({ "max-length": 5, "exclusive": true })),
        &[],
    );
    assert_eq!(status, 400);
    assert!(
        body.contains("exclusive cannot change at run time"),
        "{body}"
    );
    let (status, body) = request(
        &broker,
        "PATCH",
        "/api/queues/capped",
        None,
        Some(&json!({ "max-length": "lots" })),
        &[],
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        json(&broker, "GET", "/api/queues/capped")["settings"]["max-length"],
        2
    );
    c.close().await.unwrap();

    broker.restart();
    let queue = json(&broker, "GET", "/api/queues/capped");
    assert_eq!(queue["settings"]["max-length"], 2, "{queue}");
    assert_eq!(queue["settings"]["redelivery-delay"], "250ms", "{queue}");
    let (status, _) = request(
        &broker,
        "PATCH",
        "/api/queues/capped",
        None,
        Some(&json!({ "max-length": null })),
        &[],
    );
    assert_eq!(status, 200);
    let (mut c, mut s) = connect(&broker, "settings-2").await;
    let outcomes = send(&mut s, "capped", &["3", "4"]).await;
    assert!(outcomes.iter().all(|o| matches!(o, Outcome::Accepted(_))));
    c.close().await.unwrap();
}

#[tokio::test]
async fn topics_list_their_subscriptions_and_the_store_reports_fsync_latency() {
    let (broker, _file) = start_admin("");
    let (mut c, mut s) = connect(&broker, "subscriber").await;
    let _sub = receiver(&mut s, "prices-sub", "topic://prices").await;
    let topics = wait_for(&broker, "/api/topics", None, |v| {
        v.as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "prices"))
    })
    .await;
    let prices = topics
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "prices")
        .unwrap();
    assert_eq!(prices["subscriptions"][0]["consumers"], 1);
    let (ok, text) = ordo(&broker, &["topics"]);
    assert!(ok && text.contains("prices"), "{text}");

    // A durable message is synced; the histogram counts that fsync.
    send(&mut s, "synced", &["durable"]).await;
    let (_, metrics) = call(&broker, "GET", "/metrics", None);
    let count = sample(&metrics, "ordo_store_sync_seconds_count").expect("the histogram");
    assert!(count >= 1.0, "{metrics}");
    assert_eq!(Some(count), sample(&metrics, "ordo_store_syncs_total"));
    let inf = metrics
        .lines()
        .find(|l| l.starts_with("ordo_store_sync_seconds_bucket{le=\"+Inf\"}"))
        .expect("a +Inf bucket");
    assert!(inf.ends_with(&format!(" {count}")), "{inf}");
    // Batch sizes: as many batches as the batches total, records summed.
    let batches = sample(&metrics, "ordo_store_batch_records_count").expect("batch histogram");
    assert_eq!(Some(batches), sample(&metrics, "ordo_store_batches_total"));
    assert_eq!(
        sample(&metrics, "ordo_store_batch_records_sum"),
        sample(&metrics, "ordo_store_records_total")
    );
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_under_load_and_its_reads_lose_nothing() {
    let (broker, _file) = start_admin("");
    const N: usize = 5_000;
    let url = broker.url();
    let producer = tokio::spawn(async move {
        let mut c = fe2o3_amqp::Connection::open("load-producer", url.as_str())
            .await
            .unwrap();
        let mut s = fe2o3_amqp::Session::begin(&mut c).await.unwrap();
        let mut sender = fe2o3_amqp::Sender::attach(&mut s, "p", "busy")
            .await
            .unwrap();
        for i in 0..N {
            let outcome = sender.send(format!("{i}")).await.unwrap();
            assert!(matches!(outcome, Outcome::Accepted(_)));
        }
        sender.close().await.unwrap();
        c.close().await.unwrap();
    });
    let (mut c, mut s) = connect(&broker, "load-consumer").await;
    let mut r = receiver(&mut s, "busy-in", "busy").await;
    r.set_credit(500).await.unwrap();
    let mut next = 0usize;
    let mut reads = 0;
    while next < N {
        let d = recv(&mut r).await;
        assert_eq!(client::text(&d), next.to_string(), "in order");
        r.accept(&d).await.unwrap();
        next += 1;
        if next.is_multiple_of(500) {
            r.set_credit(500).await.unwrap();
            // Every read of the admin API while messages flow.
            for path in [
                "/api/queues/busy",
                "/api/connections",
                "/api/consumers",
                "/metrics",
            ] {
                assert_eq!(call(&broker, "GET", path, None).0, 200, "{path}");
                reads += 1;
            }
        }
    }
    producer.await.unwrap();
    assert!(reads >= 36);
    let connections = json(&broker, "GET", "/api/connections");
    let consumer = by_container(&connections, "load-consumer").unwrap();
    assert_eq!(consumer["delivered"], N, "{consumer}");
    let queue = wait_for(&broker, "/api/queues/busy", None, |q| {
        q["acked"] == N && q["unsettled"] == 0
    })
    .await;
    assert_eq!(queue["enqueued"], N);
    assert_eq!(queue["messages"], 0);
    c.close().await.unwrap();
}
