"""Queues through the event-driven API (proton.reactor.Container and a
MessagingHandler)."""

import os

import pytest
from proton import Delivery, Link, Message
from proton.reactor import AtLeastOnce, AtMostOnce

from helpers import Handler, SendAll, SendThenReceive, Subprocess, after_flush, run, settle_modified

N = 1000


class SendReceiveDrain(SendThenReceive):
    """SendThenReceive, then a drain that must bring nothing more."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drained = False
        self.late = []

    def on_message(self, event):
        if self.draining_started:
            self.late.append(event.message)
            return
        self.received.append(event.message)
        if len(self.received) == len(self.to_send):
            self.draining_started = True
            event.receiver.drain(10)

    draining_started = False

    def on_link_flow(self, event):
        if self.draining_started and event.link.is_receiver and not event.link.draining():
            self.drained = True
            self.done()


@pytest.mark.parametrize("snd_mode", ["unsettled", "presettled"])
@pytest.mark.parametrize("rcv_mode", ["unsettled", "presettled"])
def test_send_receive_1000_in_order(snd_mode, rcv_mode, broker, queue):
    snd_opts = AtMostOnce() if snd_mode == "presettled" else AtLeastOnce()
    rcv_opts = AtMostOnce() if rcv_mode == "presettled" else AtLeastOnce()
    msgs = [Message(body=i, properties={"seq": i}) for i in range(N)]
    # prefetch 0: credit is given by hand, so that the drain is the only flow
    # once all N have arrived.
    h = SendReceiveDrain(broker.url, queue, msgs, sender_options=snd_opts,
                         receiver_options=rcv_opts, prefetch=0)

    orig_receive = h._receive

    def receive_with_credit():
        first = h.receiver is None
        orig_receive()
        if first:
            h.receiver.flow(N)
    h._receive = receive_with_credit

    run(h)
    if snd_mode == "unsettled":
        assert h.outcomes == [Delivery.ACCEPTED] * N
    assert [(m.body, m.properties["seq"]) for m in h.received] == [(i, i) for i in range(N)]
    assert all(m.delivery_count == 0 for m in h.received)
    if rcv_mode == "presettled":
        assert h.receiver.remote_snd_settle_mode == Link.SND_SETTLED
    assert h.drained and not h.late, f"drain brought {len(h.late)} more messages"


@pytest.mark.parametrize("size", [1 << 20, 10 << 20], ids=["1MiB", "10MiB"])
def test_large_message(size, broker, queue):
    body = os.urandom(size)
    msgs = [Message(body=body, inferred=True), Message(body="after")]
    h = run(SendThenReceive(broker.url, queue, msgs))
    assert h.outcomes == [Delivery.ACCEPTED] * 2
    assert len(h.received[0].body) == size and h.received[0].body == body
    assert h.received[1].body == "after"


class Returner(Handler):
    """Sends `bodies`, then receives one message at a time; `decide(n, msg)`
    says what to do with the n-th received: 'accept', 'release' or
    'modified'. Stops after `total` messages were received."""

    def __init__(self, url, queue, bodies, decide, total):
        super().__init__(url, prefetch=0, auto_accept=False)
        self.queue, self.bodies, self.decide, self.total = queue, bodies, decide, total
        self.sent = 0
        self.accepted = 0
        self.got = []

    def start(self, event):
        self.conn = self.connect()
        event.container.create_sender(self.conn, self.queue)

    def on_sendable(self, event):
        while event.sender.credit and self.sent < len(self.bodies):
            event.sender.send(Message(body=self.bodies[self.sent]))
            self.sent += 1

    def on_accepted(self, event):
        self.accepted += 1
        if self.accepted == len(self.bodies):
            self.receiver = event.container.create_receiver(self.conn, self.queue)
            self.receiver.flow(1)

    def on_message(self, event):
        m = event.message
        self.got.append((m.body, m.delivery_count, m.first_acquirer))
        what = self.decide(len(self.got) - 1, m)
        if what == "accept":
            self.accept(event.delivery)
        elif what == "release":
            self.release(event.delivery, delivered=False)
        elif what == "modified":
            settle_modified(event.delivery, failed=True)
        elif what == "modified-not-failed":
            self.release(event.delivery, delivered=True)
        if len(self.got) == self.total:
            self.done()
        else:
            # Credit only once the outcome is on the wire (see helpers.flush).
            after_flush(event.container, event.connection, lambda: self.receiver.flow(1))


def test_release_puts_message_back_first_in_line(broker, queue):
    h = run(Returner(broker.url, queue, ["a", "b", "c"],
                     lambda n, m: "release" if n == 0 else "accept", total=4))
    assert h.got == [("a", 0, True), ("a", 0, False), ("b", 0, True), ("c", 0, True)]


def test_modified_delivery_failed_increments_delivery_count(broker, queue):
    plan = ["modified", "modified", "modified-not-failed", "accept", "accept"]
    h = run(Returner(broker.url, queue, ["a", "b"], lambda n, m: plan[n], total=5))
    assert [(b, c) for b, c, _ in h.got] == [("a", 0), ("a", 1), ("a", 2), ("a", 2), ("b", 0)]


class AttachExpectingRefusal(Handler):
    def __init__(self, url, address, role):
        super().__init__(url)
        self.address, self.role = address, role

    def start(self, event):
        conn = self.connect()
        if self.role == "receiver":
            event.container.create_receiver(conn, self.address)
        else:
            event.container.create_sender(conn, self.address)


@pytest.mark.parametrize("role", ["receiver", "sender"])
def test_unknown_address_option_is_refused(role, broker, queue):
    h = run(AttachExpectingRefusal(broker.url, f"{queue}?bogus=1", role), expect_errors=True)
    assert h.errors, "the attach was not refused"
    what, cond, desc = h.errors[0]
    assert (what, cond) == ("link", "amqp:invalid-field"), h.errors
    assert "bogus" in (desc or ""), f"the refusal does not name the option: {desc!r}"


class ReceiveN(Handler):
    def __init__(self, url, queue, n):
        super().__init__(url, prefetch=0, auto_accept=True)
        self.queue, self.n = queue, n
        self.got = []

    def start(self, event):
        conn = self.connect()
        event.container.create_receiver(conn, self.queue).flow(self.n)

    def on_message(self, event):
        m = event.message
        self.got.append((m.body, m.delivery_count, m.first_acquirer))
        if len(self.got) == self.n:
            self.done()


@pytest.mark.parametrize("mode", ["blocking", "container"])
def test_consumer_crash_returns_unsettled_messages_in_order(mode, broker, queue):
    """As test_blocking's test of the same name, with the recovering consumer
    on the event-driven API."""
    held, total = 5, 8
    sent = run(SendAll(broker.url, queue, [Message(body=f"m{i}") for i in range(total)]))
    assert sent.outcomes == [Delivery.ACCEPTED] * total
    consumer = Subprocess([mode, broker.url, queue, str(held)])
    ready = consumer.read_line().split()
    assert ready[0] == "ready" and ready[2:] == [f"m{i}" for i in range(held)], ready
    consumer.kill()
    broker.wait_for_log(f'connection ended container="{ready[1]}"')
    h = run(ReceiveN(broker.url, queue, total))
    assert h.got == [(f"m{i}", 1, False) for i in range(held)] + \
        [(f"m{i}", 0, True) for i in range(held, total)]


class EndSessionHolding(Handler):
    """Receives `held` messages unsettled on a session of its own, ends that
    session, then receives everything on another session."""

    def __init__(self, url, queue, held, total):
        super().__init__(url, prefetch=0, auto_accept=False)
        self.queue, self.held, self.total = queue, held, total
        self.first, self.second = [], []

    def start(self, event):
        self.conn = self.connect()
        self.ssn = self.conn.session()
        self.ssn.open()
        rcv = self.ssn.receiver(f"{self.queue}-first")
        rcv.source.address = self.queue
        rcv.open()
        rcv.flow(self.held)

    def on_message(self, event):
        m = event.message
        if event.session == self.ssn:
            self.first.append(m.body)
            if len(self.first) == self.held:
                self.ssn.close()  # end: no detach, no dispositions first
        else:
            self.second.append((m.body, m.delivery_count))
            self.accept(event.delivery)
            if len(self.second) == self.total:
                self.done()

    def on_session_closed(self, event):
        if event.session == self.ssn:
            event.container.create_receiver(self.conn, self.queue).flow(self.total)


def test_session_end_returns_unsettled_messages_in_order(broker, queue):
    held, total = 3, 5
    sent = run(SendAll(broker.url, queue, [Message(body=f"m{i}") for i in range(total)]))
    assert sent.outcomes == [Delivery.ACCEPTED] * total
    h = run(EndSessionHolding(broker.url, queue, held, total))
    assert h.first == [f"m{i}" for i in range(held)]
    assert h.second == [(f"m{i}", 1 if i < held else 0) for i in range(total)]
