//! The admin listener through the real binary: the JSON API (queues,
//! consumers, groups, purge, rebalance, release of a held group), its
//! authentication and `manage` permission, Prometheus metrics against known
//! traffic, the OpenAPI description, and the `ordo` CLI commands over it.

mod common;

use common::admin::{call, json, ordo, start_admin, users_config};
use common::raw::{AttachOptions, RawConsumer};
use common::{Broker, DEADLINE};
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::types::messaging::{Message, Modified, Properties};
use fe2o3_amqp::{Connection, Session};
use serde_json::Value;

fn start(extra: &str) -> (Broker, tempfile::NamedTempFile) {
    start_admin(&format!(
        "[[queues]]\npattern = \"held.#\"\ngroup-ordering = \"strict\"\nmax-delivery-attempts = 2\npoison = \"hold\"\n\n{extra}"
    ))
}

async fn send_grouped(url: &str, address: &str, messages: &[(&str, &str)]) {
    let mut c = Connection::open("producer", url).await.unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let mut sender = Sender::attach(&mut s, "p", address).await.unwrap();
    for (group, body) in messages {
        let m = Message::builder()
            .properties(Properties::builder().group_id(group.to_string()).build())
            .value(body.to_string())
            .build();
        sender.send(m).await.unwrap();
    }
    sender.close().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test]
async fn queues_consumers_and_groups_are_shown_and_counted_in_metrics() {
    let (broker, _file) = start("");
    // Two consumers with credit, then two groups: one group each, left
    // unsettled.
    let mut one = RawConsumer::attach(&broker.url(), "one", "orders", AttachOptions::default())
        .await
        .unwrap();
    one.credit(10).await;
    let mut two = RawConsumer::attach(&broker.url(), "two", "orders", AttachOptions::default())
        .await
        .unwrap();
    two.credit(10).await;
    send_grouped(
        &broker.url(),
        "orders",
        &[
            ("A", "a1"),
            ("B", "b1"),
            ("A", "a2"),
            ("B", "b2"),
            ("A", "a3"),
        ],
    )
    .await;
    let first = one.next().await;
    let got_two = two.next().await;
    assert_ne!(first.text()[..1], got_two.text()[..1], "one group each");

    let queues = json(&broker, "GET", "/api/queues");
    let orders = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "orders")
        .expect("orders listed")
        .clone();
    assert_eq!(orders["enqueued"], 5);
    assert_eq!(orders["consumers"], 2);
    assert_eq!(orders["groups"], 2);
    let delivered = orders["delivered"].as_u64().unwrap();
    assert_eq!(
        orders["messages"].as_u64().unwrap() + orders["unsettled"].as_u64().unwrap(),
        5
    );
    assert_eq!(orders["unsettled"].as_u64().unwrap(), delivered);

    let detail = json(&broker, "GET", "/api/queues/orders");
    assert_eq!(detail["consumers_count"], 2);
    let groups = json(&broker, "GET", "/api/queues/orders/groups");
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let owners: Vec<u64> = groups
        .iter()
        .map(|g| g["owner"].as_u64().unwrap())
        .collect();
    assert_ne!(owners[0], owners[1], "each group has its own owner");
    // Since when each is owned, and its last delivery: moments ago.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for g in groups {
        for key in ["since", "last_delivery"] {
            let at = g[key].as_u64().unwrap_or_else(|| panic!("{key}: {g}"));
            assert!(
                at <= now + 1000 && now.saturating_sub(at) < 60_000,
                "{key}: {g}"
            );
        }
    }
    let a = groups.iter().find(|g| g["id"] == "A").unwrap();
    assert_eq!(
        a["queued"].as_u64().unwrap() + a["unsettled"].as_u64().unwrap(),
        3
    );
    let consumers = json(&broker, "GET", "/api/queues/orders/consumers");
    let ids: Vec<u64> = consumers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    let mut sorted_owners = owners.clone();
    sorted_owners.sort();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert_eq!(sorted_owners, sorted_ids, "the owners are the consumers");

    // Settle: acked counts go up, in the API and the metrics.
    one.accept(first.delivery_id).await;
    two.accept(got_two.delivery_id).await;
    let started = std::time::Instant::now();
    let metrics = loop {
        let (status, text) = call(&broker, "GET", "/metrics", None);
        assert_eq!(status, 200);
        if text.contains("ordo_queue_acked_total{queue=\"orders\"} 2") {
            break text;
        }
        assert!(started.elapsed() < DEADLINE, "acks not counted: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        metrics.contains("ordo_queue_enqueued_total{queue=\"orders\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ordo_queue_consumers{queue=\"orders\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ordo_queue_groups{queue=\"orders\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE ordo_connections gauge"),
        "{metrics}"
    );
    assert!(metrics.contains("ordo_store_syncs_total"), "{metrics}");

    // The CLI shows the same.
    let (ok, text) = ordo(&broker, &["queues"]);
    assert!(ok, "{text}");
    assert!(text.starts_with("QUEUE"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("orders ")), "{text}");
    let (ok, text) = ordo(&broker, &["groups", "orders", "--json"]);
    assert!(ok, "{text}");
    let parsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(parsed.as_array().unwrap().len(), 2);
    let (ok, text) = ordo(&broker, &["consumers", "orders"]);
    assert!(ok && text.lines().count() == 3, "{text}");

    // Rebalance with nothing to move: two groups on two consumers.
    let moved = json(&broker, "POST", "/api/queues/orders/rebalance");
    assert_eq!(moved["moved"], 0);
    one.close().await;
    two.close().await;
}

#[tokio::test]
async fn purge_and_release_of_a_held_group_through_the_api_and_the_cli() {
    let (broker, _file) = start("");
    send_grouped(
        &broker.url(),
        "purge.me",
        &[("x", "1"), ("y", "2"), ("x", "3")],
    )
    .await;
    let purged = json(&broker, "POST", "/api/queues/purge.me/purge");
    assert_eq!(purged["purged"], 3);
    assert_eq!(json(&broker, "GET", "/api/queues/purge.me")["messages"], 0);
    send_grouped(&broker.url(), "purge.me", &[("x", "4")]).await;
    let (ok, text) = ordo(&broker, &["purge", "purge.me"]);
    assert!(ok && text.contains("purged 1 messages"), "{text}");

    // A poison message holds its group (max-delivery-attempts 2, hold).
    send_grouped(&broker.url(), "held.q", &[("g", "poison"), ("g", "next")]).await;
    let mut c = RawConsumer::attach(&broker.url(), "c", "held.q", AttachOptions::default())
        .await
        .unwrap();
    c.credit(10).await;
    for _ in 0..2 {
        let d = c.next().await;
        assert_eq!(d.text(), "poison");
        c.settle(
            d.delivery_id,
            fe2o3_amqp::types::messaging::DeliveryState::Modified(Modified {
                delivery_failed: Some(true),
                undeliverable_here: None,
                message_annotations: None,
            }),
        )
        .await;
    }
    let started = std::time::Instant::now();
    loop {
        let groups = json(&broker, "GET", "/api/queues/held.q/groups");
        if groups[0]["held"] == true {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "never held: {groups}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(json(&broker, "GET", "/api/queues/held.q")["held_groups"], 1);
    assert!(c
        .next_within(std::time::Duration::from_millis(300))
        .await
        .is_none());
    let (ok, text) = ordo(&broker, &["release", "held.q", "g"]);
    assert!(ok && text.contains("released group g"), "{text}");
    assert_eq!(c.next().await.text(), "poison", "the head comes again");
    let (status, body) = call(&broker, "POST", "/api/queues/held.q/groups/g/release", None);
    assert_eq!(status, 409, "not held any more: {body}");
    let (status, _) = call(&broker, "GET", "/api/queues/no.such/groups", None);
    assert_eq!(status, 404);
    let (ok, text) = ordo(&broker, &["purge", "no.such"]);
    assert!(!ok && text.contains("404"), "{text}");
    c.close().await;
}

#[tokio::test]
async fn the_api_authenticates_and_checks_the_manage_permission() {
    let (broker, _file) = start(&users_config(
        &[("admin", &["ops"]), ("bob", &[])],
        &[("#", "@ops")],
    ));
    let url = format!("amqp://admin:secret@{}", broker.addr);
    send_grouped(&url, "ops.q", &[("g", "1")]).await;
    let (status, _) = call(&broker, "GET", "/api/queues", None);
    assert_eq!(status, 401, "anonymous is off");
    let (status, _) = call(&broker, "GET", "/api/queues", Some("admin:wrong"));
    assert_eq!(status, 401);
    let (status, body) = call(&broker, "GET", "/api/queues", Some("admin:secret"));
    assert_eq!(status, 200);
    assert!(body.contains("\"ops.q\""), "{body}");
    let (status, body) = call(&broker, "GET", "/api/queues", Some("bob:secret"));
    assert_eq!((status, body.as_str()), (200, "[]"), "bob manages nothing");
    let (status, _) = call(
        &broker,
        "POST",
        "/api/queues/ops.q/purge",
        Some("bob:secret"),
    );
    assert_eq!(status, 403);
    assert_eq!(
        serde_json::from_str::<Value>(
            &call(&broker, "GET", "/api/queues/ops.q", Some("admin:secret")).1
        )
        .unwrap()["messages"],
        1,
        "bob's purge did nothing"
    );
    let (ok, text) = ordo(
        &broker,
        &[
            "queues",
            "--user",
            "admin",
            "--password",
            "secret",
            "--json",
        ],
    );
    assert!(ok && text.contains("ops.q"), "{text}");
    let (ok, text) = ordo(
        &broker,
        &["queues", "--user", "admin", "--password", "nope"],
    );
    assert!(!ok && text.contains("401"), "{text}");
    // Metrics and the description need no login.
    assert_eq!(call(&broker, "GET", "/metrics", None).0, 200);
    assert!(!broker.log().contains("secret\""), "no password in the log");
}

/// Outside testing found 300 wrong Basic-auth passwords answered 401 in
/// 0.23 s, then the right one working: the admin API now counts failed
/// logins against the limiter AMQP logins use, one per source address.
#[tokio::test]
async fn failed_admin_logins_share_the_per_address_limit_with_amqp_logins() {
    let config = users_config(&[("admin", &["ops"])], &[("#", "@ops")]).replace(
        "allow-anonymous = false",
        "allow-anonymous = false\nmax-failed-logins = 5\nfailed-login-window = \"2s\"",
    );
    let (broker, _file) = start(&config);
    for _ in 0..5 {
        assert_eq!(
            call(&broker, "GET", "/api/queues", Some("admin:guess")).0,
            401
        );
    }
    // Refused without being checked, the right password too, and over AMQP.
    let (status, body) = call(&broker, "GET", "/api/queues", Some("admin:secret"));
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("too many failed logins"), "{body}");
    let amqp = format!("amqp://admin:secret@{}", broker.addr);
    let refused = Connection::open("c", amqp.as_str()).await;
    assert!(
        format!("{refused:?}").contains("SysTemp"),
        "AMQP logins from the address are held too: {refused:?}"
    );
    // Once the failures are older than the window, it may try again.
    let started = std::time::Instant::now();
    while call(&broker, "GET", "/api/queues", Some("admin:secret")).0 != 200 {
        assert!(started.elapsed() < DEADLINE, "still refused");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // And failed AMQP logins hold the admin API back.
    let wrong = format!("amqp://admin:guess@{}", broker.addr);
    for _ in 0..5 {
        assert!(Connection::open("c", wrong.as_str()).await.is_err());
    }
    assert_eq!(
        call(&broker, "GET", "/api/queues", Some("admin:secret")).0,
        429
    );
    assert!(broker.log().contains("admin API: too many failed logins"));
}

/// The routes src/admin.rs serves, with their methods: each `.route("PATH",
/// get(..).patch(..))` call's path and the method functions up to the next.
fn served_routes() -> Vec<(String, Vec<String>)> {
    let source = include_str!("../src/admin.rs");
    let calls: Vec<&str> = source.split(".route(").skip(1).collect();
    calls
        .iter()
        .map(|call| {
            let call = call.split(".with_state").next().unwrap();
            let path = call.split('"').nth(1).unwrap().to_owned();
            let methods = ["get", "post", "patch", "delete", "put"]
                .iter()
                .filter(|m| call.contains(&format!("{m}(")) || call.contains(&format!(".{m}(")))
                .map(|m| m.to_string())
                .collect();
            (path, methods)
        })
        .collect()
}

#[test]
fn the_openapi_description_lists_every_route() {
    let (broker, _file) = start("");
    let (status, body) = call(&broker, "GET", "/api/openapi.json", None);
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let documented = doc["paths"].as_object().unwrap();
    let served = served_routes();
    assert!(served.len() >= 16, "{served:?}");
    for (route, methods) in &served {
        if route == "/" {
            continue; // the console page
        }
        let entry = documented
            .get(route)
            .unwrap_or_else(|| panic!("{route} undocumented"));
        let mut listed: Vec<String> = entry.as_object().unwrap().keys().cloned().collect();
        listed.sort();
        let mut methods = methods.clone();
        methods.sort();
        assert_eq!(listed, methods, "methods of {route}");
        // Every documented GET without parameters answers.
        if !route.contains('{') && methods.contains(&"get".to_string()) {
            assert_eq!(call(&broker, "GET", route, None).0, 200, "{route}");
        }
    }
    for route in documented.keys() {
        assert!(
            served.iter().any(|(r, _)| r == route),
            "{route} documented but not served"
        );
    }
    // The documented fields are the ones the API sends.
    let queue = json(&broker, "GET", "/api/queues");
    let schema = &doc["components"]["schemas"];
    let fields = |name: &str| {
        let mut keys: Vec<String> = schema[name]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    let keys_of = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(keys_of(&queue[0]), fields("Queue"));
}
