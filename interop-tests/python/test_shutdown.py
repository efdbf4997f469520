"""SIGTERM: connections are closed with amqp:connection:forced and the broker
exits 0 promptly (SPEC §8)."""

import signal
import socket
import time

import pytest
from proton import Message
from proton.utils import ConnectionClosed

from helpers import TIMEOUT, blocking

# A connection with nothing in flight has nothing to wait for: the broker sends
# its Close and waits at most a short grace for the peer's; 3 s is generous.
PROMPT = 3.0


def sigterm_and_wait(broker):
    start = time.monotonic()
    broker.proc.send_signal(signal.SIGTERM)
    rc = broker.proc.wait(timeout=30)
    return rc, time.monotonic() - start


def test_sigterm_closes_connections_with_forced(broker, queue):
    with blocking(broker.url) as conn:
        conn.create_sender(queue).send(Message(body="x"))
        rcv = conn.create_receiver(f"{queue}-empty")
        broker.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as exc:
            rcv.receive(timeout=TIMEOUT)
        assert exc.value.condition == "amqp:connection:forced", str(exc.value)
        conn.close()  # answer the broker's Close so it need not wait for us
        assert broker.proc.wait(timeout=PROMPT) == 0


@pytest.mark.parametrize("sent", [b"", b"AMQP\x03\x01\x00\x00"], ids=["nothing", "sasl-header"])
def test_sigterm_with_a_connection_still_in_its_handshake_exits_promptly(sent, broker):
    """A client that connected but has not finished its handshake (a port
    scanner, a health check, a stuck client) must not hold up shutdown."""
    host, port = broker.address.split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
        if sent:
            s.sendall(sent)
            assert s.recv(8) == sent  # the broker answered the header
        else:
            # Connections are accepted in order: once a later one is served,
            # this one has been accepted too.
            with blocking(broker.url) as later:
                later.create_sender("probe")
        rc, took = sigterm_and_wait(broker)
    assert rc == 0
    assert took < PROMPT, f"the broker took {took:.2f}s to exit after SIGTERM"
