//! The web console in a real headless browser (Debian's chromium): a
//! broker with groups in flight, a held group and an exclusive queue; the
//! page the browser rendered must show them. `ORDO_CONSOLE_SCREENSHOT=FILE`
//! also saves screenshots of the queue page there and of the connections
//! page next to it (docs/console.png and docs/console-connections.png are
//! made this way).

mod common;

use std::io::Write;
use std::process::Command;

use common::raw::{AttachOptions, RawConsumer};
use common::Broker;
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::types::messaging::{DeliveryState, Message, Modified, Properties};
use fe2o3_amqp::{Connection, Session};

/// The page as chromium rendered it, after its scripts ran.
fn render(url: &str, screenshot: Option<&str>) -> String {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is installed (.ci/test installs it)");
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(chromium);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
    ]);
    command.arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(file) => command.arg(format!("--screenshot={file}")),
        None => command.arg("--dump-dom"),
    };
    let out = command.arg(url).output().expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_console_shows_queues_consumers_groups_and_a_held_group() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        "[admin]\nenabled = true\nport = 0\n\n[[queues]]\npattern = \"orders\"\ngroup-ordering = \"strict\"\nmax-delivery-attempts = 2\npoison = \"hold\"\n"
    )
    .unwrap();
    let broker = Broker::start_with(Some(file.path()));
    let admin = format!("http://{}", broker.admin_addr.unwrap());
    // Two consumers, then three groups: each consumer owns at least one.
    let mut one = RawConsumer::attach(&broker.url(), "one", "orders", AttachOptions::default())
        .await
        .unwrap();
    one.credit(20).await;
    let mut two = RawConsumer::attach(&broker.url(), "two", "orders", AttachOptions::default())
        .await
        .unwrap();
    two.credit(20).await;
    let mut c = Connection::open("producer", broker.url().as_str())
        .await
        .unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let mut sender = Sender::attach(&mut s, "p", "orders").await.unwrap();
    for (group, body) in [
        ("eu-7", "poison"),
        ("us-3", "u1"),
        ("apac-1", "a1"),
        ("eu-7", "e2"),
        ("us-3", "u2"),
    ] {
        let m = Message::builder()
            .properties(Properties::builder().group_id(group.to_string()).build())
            .value(body.to_string())
            .build();
        sender.send(m).await.unwrap();
    }
    // Whoever got the poison fails it twice: group eu-7 is held.
    let mut failed = 0;
    while failed < 2 {
        for consumer in [&mut one, &mut two] {
            if let Some(d) = consumer
                .next_within(std::time::Duration::from_millis(100))
                .await
            {
                if d.text() == "poison" {
                    consumer
                        .settle(
                            d.delivery_id,
                            DeliveryState::Modified(Modified {
                                delivery_failed: Some(true),
                                undeliverable_here: None,
                                message_annotations: None,
                            }),
                        )
                        .await;
                    failed += 1;
                }
            }
        }
    }
    let list = render(&format!("{admin}/"), None);
    assert!(list.contains("<table id=\"queues\""), "{list}");
    assert!(list.contains(">orders</a>"), "{list}");
    let page = render(&format!("{admin}/#queue=orders"), None);
    assert!(page.contains("Queue orders"), "{page}");
    for group in ["eu-7", "us-3", "apac-1"] {
        assert!(
            page.contains(&format!("<td>{group}</td>")),
            "{group}: {page}"
        );
    }
    assert!(page.contains("held at a poison message"), "{page}");
    assert!(page.contains("<th>Last delivery</th>"), "{page}");
    assert!(
        page.contains(" s ago</td>"),
        "a last delivery seconds ago: {page}"
    );
    assert!(page.contains("ordering strict"), "{page}");
    let consumers: Vec<u64> = serde_json::from_str::<serde_json::Value>(
        &ureq::get(format!("{admin}/api/queues/orders/consumers"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap()
    .as_array()
    .unwrap()
    .iter()
    .map(|c| c["id"].as_u64().unwrap())
    .collect();
    for id in consumers {
        assert!(
            page.contains(&format!("<td class=\"owner\">{id}</td>")),
            "owner {id} shown: {page}"
        );
    }
    // The connections page: the producer and both consumers, with what
    // each consumes from.
    let connections = render(&format!("{admin}/#connections"), None);
    assert!(
        connections.contains("<table id=\"connections\""),
        "{connections}"
    );
    assert!(
        connections.contains("<td class=\"container\">producer</td>"),
        "{connections}"
    );
    // Rows, not the page's own script: a digit follows.
    let cell = "<td class=\"connection\">";
    let rows = connections
        .match_indices(cell)
        .filter(|(i, _)| connections[i + cell.len()..].starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(rows, 3, "{connections}");
    assert!(connections.contains("<td>orders</td>"), "{connections}");
    // The producer's five messages, received.
    assert!(
        connections.contains("<td class=\"received\">5</td>"),
        "{connections}"
    );
    assert!(page.contains("oldest message waiting"), "{page}");
    if let Ok(file) = std::env::var("ORDO_CONSOLE_SCREENSHOT") {
        render(&format!("{admin}/#queue=orders"), Some(&file));
        assert!(std::path::Path::new(&file).exists());
        let connections_file = file.replace(".png", "-connections.png");
        render(&format!("{admin}/#connections"), Some(&connections_file));
        assert!(std::path::Path::new(&connections_file).exists());
    }
    c.close().await.ok();
}
