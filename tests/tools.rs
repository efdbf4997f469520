//! `ordo send`, `ordo receive` and `ordo bench` against the real broker.

mod common;

use std::process::Command;

use common::{fixture, Broker};

fn ordo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args(args)
        .output()
        .expect("run ordo")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn send_then_receive_prints_the_bodies_in_order() {
    let broker = Broker::start();
    let url = broker.url();
    let out = ordo(&[
        "send",
        "--url",
        &url,
        "tools-q",
        "--count",
        "3",
        "--body",
        "hello {n}",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = ordo(&["receive", "--url", &url, "tools-q", "--count", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello 0\nhello 1\nhello 2\n");
}

#[test]
fn receive_with_a_count_takes_only_that_many() {
    let broker = Broker::start();
    let url = broker.url();
    assert!(ordo(&["send", "--url", &url, "partial", "--count", "5"])
        .status
        .success());
    let out = ordo(&["receive", "--url", &url, "partial", "--count", "2"]);
    assert_eq!(text(&out.stdout).lines().count(), 2);
    let out = ordo(&["receive", "--url", &url, "partial", "--timeout", "0.5"]);
    assert_eq!(text(&out.stdout), "message 2\nmessage 3\nmessage 4\n");
}

#[test]
fn tools_log_in_with_plain_credentials() {
    let broker = Broker::start_with(Some(&fixture("users.toml")));
    let good = broker.url_as("alice", "secret");
    assert!(ordo(&["send", "--url", &good, "private"]).status.success());
    let bad = broker.url_as("alice", "nope");
    let out = ordo(&["send", "--url", &bad, "private"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("SASL"), "{}", text(&out.stderr));
}

fn bench_line(args: &[&str]) -> serde_json::Value {
    let out = ordo(args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_str(text(&out.stdout).trim()).expect("one JSON line")
}

#[test]
fn bench_runs_lose_nothing_through_the_broker_and_peer_to_peer() {
    let broker = Broker::start();
    let url = broker.url();
    for mode in [&["--presettled"][..], &[][..]] {
        let mut args = vec![
            "bench",
            "run",
            "--url",
            &url,
            "--count",
            "5000",
            "--producers",
            "2",
            "--consumers",
            "2",
        ];
        args.extend_from_slice(mode);
        let line = bench_line(&args);
        assert_eq!(line["received"], 5000, "{line}");
        assert_eq!(line["lost"], 0);
        assert_eq!(line["duplicates"], 0);
        assert!(line["msgs_per_s"].as_f64().unwrap() > 0.0);
    }
    let line = bench_line(&["bench", "run", "--peer", "--count", "5000"]);
    assert_eq!(
        (line["received"].as_u64(), line["lost"].as_u64()),
        (Some(5000), Some(0)),
        "{line}"
    );
}

#[test]
fn bench_fills_and_drains_a_backlog_in_order() {
    let broker = Broker::start();
    let url = broker.url();
    let fill = bench_line(&[
        "bench",
        "run",
        "--url",
        &url,
        "--address",
        "backlog",
        "--count",
        "3000",
        "--consumers",
        "0",
    ]);
    assert_eq!(fill["accepted"], 3000, "{fill}");
    let drain = bench_line(&[
        "bench",
        "run",
        "--url",
        &url,
        "--address",
        "backlog",
        "--count",
        "3000",
        "--producers",
        "0",
    ]);
    assert_eq!(
        (drain["received"].as_u64(), drain["reordered"].as_u64()),
        (Some(3000), Some(0)),
        "{drain}"
    );
}

#[test]
fn bench_connections_and_queues_report_their_counts() {
    let broker = Broker::start();
    let url = broker.url();
    let line = bench_line(&["bench", "connections", "--url", &url, "--count", "50"]);
    assert_eq!(line["connections"], 50);
    let line = bench_line(&["bench", "queues", "--url", &url, "--count", "1500"]);
    assert_eq!(line["queues"], 1500);
}

#[test]
fn bench_fsync_reports_a_rate() {
    let dir = tempfile::tempdir().unwrap();
    let line = bench_line(&[
        "bench",
        "fsync",
        "--dir",
        dir.path().to_str().unwrap(),
        "--count",
        "512",
        "--batch",
        "256",
    ]);
    assert!(line["msgs_per_s"].as_f64().unwrap() > 0.0, "{line}");
}
