"""SASL with anonymous access off and one user: only the right password gets in."""

import pytest
from proton import ConnectionException, Message

from helpers import TIMEOUT, Handler, blocking, run
from ordo_broker import hash_password

USER, PASSWORD = "alice", "s3cret pass\u2713"


@pytest.fixture(scope="module")
def auth_config():
    return f"""\
[listener]
address = "127.0.0.1"
port = 0

[sasl]
allow-anonymous = false

[[users]]
name = "{USER}"
password = "{hash_password(PASSWORD)}"

[logging]
level = "info"
"""


@pytest.fixture
def auth_broker(make_broker, auth_config):
    return make_broker(auth_config)


def test_right_password_works_blocking(auth_broker, queue):
    with blocking(auth_broker.url, user=USER, password=PASSWORD,
                  allowed_mechs="PLAIN") as conn:
        conn.create_sender(queue).send(Message(body="authenticated"))
        rcv = conn.create_receiver(queue)
        assert rcv.receive(timeout=TIMEOUT).body == "authenticated"
        rcv.accept()


REFUSED = {
    "wrong-password": dict(user=USER, password="wrong", allowed_mechs="PLAIN"),
    "unknown-user": dict(user="mallory", password=PASSWORD, allowed_mechs="PLAIN"),
    "empty-password": dict(user=USER, password="", allowed_mechs="PLAIN"),
    "sasl-anonymous": dict(allowed_mechs="ANONYMOUS"),
    "no-sasl-at-all": dict(sasl_enabled=False),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_blocking(case, auth_broker, queue):
    with pytest.raises(ConnectionException) as exc:
        with blocking(auth_broker.url, **REFUSED[case]) as conn:
            conn.create_sender(queue).send(Message(body="must not get in"))
    if case != "no-sasl-at-all":
        # A failed SASL exchange is reported as an authentication failure.
        assert "amqp:unauthorized-access" in str(exc.value), str(exc.value)
    # The broker is still fine for the right user, and nothing got through.
    with blocking(auth_broker.url, user=USER, password=PASSWORD) as conn:
        rcv = conn.create_receiver(queue, credit=0)
        rcv.link.drain(1)
        conn.wait(lambda: not rcv.link.draining(), timeout=TIMEOUT)
        assert rcv.fetcher.has_message == 0


class Connect(Handler):
    """Connects, opens a sender, sends one message and stops once accepted."""

    def __init__(self, url, queue, **connect_args):
        super().__init__(url)
        self.queue, self.connect_args = queue, connect_args
        self.accepted = False

    def start(self, event):
        conn = self.connect(**self.connect_args)
        event.container.create_sender(conn, self.queue)

    def on_sendable(self, event):
        if not self.accepted and event.sender.credit:
            event.sender.send(Message(body="hi"))

    def on_accepted(self, event):
        self.accepted = True
        self.done()


def test_right_password_works_container(auth_broker, queue):
    h = run(Connect(auth_broker.url, queue, user=USER, password=PASSWORD,
                    allowed_mechs="PLAIN"))
    assert h.accepted


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_container(case, auth_broker, queue):
    h = run(Connect(auth_broker.url, queue, **REFUSED[case]), expect_errors=True)
    assert not h.accepted
    assert h.errors, "no error reported"
    if case != "no-sasl-at-all":
        assert ("transport", "amqp:unauthorized-access") in [e[:2] for e in h.errors], h.errors
