//! The store's disk alarm through the real broker, on a small tmpfs made
//! for the test (CI runs as root): durable messages fill it until the
//! free-space floor refuses them (before the disk is full), consuming them
//! gives the space back and the alarm clears without a restart, and after
//! a kill -9 every acknowledged message is still there.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Broker, DEADLINE};
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition};
use fe2o3_amqp::types::messaging::{Body, Data, Header, Message, Outcome};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::{Connection, Session};
use tokio::time::timeout;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    /// Where it is mounted.
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root): {status}"
        );
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Bytes free on it.
    fn free(&self) -> u64 {
        fs4::available_space(&self.path).unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A 64 KiB durable message numbered `n`, of bytes that do not compress.
fn message(n: u32) -> Message<Data> {
    let mut x = n.wrapping_mul(2_654_435_761) | 1;
    let mut body = Vec::with_capacity(64 * 1024);
    body.extend_from_slice(&n.to_be_bytes());
    while body.len() < 64 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        body.extend_from_slice(&x.to_le_bytes());
    }
    Message::builder()
        .header(Header {
            durable: true,
            ..Default::default()
        })
        .data(Binary::from(body))
        .build()
}

/// The number a received message carries.
fn number(body: &Body<Value>) -> u32 {
    match body {
        Body::Data(batch) => {
            let b = &batch[0].0;
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        }
        other => panic!("{other:?}"),
    }
}

/// Receives and accepts `n` messages; their numbers.
async fn take(url: &str, n: usize) -> Vec<u32> {
    let mut c = Connection::open("consumer", url).await.unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let mut receiver = Receiver::attach(&mut s, "consumer", "disk.q")
        .await
        .unwrap();
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let d = timeout(DEADLINE, receiver.recv::<Body<Value>>())
            .await
            .expect("a message in time")
            .unwrap();
        got.push(number(d.body()));
        receiver.accept(&d).await.unwrap();
    }
    receiver.close().await.unwrap();
    c.close().await.unwrap();
    got
}

/// The test disk's size.
const DISK: u64 = 256 << 20;

#[tokio::test]
async fn fill_refuse_drain_accept_again_restart_on_a_small_disk() {
    let disk_dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(disk_dir.path(), &format!("{}", DISK));
    let mut config = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut config, b"[store]\nmin-free-disk = 33554432\n").unwrap();
    let mut broker = Broker::start_with_data_dir(Some(config.path()), Some(&disk.path));
    let url = broker.url();

    // Fill: durable messages until the floor refuses one.
    let mut c = Connection::open("producer", url.as_str()).await.unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let mut sender = Sender::attach(&mut s, "producer", "disk.q").await.unwrap();
    let mut accepted = Vec::new();
    loop {
        let n = accepted.len() as u32;
        let outcome = timeout(DEADLINE, sender.send(message(n)))
            .await
            .expect("settled in time")
            .unwrap();
        match outcome {
            Outcome::Accepted(_) => accepted.push(n),
            Outcome::Rejected(r) => {
                let condition = r.error.map(|e| e.condition);
                assert_eq!(
                    condition,
                    Some(ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded))
                );
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(accepted.len() < 10_000, "the floor never refused");
    }
    assert!(
        accepted.len() > 100,
        "{} accepted before the floor",
        accepted.len()
    );
    assert!(
        disk.free() > 32 << 20,
        "refused before the floor was crossed"
    );
    assert!(
        !broker.log().contains("STORE FAILURE"),
        "the store never hit a full disk: {}",
        broker.log()
    );

    // Drain: every accepted message, in order. The emptied store gives
    // its space back (all of it but fjall's active journal, at most 64 MiB)
    // and durable messages are accepted again, without a restart.
    assert_eq!(take(&url, accepted.len()).await, accepted);
    let started = std::time::Instant::now();
    let given_back = "store gave back the space of removed messages";
    while disk.free() < DISK - (80 << 20) || !broker.log().contains(given_back) {
        assert!(
            started.elapsed() < DEADLINE,
            "{} MiB still used: {}",
            (DISK - disk.free()) >> 20,
            broker.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut again = Vec::new();
    let first = accepted.len() as u32;
    while again.len() < 20 {
        let n = first + again.len() as u32;
        match sender.send(message(n)).await.unwrap() {
            Outcome::Accepted(_) => again.push(n),
            _ => {
                assert!(
                    started.elapsed() < DEADLINE,
                    "durable messages still refused: {}",
                    broker.log()
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    c.close().await.unwrap();

    // Restart after kill -9: exactly the messages accepted since.
    broker.restart();
    let url = broker.url();
    assert_eq!(take(&url, again.len()).await, again);
    let mut c = Connection::open("probe", url.as_str()).await.unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let mut receiver = Receiver::attach(&mut s, "probe", "disk.q").await.unwrap();
    receiver.set_credit(10).await.unwrap();
    let nothing = timeout(
        std::time::Duration::from_millis(500),
        receiver.recv::<Body<Value>>(),
    )
    .await;
    assert!(nothing.is_err(), "no acknowledged message came back");
    c.close().await.unwrap();
    drop(broker);
}
