//! TLS through the real broker: the amqps listener (with and without the
//! AMQP TLS header first), the upgrade on the plain port, a wrong CA,
//! client certificates and SASL EXTERNAL, certificate reload on SIGHUP,
//! and `required`.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Broker, DEADLINE};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::{Connection, Session};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// A certificate authority that signs server and client certificates.
struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM and DER.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn sign(&self, common_name: &str, names: &[&str]) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        roots
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A connector trusting `ca`, presenting `client` when given.
fn connector(ca: &Ca, client: Option<&Leaf>) -> TlsConnector {
    connector_with(
        ca,
        client,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

fn connector_with(
    ca: &Ca,
    client: Option<&Leaf>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots());
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.cert.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key.clone())),
            )
            .unwrap(),
    };
    TlsConnector::from(Arc::new(config))
}

/// Files of a broker with TLS: its certificate, key, client CA, config.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(server: &Leaf, client_ca: Option<&Ca>, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { dir };
        setup.install(server);
        let mut tls = format!(
            "[tls]\ncert = {:?}\nkey = {:?}\nport = 0\n",
            setup.path("server.pem"),
            setup.path("server.key")
        );
        if let Some(ca) = client_ca {
            std::fs::write(setup.path("clients.pem"), ca.pem()).unwrap();
            tls.push_str(&format!("client-ca = {:?}\n", setup.path("clients.pem")));
        }
        let config = format!("{tls}{extra}\n");
        std::fs::write(setup.path("ordo.toml"), config).unwrap();
        setup
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Writes the server certificate and key (read at start and on SIGHUP).
    fn install(&self, server: &Leaf) {
        std::fs::write(self.path("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(self.path("server.key"), &server.key_pem).unwrap();
    }

    fn start(&self) -> Broker {
        Broker::start_with(Some(Path::new(&self.path("ordo.toml"))))
    }
}

/// Opens a connection over TLS to `addr` (alt: ClientHello first, no AMQP
/// TLS header), with `profile`.
async fn open_tls(
    addr: std::net::SocketAddr,
    tls: TlsConnector,
    alt: bool,
    profile: Option<SaslProfile>,
) -> Result<ConnectionHandle<()>, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut builder = Connection::builder()
        .container_id("tls-test")
        .scheme("amqps")
        .domain("localhost")
        .hostname("localhost")
        .rustls_connector(tls)
        .alt_tls_establishment(alt);
    if let Some(profile) = profile {
        builder = builder.sasl_profile(profile);
    }
    match timeout(DEADLINE, builder.open_with_stream(stream)).await {
        Ok(r) => r.map_err(|e| format!("{e:?}")),
        Err(_) => Err("timed out".into()),
    }
}

/// Sends one message to `address` and receives it back.
async fn round_trip(connection: &mut ConnectionHandle<()>, address: &str) {
    let mut session = Session::begin(connection).await.unwrap();
    let mut sender = Sender::attach(&mut session, "p", address).await.unwrap();
    sender.send("over tls".to_string()).await.unwrap();
    let mut receiver = Receiver::attach(&mut session, "c", address).await.unwrap();
    let delivery = timeout(DEADLINE, receiver.recv::<String>())
        .await
        .expect("in time")
        .unwrap();
    assert_eq!(delivery.body(), "over tls");
    receiver.accept(&delivery).await.unwrap();
    sender.close().await.unwrap();
    receiver.close().await.unwrap();
    session.end().await.unwrap();
}

#[tokio::test]
async fn amqps_listener_with_and_without_the_tls_header_and_the_upgrade_on_the_plain_port() {
    let ca = Ca::new("Ordo test CA");
    let setup = Setup::new(&ca.sign("localhost", &["localhost", "127.0.0.1"]), None, "");
    let broker = setup.start();
    let tls_addr = broker
        .tls_addr
        .expect("the port file names the amqps address");
    assert_ne!(tls_addr.port(), broker.addr.port());

    // ClientHello first (Proton, Qpid JMS, .NET), on the amqps port.
    let mut c = open_tls(tls_addr, connector(&ca, None), true, None)
        .await
        .unwrap();
    round_trip(&mut c, "tls.direct").await;
    c.close().await.unwrap();
    // The AMQP TLS header first (fe2o3-amqp's default), on the amqps port.
    let mut c = open_tls(tls_addr, connector(&ca, None), false, None)
        .await
        .unwrap();
    round_trip(&mut c, "tls.header").await;
    c.close().await.unwrap();
    // The upgrade on the plain port.
    let mut c = open_tls(broker.addr, connector(&ca, None), false, None)
        .await
        .unwrap();
    round_trip(&mut c, "tls.upgrade").await;
    c.close().await.unwrap();
    // TLS 1.2 only is fine too.
    let tls12 = connector_with(&ca, None, &[&rustls::version::TLS12]);
    let mut c = open_tls(tls_addr, tls12, true, None).await.unwrap();
    round_trip(&mut c, "tls.v12").await;
    c.close().await.unwrap();
    // Plain AMQP on the plain port still works (required = false).
    let mut c = Connection::open("plain", broker.url().as_str())
        .await
        .unwrap();
    round_trip(&mut c, "plain").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused_and_others_carry_on() {
    let ca = Ca::new("Ordo test CA");
    let other = Ca::new("Some other CA");
    let setup = Setup::new(&ca.sign("localhost", &["localhost"]), None, "");
    let broker = setup.start();
    let tls_addr = broker.tls_addr.unwrap();
    let mut good = open_tls(tls_addr, connector(&ca, None), true, None)
        .await
        .unwrap();
    let e = open_tls(tls_addr, connector(&other, None), true, None)
        .await
        .expect_err("wrong CA");
    assert!(
        e.to_lowercase().contains("certificate") || e.contains("Io"),
        "{e}"
    );
    let e = open_tls(broker.addr, connector(&other, None), false, None)
        .await
        .expect_err("wrong CA on the upgrade");
    assert!(!e.is_empty());
    round_trip(&mut good, "still.fine").await;
    good.close().await.unwrap();
    assert!(
        broker.log().contains("TLS handshake failed"),
        "{}",
        broker.log()
    );
}

#[tokio::test]
async fn client_certificates_log_in_with_sasl_external_as_their_common_name() {
    let ca = Ca::new("Ordo test CA");
    let clients = Ca::new("Client CA");
    let rogue = Ca::new("Rogue CA");
    let setup = Setup::new(
        &ca.sign("localhost", &["localhost"]),
        Some(&clients),
        r#"client-auth = "required"

[sasl]
allow-anonymous = false

[[access]]
pattern = "alice.#"
send = ["alice"]
receive = ["alice"]
create = ["alice"]
"#,
    );
    let broker = setup.start();
    let tls_addr = broker.tls_addr.unwrap();
    let alice = clients.sign("alice", &[]);
    let mut c = open_tls(
        tls_addr,
        connector(&ca, Some(&alice)),
        true,
        Some(SaslProfile::External),
    )
    .await
    .unwrap();
    // The access rule lets only alice in: EXTERNAL made her alice.
    round_trip(&mut c, "alice.inbox").await;
    c.close().await.unwrap();

    // Bob's certificate is valid but the rule is alice's.
    let bob = clients.sign("bob", &[]);
    let mut c = open_tls(
        tls_addr,
        connector(&ca, Some(&bob)),
        true,
        Some(SaslProfile::External),
    )
    .await
    .unwrap();
    let mut s = Session::begin(&mut c).await.unwrap();
    let e = Sender::attach(&mut s, "p", "alice.inbox")
        .await
        .expect_err("bob is not alice");
    assert!(format!("{e:?}").contains("UnauthorizedAccess"), "{e:?}");
    let _ = c.close().await;

    // No certificate, or one from another CA: the TLS handshake fails.
    assert!(open_tls(tls_addr, connector(&ca, None), true, None)
        .await
        .is_err());
    let mallory = rogue.sign("alice", &[]);
    assert!(open_tls(
        tls_addr,
        connector(&ca, Some(&mallory)),
        true,
        Some(SaslProfile::External)
    )
    .await
    .is_err());
}

#[tokio::test]
async fn optional_client_certificates_external_only_with_one() {
    let ca = Ca::new("Ordo test CA");
    let setup = Setup::new(
        &ca.sign("localhost", &["localhost"]),
        Some(&ca),
        "client-auth = \"optional\"\n\n[sasl]\nallow-anonymous = false\n",
    );
    let broker = setup.start();
    let tls_addr = broker.tls_addr.unwrap();
    let carol = ca.sign("carol", &[]);
    let mut c = open_tls(
        tls_addr,
        connector(&ca, Some(&carol)),
        true,
        Some(SaslProfile::External),
    )
    .await
    .unwrap();
    round_trip(&mut c, "carol.q").await;
    c.close().await.unwrap();
    // Without a certificate TLS works, but EXTERNAL is not offered and
    // anonymous is off.
    let e = open_tls(
        tls_addr,
        connector(&ca, None),
        true,
        Some(SaslProfile::External),
    )
    .await
    .expect_err("no certificate, no EXTERNAL");
    assert!(!e.is_empty());
}

#[tokio::test]
async fn certificates_reload_on_sighup_for_new_connections() {
    let first = Ca::new("First CA");
    let second = Ca::new("Second CA");
    let setup = Setup::new(&first.sign("localhost", &["localhost"]), None, "");
    let broker = setup.start();
    let tls_addr = broker.tls_addr.unwrap();
    let mut old = open_tls(tls_addr, connector(&first, None), true, None)
        .await
        .unwrap();
    setup.install(&second.sign("localhost", &["localhost"]));
    broker.hangup("configuration reloaded");
    let mut new = open_tls(tls_addr, connector(&second, None), true, None)
        .await
        .expect("the new certificate is served");
    assert!(
        open_tls(tls_addr, connector(&first, None), true, None)
            .await
            .is_err(),
        "the old certificate is gone"
    );
    // The connection made before the reload carries on.
    round_trip(&mut old, "before.reload").await;
    round_trip(&mut new, "after.reload").await;
    old.close().await.unwrap();
    new.close().await.unwrap();

    // A broken certificate file is refused and the current one stays.
    std::fs::write(setup.path("server.pem"), "not a certificate").unwrap();
    broker.hangup("reload refused");
    let mut c = open_tls(tls_addr, connector(&second, None), true, None)
        .await
        .unwrap();
    round_trip(&mut c, "after.bad.reload").await;
    c.close().await.unwrap();
}

#[tokio::test]
async fn required_tls_refuses_plain_amqp_on_the_plain_port_but_takes_the_upgrade() {
    let ca = Ca::new("Ordo test CA");
    let setup = Setup::new(
        &ca.sign("localhost", &["localhost"]),
        None,
        "required = true\n",
    );
    let broker = setup.start();
    let e = timeout(DEADLINE, Connection::open("plain", broker.url().as_str()))
        .await
        .unwrap()
        .expect_err("plain refused");
    assert!(!format!("{e:?}").is_empty());
    let mut c = open_tls(broker.addr, connector(&ca, None), false, None)
        .await
        .unwrap();
    round_trip(&mut c, "upgraded").await;
    c.close().await.unwrap();
    assert!(broker.log().contains("TLS is required"));
}
