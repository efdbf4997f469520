"""TLS (docs/CONFIG.md `[tls]`): the amqps listener, the AMQP TLS upgrade on
the plain port, client certificates with SASL EXTERNAL, and certificates
reloaded on SIGHUP.

The certificates come from interop-tests/pki.sh (one set per run). Every
broker here runs in a directory holding copies of them and names them by
relative path (`cert = "server.pem"`), so the broker's working directory is
where they are looked up, and a reload test rewrites them in place.

Proton 0.37 starts amqps with a TLS ClientHello and never sends the AMQP TLS
header (AMQP\\x02\\x01\\x00\\x00), so the upgrade is tested with raw sockets and
Python's ssl module, and with Proton through `UpgradeRelay`, a local plain
listener that does the upgrade for it. Proton's peer-name check does not read
IP addresses in subjectAltName: its connections verify the name `localhost`
(`sni`), which the server certificates carry too.
"""

import contextlib
import select
import shutil
import socket
import ssl
import struct
import threading
import warnings

import pytest
from proton import Array, ConnectionException, Data, Described, Message, SSLDomain, symbol, ulong
from proton.utils import LinkDetached

from helpers import TIMEOUT, Handler, blocking, drain_all, fetch_all, run
from ordo_broker import Broker, hash_password, make_pki
from test_shutdown import PROMPT, sigterm_and_wait

TLS_HEADER = b"AMQP\x02\x01\x00\x00"
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
AMQP_HEADER = b"AMQP\x00\x01\x00\x00"

# SASL frames (AMQP 5.3.3).
SASL_MECHANISMS, SASL_INIT, SASL_OUTCOME = 0x40, 0x41, 0x44
SASL_OK, SASL_AUTH = 0, 1

# The name in the certificates' subjectAltName that Proton can check.
SERVER_NAME = "localhost"


# ---------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The directory pki.sh filled (ca.pem, server.pem, alice.pem, ...)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_broker(request, tmp_path, pki):
    """tls_broker(config, files={}) starts a broker whose directory (its
    working directory) holds a copy of every PKI file, and of `files` ({name:
    source}); stopped like conftest's make_broker (SIGTERM, exit status 0),
    its log attached on failure."""
    brokers = []
    pki_files = {p.name: p for p in pki.iterdir() if p.suffix in (".pem", ".key")}

    def make(config, files=None):
        b = Broker(tmp_path / f"tls-broker{len(brokers)}", config,
                   files={**pki_files, **(files or {})})
        brokers.append(b)
        # The list conftest's report hook reads (make_broker's, if used too).
        if not hasattr(request.node, "ordo_brokers"):
            request.node.ordo_brokers = []
        request.node.ordo_brokers.append(b)
        try:
            return b.start()
        except RuntimeError:
            brokers.remove(b)  # exited already: nothing to stop
            raise

    yield make
    problems = [p for p in (b.stop() for b in brokers) if p]
    if problems:
        pytest.fail("; ".join(problems) + "\n" + "\n".join(b.log() for b in brokers))


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config(tls=None, allow_anonymous=True, extra=""):
    """A broker config with TLS on (server.pem / server.key from the CA, a
    free amqps port) plus the `tls` overrides; `extra` is appended
    ([[users]], [[access]])."""
    settings = {"cert": "server.pem", "key": "server.key", "port": 0, **(tls or {})}
    lines = "\n".join(f"{k} = {toml_value(v)}" for k, v in settings.items())
    return f"""\
[listener]
address = "127.0.0.1"
port = 0

[tls]
{lines}

[sasl]
allow-anonymous = {toml_value(allow_anonymous)}

[logging]
level = "info"
format = "text"

{extra}
"""


def access_for(*names):
    """One [[access]] rule: `names` may do everything on every address."""
    who = toml_value(list(names))
    return f"""
[[access]]
pattern = "#"
send = {who}
receive = {who}
create = {who}
"""


# ---------------------------------------------------------------------------
# Clients


def domain(pki, ca="ca.pem", cert=None):
    """A Proton client SSLDomain trusting `ca` (and verifying the server's
    name), presenting the client certificate `cert` (e.g. "alice") if given."""
    d = SSLDomain(SSLDomain.MODE_CLIENT)
    d.set_trusted_ca_db(str(pki / ca))
    d.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME, str(pki / ca))
    if cert:
        d.set_credentials(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"), None)
    return d


def amqps(url, pki, ca="ca.pem", cert=None, **kwargs):
    """A BlockingConnection over TLS (closed at the end)."""
    return blocking(url, ssl_domain=domain(pki, ca, cert), sni=SERVER_NAME, **kwargs)


def context(pki, ca="ca.pem", cert=None, minimum=None, maximum=None):
    """A Python ssl client context trusting `ca`, checking the server name."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki / ca))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    return ctx


def round_trip(conn, queue, body):
    """Sends `body` to `queue` on a BlockingConnection and receives it back
    (both links detached afterwards: BlockingConnection names its links
    after the address, and a name cannot be attached twice)."""
    snd = conn.create_sender(queue)
    snd.send(Message(body=body))
    snd.close()
    rcv = conn.create_receiver(queue)
    msg = rcv.receive(timeout=TIMEOUT)
    rcv.accept()
    assert msg.body == body
    rcv.close()


def queued(url, queue, **connect):
    """Bodies of every message `queue` has, taken on a connection of its own."""
    with blocking(url, **connect) as conn:
        rcv = conn.create_receiver(queue, credit=0)
        return [m.body for m in drain_all(conn, rcv)]


class RoundTrip(Handler):
    """Container API: connects with `connect_args`, sends one message to
    `queue`, receives it back (auto-accepted) and stops."""

    def __init__(self, url, queue, body, **connect_args):
        super().__init__(url)
        self.queue, self.body, self.connect_args = queue, body, connect_args
        self.sent = False
        self.received = []

    def start(self, event):
        self.conn = self.connect(**self.connect_args)
        event.container.create_sender(self.conn, self.queue)

    def on_sendable(self, event):
        if not self.sent and event.sender.credit:
            event.sender.send(Message(body=self.body))
            self.sent = True

    def on_accepted(self, event):
        event.container.create_receiver(self.conn, self.queue)

    def on_message(self, event):
        self.received.append(event.message.body)
        self.done()


def exchange(api, url, pki, queue, body, ca="ca.pem", cert=None, **kwargs):
    """A round trip over amqps with either API."""
    if api == "blocking":
        with amqps(url, pki, ca, cert, **kwargs) as conn:
            round_trip(conn, queue, body)
        return
    h = run(RoundTrip(url, queue, body, ssl_domain=domain(pki, ca, cert), sni=SERVER_NAME,
                      **kwargs))
    assert h.received == [body]


def refused(api, url, pki, queue, ca="ca.pem", cert=None, **kwargs):
    """Tries a round trip that must fail at the transport; returns the error
    text Proton reported."""
    if api == "blocking":
        with pytest.raises(ConnectionException) as exc:
            with amqps(url, pki, ca, cert, **kwargs) as conn:
                round_trip(conn, queue, "must not arrive")
        return str(exc.value)
    h = run(RoundTrip(url, queue, "must not arrive", ssl_domain=domain(pki, ca, cert),
                      sni=SERVER_NAME, **kwargs), expect_errors=True)
    assert not h.received
    transport = [e for e in h.errors if e[0] == "transport"]
    assert transport, f"no transport error: {h.errors}"
    return " ".join(str(x) for x in transport[0])


# ---------------------------------------------------------------------------
# Raw sockets: the upgrade and SASL by hand


def recv_exactly(sock, n):
    """`n` bytes, or fewer if the peer closed first."""
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def plain_socket(address):
    return socket.create_connection(address, timeout=TIMEOUT)


def upgraded(address, ctx):
    """A TLS socket on the plain port: the TLS header sent, the broker's echo
    checked, then the handshake."""
    sock = plain_socket(address)
    try:
        sock.sendall(TLS_HEADER)
        echo = recv_exactly(sock, 8)
        assert echo == TLS_HEADER, f"the broker answered the TLS header with {echo!r}"
        return ctx.wrap_socket(sock, server_hostname=SERVER_NAME)
    except BaseException:
        sock.close()
        raise


def direct(address, ctx):
    """A TLS socket on the amqps port."""
    sock = plain_socket(address)
    try:
        return ctx.wrap_socket(sock, server_hostname=SERVER_NAME)
    except BaseException:
        sock.close()
        raise


def read_frame(sock):
    """The next frame's performative as a proton Described."""
    head = recv_exactly(sock, 8)
    assert len(head) == 8, f"connection closed while reading a frame header: {head!r}"
    size, doff, _type, _channel = struct.unpack(">IBBH", head)
    body = recv_exactly(sock, size - 8)
    d = Data()
    d.decode(body[doff * 4 - 8:])
    d.rewind()
    d.next()
    return d.get_object()


def write_sasl(sock, descriptor, fields):
    d = Data()
    d.put_object(Described(ulong(descriptor), fields))
    body = d.encode()
    sock.sendall(struct.pack(">IBBH", 8 + len(body), 2, 1, 0) + body)


def sasl_mechanisms(sock):
    """Sends the SASL header on `sock`, checks the echo, and returns the
    mechanisms the broker offers, in its order."""
    sock.sendall(SASL_HEADER)
    echo = recv_exactly(sock, 8)
    assert echo == SASL_HEADER, f"the SASL header was answered with {echo!r}"
    frame = read_frame(sock)
    assert int(frame.descriptor) == SASL_MECHANISMS, frame
    mechs = frame.value[0]
    if isinstance(mechs, Array):
        mechs = mechs.elements
    elif not isinstance(mechs, list):
        mechs = [mechs]
    return [str(m) for m in mechs]


def sasl_init(sock, mechanism, response=None):
    """Sends sasl-init and returns the sasl-outcome code."""
    fields = [symbol(mechanism)] + ([] if response is None else [response])
    write_sasl(sock, SASL_INIT, fields)
    frame = read_frame(sock)
    assert int(frame.descriptor) == SASL_OUTCOME, frame
    return int(frame.value[0])


def closed_after(sock):
    """True if the peer closes `sock` (EOF or reset) with nothing more sent."""
    try:
        rest = sock.recv(1)
    except (ConnectionResetError, ssl.SSLError):
        return True
    return rest == b""


class UpgradeRelay:
    """A local plain listener (`url`) for Proton: each connection made to it
    is carried to `target`, the broker's plain port, after the AMQP TLS
    upgrade (TLS header sent, the broker's echo checked, TLS handshake with
    `ctx`), so Proton speaks its SASL and AMQP inside the upgraded TLS
    session. `versions` has the TLS version of each relayed connection,
    `errors` what went wrong (the client's socket is then closed).

    One thread per connection drives an ssl.SSLObject over memory BIOs, so
    the TLS state is only ever touched by one thread."""

    def __init__(self, target, ctx):
        self.target, self.ctx = target, ctx
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = "amqp://127.0.0.1:%d" % self.listener.getsockname()[1]
        self.versions, self.errors = [], []
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.stopping = True
        self.listener.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client):
        # The error is recorded before the client's socket closes, so a test
        # that saw its connection fail finds it.
        with client:
            try:
                self._carry(client)
            except (OSError, ssl.SSLError) as e:
                self.errors.append(repr(e))

    def _carry(self, client):
        with socket.create_connection(self.target, timeout=TIMEOUT) as raw:
            raw.sendall(TLS_HEADER)
            echo = recv_exactly(raw, 8)
            if echo != TLS_HEADER:
                self.errors.append(f"TLS header answered with {echo!r}")
                return
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = self.ctx.wrap_bio(incoming, outgoing, server_hostname=SERVER_NAME)
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    data = raw.recv(65536)
                    if not data:
                        self.errors.append("broker closed during the TLS handshake")
                        return
                    incoming.write(data)
            raw.sendall(outgoing.read())
            self.versions.append(tls.version())
            while not self.stopping:
                readable, _, _ = select.select([client, raw], [], [], 0.1)
                if raw in readable:
                    data = raw.recv(65536)
                    if not data:
                        return
                    incoming.write(data)
                    plain = b""
                    while True:
                        try:
                            chunk = tls.read(65536)
                        except ssl.SSLWantReadError:
                            break
                        except ssl.SSLZeroReturnError:
                            client.sendall(plain)
                            return
                        if not chunk:
                            break
                        plain += chunk
                    raw.sendall(outgoing.read())
                    client.sendall(plain)
                if client in readable:
                    data = client.recv(65536)
                    if not data:
                        return
                    tls.write(data)
                    raw.sendall(outgoing.read())


@contextlib.contextmanager
def relay(broker, ctx):
    r = UpgradeRelay(broker.host_port, ctx)
    try:
        yield r
    finally:
        r.close()


# ---------------------------------------------------------------------------
# The amqps listener


def test_port_file_has_the_amqps_address_second(make_broker, tls_broker):
    plain = make_broker()
    assert plain.tls_address is None
    assert len(plain.port_file.read_text().splitlines()) == 1
    b = tls_broker(config())
    lines = b.port_file.read_text().splitlines()
    assert lines == [b.address, b.tls_address], lines
    # [tls] address "" means the [listener] address; port 0 a free one.
    assert b.tls_host_port[0] == "127.0.0.1"
    assert b.tls_host_port[1] not in (0, b.host_port[1])


@pytest.mark.parametrize("api", ["blocking", "container"])
def test_amqps_with_the_right_ca(api, tls_broker, pki, queue):
    b = tls_broker(config())
    exchange(api, b.amqps_url, pki, queue, f"over TLS ({api})")
    # The plain port still works (required = false).
    assert fetch_all(b.url, queue) == []


@pytest.mark.parametrize("api", ["blocking", "container"])
def test_amqps_trusting_another_ca_fails(api, tls_broker, pki, queue):
    b = tls_broker(config())
    error = refused(api, b.amqps_url, pki, queue, ca="other-ca.pem")
    assert "certificate verify failed" in error, error
    assert fetch_all(b.url, queue) == []
    # The broker is fine for a client that trusts its CA.
    exchange(api, b.amqps_url, pki, queue, "afterwards")


@pytest.mark.parametrize("cert,key", [
    ("server.pem", "server.key"),            # EC key, PKCS#8
    ("server.pem", "server-sec1.key"),       # the same key, SEC1
    ("server-rsa.pem", "server-rsa.key"),    # RSA key, PKCS#1
    ("chain.pem", "chain.key"),              # leaf + intermediate; clients trust the root
], ids=["pkcs8-ec", "sec1-ec", "pkcs1-rsa", "intermediate-chain"])
def test_server_key_formats_and_chain(cert, key, tls_broker, pki, queue):
    b = tls_broker(config({"cert": cert, "key": key}))
    with amqps(b.amqps_url, pki) as conn:
        round_trip(conn, queue, f"{cert} {key}")
    with direct(b.tls_host_port, context(pki)) as sock:
        assert sock.getpeercert()["subject"], "no verified server certificate"


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_tls_1_2_and_1_3(version, tls_broker, pki):
    b = tls_broker(config())
    v = getattr(ssl.TLSVersion, version.replace(".", "_"))
    ctx = context(pki, minimum=v, maximum=v)
    for connect, address in ((direct, b.tls_host_port), (upgraded, b.host_port)):
        with connect(address, ctx) as sock:
            assert sock.version() == version
            assert "ANONYMOUS" in sasl_mechanisms(sock)


def test_tls_1_1_is_refused(tls_broker, pki):
    b = tls_broker(config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = context(pki, minimum=ssl.TLSVersion.TLSv1, maximum=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    for address in (b.tls_host_port, b.host_port):
        sock = plain_socket(address)
        try:
            if address == b.host_port:
                sock.sendall(TLS_HEADER)
                assert recv_exactly(sock, 8) == TLS_HEADER
            with pytest.raises((ssl.SSLError, ConnectionResetError)) as exc:
                ctx.wrap_socket(sock, server_hostname=SERVER_NAME)
            if isinstance(exc.value, ssl.SSLError):
                if exc.value.reason == "NO_PROTOCOLS_AVAILABLE":
                    pytest.skip("this OpenSSL cannot offer TLS 1.1, so the test proves nothing")
                # The broker's refusal (rustls: a handshake_failure alert).
                assert "ALERT" in (exc.value.reason or ""), repr(exc.value)
        finally:
            sock.close()
    # The broker is fine afterwards.
    with direct(b.tls_host_port, context(pki)) as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "key-of-another-cert",
                                  "required-without-client-ca"])
def test_unusable_tls_config_stops_the_start(case, tls_broker):
    tls = {
        "missing-cert": {"cert": "nonexistent.pem"},
        "missing-key": {"key": "nonexistent.key"},
        "key-of-another-cert": {"key": "other-server.key"},
        "required-without-client-ca": {"client-auth": "required"},
    }[case]
    with pytest.raises(RuntimeError) as exc:
        tls_broker(config(tls))
    text = str(exc.value)
    assert "broker exited" in text, text
    named = {"missing-cert": "nonexistent.pem", "missing-key": "nonexistent.key",
             "key-of-another-cert": "key", "required-without-client-ca": "client-ca"}[case]
    assert named in text, f"the refusal does not name {named!r}:\n{text}"


# ---------------------------------------------------------------------------
# The TLS upgrade on the plain port


def test_upgrade_header_is_echoed_then_tls_then_sasl(tls_broker, pki):
    b = tls_broker(config())
    sock = plain_socket(b.host_port)
    sock.sendall(TLS_HEADER)
    assert recv_exactly(sock, 8) == TLS_HEADER
    with context(pki).wrap_socket(sock, server_hostname=SERVER_NAME) as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert "ANONYMOUS" in sasl_mechanisms(tls)
        assert sasl_init(tls, "ANONYMOUS") == SASL_OK
        tls.sendall(AMQP_HEADER)
        assert recv_exactly(tls, 8) == AMQP_HEADER


def test_amqps_port_takes_the_tls_header_before_the_client_hello(tls_broker, pki):
    # Some clients (fe2o3-amqp) send the TLS header on the amqps port too.
    b = tls_broker(config())
    with upgraded(b.tls_host_port, context(pki)) as sock:
        assert "ANONYMOUS" in sasl_mechanisms(sock)
    # Another header there is answered with the TLS header and closed.
    with plain_socket(b.tls_host_port) as sock:
        sock.sendall(AMQP_HEADER)
        assert recv_exactly(sock, 8) == TLS_HEADER
        assert closed_after(sock)


@pytest.mark.parametrize("api", ["blocking", "container"])
def test_upgrade_carries_proton(api, tls_broker, pki, queue):
    b = tls_broker(config())
    with relay(b, context(pki)) as r:
        if api == "blocking":
            with blocking(r.url) as conn:
                round_trip(conn, queue, "upgraded")
        else:
            h = run(RoundTrip(r.url, queue, "upgraded"))
            assert h.received == ["upgraded"]
    assert r.errors == [] and len(r.versions) == 1, (r.errors, r.versions)


def test_upgrade_trusting_another_ca_fails(tls_broker, pki, queue):
    b = tls_broker(config())
    with pytest.raises(ssl.SSLCertVerificationError):
        upgraded(b.host_port, context(pki, ca="other-ca.pem"))
    with relay(b, context(pki, ca="other-ca.pem")) as r:
        with pytest.raises(ConnectionException):
            with blocking(r.url) as conn:
                conn.create_sender(queue).send(Message(body="must not arrive"))
    assert any("CERTIFICATE_VERIFY_FAILED" in e for e in r.errors), r.errors
    assert fetch_all(b.url, queue) == []


def test_upgrade_off_refuses_the_tls_header(tls_broker, pki, queue):
    b = tls_broker(config({"upgrade": False}))
    with plain_socket(b.host_port) as sock:
        sock.sendall(TLS_HEADER)
        answer = recv_exactly(sock, 8)
        # AMQP 2.2: answered with a header the broker does speak, then closed.
        assert answer[:4] == b"AMQP" and answer != TLS_HEADER, answer
        assert closed_after(sock)
    # amqps and plain AMQP still work.
    with amqps(b.amqps_url, pki) as conn:
        round_trip(conn, queue, "amqps")
    with blocking(b.url) as conn:
        round_trip(conn, queue, "plain")


@pytest.mark.parametrize("header", [AMQP_HEADER, SASL_HEADER], ids=["amqp", "sasl"])
def test_required_refuses_plain_headers(header, tls_broker, pki):
    b = tls_broker(config({"required": True}))
    with plain_socket(b.host_port) as sock:
        sock.sendall(header)
        # Answered with the TLS header (the one it would accept), then closed.
        assert recv_exactly(sock, 8) == TLS_HEADER
        assert closed_after(sock)
    assert b.proc.poll() is None


@pytest.mark.parametrize("api", ["blocking", "container"])
def test_required_refuses_plain_proton_but_takes_the_upgrade(api, tls_broker, pki, queue):
    b = tls_broker(config({"required": True}))
    if api == "blocking":
        with pytest.raises(ConnectionException) as exc:
            with blocking(b.url) as conn:
                conn.create_sender(queue).send(Message(body="must not arrive"))
        error = str(exc.value)
    else:
        h = run(RoundTrip(b.url, queue, "must not arrive"), expect_errors=True)
        assert not h.received
        error = str(h.errors)
        assert any(e[0] == "transport" for e in h.errors), h.errors
    # Proton sees the TLS header where it expected the SASL one.
    assert "header" in error and "TLS" in error, error
    with relay(b, context(pki)) as r:
        if api == "blocking":
            with blocking(r.url) as conn:
                round_trip(conn, queue, "upgraded")
        else:
            h = run(RoundTrip(r.url, queue, "upgraded"))
            assert h.received == ["upgraded"]
    exchange(api, b.amqps_url, pki, queue, "amqps")
    assert queued(b.amqps_url, queue, ssl_domain=domain(pki), sni=SERVER_NAME) == []
    assert "panic" not in b.log()


SHUTDOWN_CASES = ["amqps-nothing-sent", "amqps-client-hello", "amqps-before-sasl",
                  "upgrade-header", "upgrade-client-hello"]


@pytest.mark.parametrize("case", SHUTDOWN_CASES)
def test_sigterm_with_a_tls_handshake_in_progress_exits_promptly(case, tls_broker, pki):
    """As test_shutdown.py's test for plain connections: a client stuck in
    its TLS handshake (or the upgrade) must not hold up shutdown."""
    b = tls_broker(config())
    upgrade = case.startswith("upgrade")
    sock = plain_socket(b.host_port if upgrade else b.tls_host_port)
    try:
        if upgrade:
            sock.sendall(TLS_HEADER)
            assert recv_exactly(sock, 8) == TLS_HEADER
        if case.endswith("client-hello"):
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context(pki).wrap_bio(incoming, outgoing, server_hostname=SERVER_NAME)
            with pytest.raises(ssl.SSLWantReadError):
                tls.do_handshake()
            sock.sendall(outgoing.read())
            assert sock.recv(5)[:1] == b"\x16", "no ServerHello"  # a handshake record
        elif case == "amqps-before-sasl":
            sock = context(pki).wrap_socket(sock, server_hostname=SERVER_NAME)
        else:
            # Connections are accepted in order: once a later one is served,
            # this one has been accepted too.
            with amqps(b.amqps_url, pki) as later:
                later.create_sender("probe").close()
        rc, took = sigterm_and_wait(b)
    finally:
        sock.close()
    assert rc == 0
    assert took < PROMPT, f"the broker took {took:.2f}s to exit after SIGTERM"


# ---------------------------------------------------------------------------
# Client certificates


REQUIRED = {"client-ca": "ca.pem", "client-auth": "required"}


@pytest.mark.parametrize("api", ["blocking", "container"])
def test_required_client_cert_alice(api, tls_broker, pki, queue):
    # No [[users]]: EXTERNAL needs none. Only alice may use any address, so
    # the round trip proves the broker took her name from the certificate.
    b = tls_broker(config(REQUIRED, extra=access_for("alice")))
    exchange(api, b.amqps_url, pki, queue, "from alice", cert="alice", allowed_mechs="EXTERNAL")
    # Anonymous clients (the plain port) are denied by that rule.
    with blocking(b.url) as conn:
        with pytest.raises(LinkDetached) as exc:
            conn.create_sender(queue)
        assert exc.value.condition == "amqp:unauthorized-access", str(exc.value)


def test_required_client_cert_is_who_the_cn_says(tls_broker, pki, queue):
    b = tls_broker(config(REQUIRED, extra=access_for("alice")))
    with amqps(b.amqps_url, pki, cert="bob", allowed_mechs="EXTERNAL") as conn:
        # bob's certificate is valid: he gets in, as bob, and alice's rule
        # does not let him send.
        with pytest.raises(LinkDetached) as exc:
            conn.create_sender(queue)
        assert exc.value.condition == "amqp:unauthorized-access", str(exc.value)


def test_required_offers_external_first(tls_broker, pki):
    b = tls_broker(config(REQUIRED, extra=access_for("alice")))
    with direct(b.tls_host_port, context(pki, cert="alice")) as sock:
        mechs = sasl_mechanisms(sock)
        assert mechs[0] == "EXTERNAL", mechs
        assert sasl_init(sock, "EXTERNAL", b"") == SASL_OK


@pytest.mark.parametrize("api", ["blocking", "container"])
@pytest.mark.parametrize("cert", [None, "other-alice"], ids=["no-cert", "cert-of-another-ca"])
def test_required_without_a_verified_cert_fails(cert, api, tls_broker, pki, queue):
    b = tls_broker(config(REQUIRED, extra=access_for("alice")))
    error = refused(api, b.amqps_url, pki, queue, cert=cert)
    # The broker's TLS alert: certificate required (TLS 1.3) / unknown CA.
    alert = {None: "alert certificate required", "other-alice": "alert unknown ca"}[cert]
    assert "SSL Failure" in error and alert in error, error
    # Raw: the handshake (or, in TLS 1.3, the first read after it) fails.
    with pytest.raises((ssl.SSLError, ConnectionResetError, AssertionError)):
        with direct(b.tls_host_port, context(pki, cert=cert)) as sock:
            sasl_mechanisms(sock)
    assert queued(b.amqps_url, queue, ssl_domain=domain(pki, cert="alice"), sni=SERVER_NAME,
                  allowed_mechs="EXTERNAL") == []


def test_required_applies_to_the_upgrade_too(tls_broker, pki):
    b = tls_broker(config(REQUIRED, extra=access_for("alice")))
    with upgraded(b.host_port, context(pki, cert="alice")) as sock:
        mechs = sasl_mechanisms(sock)
        assert mechs[0] == "EXTERNAL", mechs
        assert sasl_init(sock, "EXTERNAL", b"") == SASL_OK
    with pytest.raises((ssl.SSLError, ConnectionResetError, AssertionError)):
        with upgraded(b.host_port, context(pki)) as sock:
            sasl_mechanisms(sock)


PASSWORD = "carol's pass"


@pytest.fixture(scope="module")
def password_hash():
    return hash_password(PASSWORD)


def optional_config(password_hash):
    """client-auth optional, anonymous off; alice (group traders) and carol
    are [[users]], the rule lets @traders and carol do everything."""
    return config({"client-ca": "ca.pem", "client-auth": "optional"}, allow_anonymous=False,
                  extra=f"""
[[users]]
name = "alice"
password = "{password_hash}"
groups = ["traders"]

[[users]]
name = "carol"
password = "{password_hash}"
""" + access_for("@traders", "carol"))


def test_optional_external_with_a_cert(tls_broker, pki, queue, password_hash):
    b = tls_broker(optional_config(password_hash))
    # alice's rights come from her [[users]] groups (@traders).
    for api in ("blocking", "container"):
        exchange(api, b.amqps_url, pki, queue, f"alice by certificate ({api})",
                 cert="alice", allowed_mechs="EXTERNAL")
    with direct(b.tls_host_port, context(pki, cert="alice")) as sock:
        mechs = sasl_mechanisms(sock)
        assert mechs[0] == "EXTERNAL" and "ANONYMOUS" not in mechs, mechs


def test_optional_without_a_cert(tls_broker, pki, queue, password_hash):
    b = tls_broker(optional_config(password_hash))
    with direct(b.tls_host_port, context(pki)) as sock:
        mechs = sasl_mechanisms(sock)
        assert "EXTERNAL" not in mechs and "ANONYMOUS" not in mechs, mechs
        assert sasl_init(sock, "EXTERNAL", b"") == SASL_AUTH
    with direct(b.tls_host_port, context(pki)) as sock:
        sasl_mechanisms(sock)
        assert sasl_init(sock, "ANONYMOUS") == SASL_AUTH
    # A password still works over TLS, EXTERNAL and ANONYMOUS do not.
    with amqps(b.amqps_url, pki, user="carol", password=PASSWORD, allowed_mechs="PLAIN") as conn:
        round_trip(conn, queue, "carol by password")
    for mech in ("EXTERNAL", "ANONYMOUS"):
        with pytest.raises(ConnectionException):
            with amqps(b.amqps_url, pki, allowed_mechs=mech) as conn:
                conn.create_sender(queue).send(Message(body="must not arrive"))
    # Plain SASL on the plain port never offers EXTERNAL.
    with plain_socket(b.host_port) as sock:
        assert "EXTERNAL" not in sasl_mechanisms(sock)
    assert queued(b.amqps_url, queue, ssl_domain=domain(pki, cert="alice"), sni=SERVER_NAME,
                  allowed_mechs="EXTERNAL") == []


def test_optional_external_needs_no_users_entry(tls_broker, pki, queue, password_hash):
    b = tls_broker(optional_config(password_hash))
    # bob is no [[users]] entry and not in @traders: he logs in, as bob, and
    # the rule denies him.
    with amqps(b.amqps_url, pki, cert="bob", allowed_mechs="EXTERNAL") as conn:
        with pytest.raises(LinkDetached) as exc:
            conn.create_receiver(queue)
        assert exc.value.condition == "amqp:unauthorized-access", str(exc.value)


def test_optional_external_for_another_name_is_refused(tls_broker, pki, password_hash):
    b = tls_broker(optional_config(password_hash))
    with direct(b.tls_host_port, context(pki, cert="bob")) as sock:
        assert sasl_mechanisms(sock)[0] == "EXTERNAL"
        # bob's certificate asking to be alice (authorization identity).
        assert sasl_init(sock, "EXTERNAL", b"alice") == SASL_AUTH
    with direct(b.tls_host_port, context(pki, cert="bob")) as sock:
        sasl_mechanisms(sock)
        assert sasl_init(sock, "EXTERNAL", b"bob") == SASL_OK


def test_optional_cert_of_another_ca_is_refused(tls_broker, pki, queue, password_hash):
    b = tls_broker(optional_config(password_hash))
    # optional: a certificate is not needed, but one presented is verified,
    # and one that does not verify fails the handshake (it must not count as
    # "no certificate", nor as alice).
    with pytest.raises((ssl.SSLError, ConnectionResetError, AssertionError)):
        with direct(b.tls_host_port, context(pki, cert="other-alice")) as sock:
            sasl_mechanisms(sock)
    error = refused("blocking", b.amqps_url, pki, queue, cert="other-alice",
                    allowed_mechs="EXTERNAL")
    assert "alert unknown ca" in error, error


def test_optional_external_through_the_upgrade(tls_broker, pki, password_hash):
    b = tls_broker(optional_config(password_hash))
    with upgraded(b.host_port, context(pki, cert="alice")) as sock:
        assert sasl_mechanisms(sock)[0] == "EXTERNAL"
        assert sasl_init(sock, "EXTERNAL", b"") == SASL_OK


# ---------------------------------------------------------------------------
# Reload on SIGHUP


def test_reload_swaps_the_server_certificate(tls_broker, pki, queue):
    b = tls_broker(config())
    with amqps(b.amqps_url, pki) as before:
        snd = before.create_sender(queue)
        snd.send(Message(body="sent before the reload"))
        shutil.copyfile(pki / "other-server.pem", b.dir / "server.pem")
        shutil.copyfile(pki / "other-server.key", b.dir / "server.key")
        line = b.reload()
        assert "configuration reloaded" in line
        # New connections get the other CA's certificate, amqps and upgrade.
        with amqps(b.amqps_url, pki, ca="other-ca.pem") as conn:
            round_trip(conn, queue + "-new", "after the reload")
        error = refused("blocking", b.amqps_url, pki, queue + "-new")
        assert "certificate verify failed" in error, error
        with upgraded(b.host_port, context(pki, ca="other-ca.pem")) as sock:
            assert "ANONYMOUS" in sasl_mechanisms(sock)
        with pytest.raises(ssl.SSLCertVerificationError):
            upgraded(b.host_port, context(pki))
        # The connection made before stays, and works.
        snd.send(Message(body="still here"))
        snd.close()
        rcv = before.create_receiver(queue)
        assert [rcv.receive(timeout=TIMEOUT).body for _ in range(2)] == [
            "sent before the reload", "still here"]
        rcv.accept()


def test_reload_swaps_the_client_ca(tls_broker, pki, queue):
    b = tls_broker(config({"client-ca": "client-ca.pem", "client-auth": "required"},
                          extra=access_for("alice")),
                   files={"client-ca.pem": pki / "ca.pem"})
    with amqps(b.amqps_url, pki, cert="alice", allowed_mechs="EXTERNAL") as before:
        round_trip(before, queue, "before")
        shutil.copyfile(pki / "other-ca.pem", b.dir / "client-ca.pem")
        b.reload()
        # The other CA's alice gets in now, ours no longer.
        with amqps(b.amqps_url, pki, cert="other-alice", allowed_mechs="EXTERNAL") as conn:
            round_trip(conn, queue, "other alice")
        error = refused("blocking", b.amqps_url, pki, queue, cert="alice",
                        allowed_mechs="EXTERNAL")
        assert "alert unknown ca" in error, error
        # The connection made before stays.
        round_trip(before, queue, "still here")


@pytest.mark.parametrize("broken", ["garbage-cert", "mismatched-key"])
def test_reload_with_a_broken_certificate_changes_nothing(broken, tls_broker, pki, queue):
    b = tls_broker(config())
    if broken == "garbage-cert":
        (b.dir / "server.pem").write_text("not a certificate\n")
    else:
        shutil.copyfile(pki / "other-server.key", b.dir / "server.key")
    b.reload(refused=True)
    with amqps(b.amqps_url, pki) as conn:
        round_trip(conn, queue, "the old certificate is still served")
    with upgraded(b.host_port, context(pki)) as sock:
        assert "ANONYMOUS" in sasl_mechanisms(sock)
