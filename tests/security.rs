//! Authentication, authorisation and reload through the real broker.

mod common;

use common::admin::SECRET;
use common::{Broker, DEADLINE};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Message, Outcome, Properties};
use fe2o3_amqp::{Connection, Session};
use std::io::Write;
use tokio::time::timeout;

fn config(access: &str) -> String {
    format!(
        r#"
[sasl]
allow-anonymous = true

[[users]]
name = "alice"
password = "{SECRET}"
groups = ["traders"]

[[users]]
name = "bob"
password = "{SECRET}"

{access}
"#
    )
}

const RULES: &str = r#"
[[access]]
pattern = "orders.#"
send = ["@traders"]
receive = ["*"]
create = ["@traders"]

[[access]]
pattern = "public.#"
send = ["*"]
receive = ["*"]
create = ["*"]
"#;

fn write(file: &mut tempfile::NamedTempFile, text: &str) {
    let f = file.as_file_mut();
    f.set_len(0).unwrap();
    use std::io::Seek;
    f.rewind().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

async fn connect(url: &str) -> (ConnectionHandle<()>, SessionHandle<()>) {
    let mut connection = timeout(DEADLINE, Connection::open("test", url))
        .await
        .expect("in time")
        .expect("connect");
    let session = Session::begin(&mut connection).await.expect("begin");
    (connection, session)
}

/// Whether a producer may attach to `address` (each try on a fresh connection).
async fn may_send(url: &str, address: &str) -> Result<(), String> {
    let (mut c, mut s) = connect(url).await;
    let r = Sender::attach(&mut s, "p", address).await;
    let _ = c.close().await;
    r.map(|_| ()).map_err(|e| format!("{e:?}"))
}

/// Whether a consumer may attach to `address`.
async fn may_receive(url: &str, address: &str) -> Result<(), String> {
    let (mut c, mut s) = connect(url).await;
    let r = Receiver::attach(&mut s, "r", address).await;
    let _ = c.close().await;
    r.map(|_| ()).map_err(|e| format!("{e:?}"))
}

fn denied(r: Result<(), String>) -> bool {
    matches!(&r, Err(e) if e.contains("UnauthorizedAccess"))
}

#[tokio::test]
async fn access_rules_decide_send_receive_and_create_per_user_and_group() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write(&mut file, &config(RULES));
    let broker = Broker::start_with(Some(file.path()));
    let alice = broker.url_as("alice", "secret");
    let bob = broker.url_as("bob", "secret");
    let anonymous = broker.url();

    // A trader sends (and so creates) orders.eu; bob and anonymous may not send.
    may_send(&alice, "orders.eu").await.unwrap();
    assert!(denied(may_send(&bob, "orders.eu").await));
    assert!(denied(may_send(&anonymous, "orders.eu").await));
    // Everyone may receive from the existing queue, but not create one.
    may_receive(&bob, "orders.eu").await.unwrap();
    may_receive(&anonymous, "orders.eu").await.unwrap();
    assert!(
        denied(may_receive(&bob, "orders.us").await),
        "create denied"
    );
    // No rule matches: denied for everyone.
    assert!(denied(may_send(&alice, "secret.stuff").await));
    assert!(denied(may_receive(&alice, "secret.stuff").await));
    // public.# is open.
    may_send(&anonymous, "public.news").await.unwrap();
    may_receive(&bob, "public.news").await.unwrap();
    let log = broker.log();
    assert!(log.contains("access denied"), "denials are logged");
    assert!(!log.contains("secret\""), "no password in the log");
}

#[tokio::test]
async fn a_relay_transfer_to_a_denied_address_is_rejected_unauthorized() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write(&mut file, &config(RULES));
    let broker = Broker::start_with(Some(file.path()));
    let (mut c, mut s) = connect(&broker.url_as("bob", "secret")).await;
    let mut relay = Sender::builder()
        .name("relay")
        .target(fe2o3_amqp::types::messaging::Target::builder().build())
        .attach(&mut s)
        .await
        .unwrap();
    let to = |address: &str| {
        Message::builder()
            .properties(Properties::builder().to(address.to_string()).build())
            .value("x".to_string())
            .build()
    };
    let outcome = relay.send(to("orders.eu")).await.unwrap();
    match outcome {
        Outcome::Rejected(r) => {
            let e = format!("{:?}", r.error);
            assert!(e.contains("UnauthorizedAccess"), "{e}");
        }
        other => panic!("expected rejected, got {other:?}"),
    }
    // The link carries on: an allowed address is accepted.
    let outcome = relay.send(to("public.ok")).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let _ = c.close().await;
}

#[tokio::test]
async fn rules_and_users_reload_on_sighup() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write(&mut file, &config(RULES));
    let broker = Broker::start_with(Some(file.path()));
    let bob = broker.url_as("bob", "secret");
    assert!(denied(may_send(&bob, "orders.eu").await));
    // bob joins the traders.
    let granted = config(RULES).replace(
        "name = \"bob\"\npassword = \"",
        "name = \"bob\"\ngroups = [\"traders\"]\npassword = \"",
    );
    write(&mut file, &granted);
    broker.hangup("configuration reloaded");
    may_send(&bob, "orders.eu").await.unwrap();
    // An invalid file changes nothing.
    write(&mut file, "[[access]]\npattern = \"a..b\"\n");
    broker.hangup("reload refused");
    may_send(&bob, "orders.eu").await.unwrap();
}

/// Opens a connection authenticating with SASL SCRAM-SHA-256.
async fn scram(url: &str, user: &str, password: &str) -> Result<ConnectionHandle<()>, String> {
    use fe2o3_amqp::sasl_profile::{SaslProfile, SaslScramSha256};
    let open = Connection::builder()
        .container_id("scram-test")
        .sasl_profile(SaslProfile::ScramSha256(SaslScramSha256::new(
            user, password,
        )))
        .open(url);
    timeout(DEADLINE, open)
        .await
        .expect("answered in time")
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn scram_sha_256_logs_in_with_the_stored_credential_only() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write(
        &mut file,
        &config("").replace("allow-anonymous = true", "allow-anonymous = false"),
    );
    let broker = Broker::start_with(Some(file.path()));
    let addr = format!("amqp://{}", broker.addr);
    let mut c = scram(&addr, "alice", "secret").await.expect("SCRAM login");
    let mut s = Session::begin(&mut c).await.unwrap();
    Sender::attach(&mut s, "p", "scram-q").await.unwrap();
    let _ = c.close().await;
    assert!(scram(&addr, "alice", "wrong").await.is_err());
    assert!(scram(&addr, "mallory", "secret").await.is_err());
    // Anonymous is off.
    assert!(timeout(DEADLINE, Connection::open("anon", addr.as_str()))
        .await
        .unwrap()
        .is_err());
    assert!(!broker.log().contains("secret\""));
}

/// Opens (and keeps) a connection that can begin a session, or says why
/// not (a refusal after the Open comes as the Close's error).
async fn try_open(url: &str) -> Result<ConnectionHandle<()>, String> {
    let mut c = match timeout(DEADLINE, Connection::open("limits", url)).await {
        Ok(r) => r.map_err(|e| format!("{e:?}"))?,
        Err(_) => return Err("timed out".into()),
    };
    match timeout(DEADLINE, Session::begin(&mut c)).await {
        Ok(Ok(mut s)) => {
            s.end().await.map_err(|e| format!("{e:?}"))?;
            Ok(c)
        }
        Ok(Err(begin)) => Err(format!("{begin:?}; close: {:?}", c.close().await)),
        Err(_) => Err("begin timed out".into()),
    }
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_source_address() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write(
        &mut file,
        &config("").replace(
            "allow-anonymous = true",
            "allow-anonymous = true\nmax-failed-logins = 3\nfailed-login-window = \"3s\"",
        ),
    );
    let broker = Broker::start_with(Some(file.path()));
    for _ in 0..3 {
        let e = try_open(&broker.url_as("alice", "guess"))
            .await
            .unwrap_err();
        assert!(e.contains("Auth"), "{e}");
    }
    // Even the right password is refused now, without being checked...
    let e = try_open(&broker.url_as("alice", "secret"))
        .await
        .unwrap_err();
    assert!(e.contains("SysTemp"), "refused as temporary: {e}");
    // ...and SCRAM too; ANONYMOUS checks nothing and is not limited.
    assert!(scram(&broker.addr.to_string(), "alice", "secret")
        .await
        .is_err());
    try_open(&broker.url())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
    assert!(broker.log().contains("too many failed logins"));
    // Once the failures are older than the window, the address may try again.
    let started = std::time::Instant::now();
    loop {
        match try_open(&broker.url_as("alice", "secret")).await {
            Ok(mut c) => {
                c.close().await.unwrap();
                break;
            }
            Err(e) => {
                assert!(started.elapsed() < DEADLINE, "still refused: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test]
async fn connection_limits_total_and_per_user_close_with_resource_limit_exceeded() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write(
        &mut file,
        &format!(
            "[limits]\nmax-connections = 3\nmax-connections-per-user = 2\n{}",
            config("")
        ),
    );
    let broker = Broker::start_with(Some(file.path()));
    let alice = broker.url_as("alice", "secret");
    let mut a1 = try_open(&alice).await.unwrap();
    let mut a2 = try_open(&alice).await.unwrap();
    let e = try_open(&alice).await.unwrap_err();
    assert!(e.contains("ResourceLimitExceeded"), "alice's third: {e}");
    // Bob has his own count (once the broker has let go of alice's refused
    // third); then the broker is full for everyone.
    let started = std::time::Instant::now();
    let mut b1 = loop {
        match try_open(&broker.url_as("bob", "secret")).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(e.contains("ResourceLimitExceeded"), "{e}");
                assert!(started.elapsed() < DEADLINE, "bob never got in: {e}");
            }
        }
    };
    let e = try_open(&broker.url()).await.unwrap_err();
    assert!(
        e.contains("ResourceLimitExceeded"),
        "fourth connection: {e}"
    );
    // Those open carry on; a closed one frees its place.
    let (_, mut s) = (0, Session::begin(&mut a1).await.unwrap());
    let mut sender = Sender::attach(&mut s, "p", "limits.q").await.unwrap();
    sender.send("still here".to_string()).await.unwrap();
    sender.close().await.unwrap();
    s.end().await.unwrap();
    a2.close().await.unwrap();
    let mut again = loop {
        // The broker notices the close a moment after the client does.
        match try_open(&alice).await {
            Ok(c) => break c,
            Err(e) => assert!(e.contains("ResourceLimitExceeded"), "{e}"),
        }
    };
    again.close().await.unwrap();
    a1.close().await.unwrap();
    b1.close().await.unwrap();
    let log = broker.log();
    assert!(
        log.contains("the user's connection limit is reached"),
        "{log}"
    );
    assert!(log.contains("connection refused: limit reached"), "{log}");
}
