"""Client-side helpers shared by the Python interop tests."""

import contextlib
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

from proton import UNDESCRIBED, Array, Data, Described, Delivery, Link, symbol, ulong
from proton.handlers import MessagingHandler, TransactionHandler
from proton.reactor import Container, LinkOption
from proton.utils import BlockingConnection

# Bound on every blocking wait (seconds); a hang fails a test instead of
# hanging the run.
TIMEOUT = 20.0

HERE = Path(__file__).resolve().parent

# Section descriptors (AMQP 1.0 part 3.2).
HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS = 0x70, 0x71, 0x72
PROPERTIES, APPLICATION_PROPERTIES = 0x73, 0x74
DATA, AMQP_SEQUENCE, AMQP_VALUE, FOOTER = 0x75, 0x76, 0x77, 0x78
BARE_AND_FOOTER = (PROPERTIES, APPLICATION_PROPERTIES, DATA, AMQP_SEQUENCE, AMQP_VALUE, FOOTER)


@contextlib.contextmanager
def blocking(url, **kwargs):
    """A BlockingConnection closed at the end, whatever happened."""
    conn = BlockingConnection(url, timeout=TIMEOUT, **kwargs)
    try:
        yield conn
    finally:
        try:
            conn.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------
# Event-driven API


class _Timeout:
    def __init__(self, handler):
        self.handler = handler

    def on_timer_task(self, event):
        self.handler.timed_out = True
        event.container.stop()


class Handler(MessagingHandler):
    """Base for the Container tests: a deadline, connection bookkeeping, and
    link/connection errors recorded (and fatal) unless a subclass expects them."""

    def __init__(self, url, timeout=TIMEOUT, **kwargs):
        super().__init__(**kwargs)
        self.url = url
        self.timeout = timeout
        self.timed_out = False
        self.errors = []
        self.conns = []
        self.finished = False

    def on_start(self, event):
        self.container = event.container
        self.timer = event.container.schedule(self.timeout, _Timeout(self))
        self.start(event)

    def start(self, event):
        raise NotImplementedError

    def connect(self, **kwargs):
        kwargs.setdefault("reconnect", False)  # a test sees the first failure
        conn = self.container.connect(self.url, **kwargs)
        self.conns.append(conn)
        return conn

    def done(self):
        """The test's exchange is over: close everything, let run() return."""
        if self.finished:
            return
        self.finished = True
        self.timer.cancel()
        for c in self.conns:
            c.close()

    def _error(self, what, endpoint):
        cond = endpoint.remote_condition if hasattr(endpoint, "remote_condition") \
            else endpoint.condition  # a Transport has only .condition
        self.errors.append((what, cond.name if cond else None, cond.description if cond else None))
        self.done()
        if what == "transport":
            self.container.stop()
        # (Without the stop the reactor idles out its default select timeout,
        # pi seconds, after a transport error before run() returns.)

    def on_link_error(self, event):
        self._error("link", event.link)

    def on_session_error(self, event):
        self._error("session", event.session)

    def on_connection_error(self, event):
        self._error("connection", event.connection)

    def on_transport_error(self, event):
        self._error("transport", event.transport)


def run(handler, expect_errors=False):
    """Run a Container with `handler` until it is done; fail on timeout and,
    unless expected, on any link/session/connection error."""
    Container(handler).run()
    assert not handler.timed_out, f"{type(handler).__name__} timed out after {handler.timeout}s"
    if not expect_errors:
        assert not handler.errors, handler.errors
    return handler


def flush(conn):
    """Wait until everything the BlockingConnection `conn` has to say (e.g. a
    disposition) is written to the socket.

    proton writes a pending flow before pending dispositions, so a receive()
    right after release() would ask the broker for more credit *before* telling
    it about the release, and the broker rightly sends the next message. Tests
    about where a returned message goes flush between the two."""
    transport = conn.conn.transport
    conn.wait(lambda: transport.pending() == 0, msg="flushing", timeout=TIMEOUT)


def settle_modified(delivery, failed=True, undeliverable=False):
    """Settle with `modified`, setting delivery-failed (the APIs' release()
    sends modified with delivery-failed unset)."""
    delivery.local.failed = failed
    delivery.local.undeliverable = undeliverable
    delivery.update(Delivery.MODIFIED)
    delivery.settle()


# ---------------------------------------------------------------------------
# Raw messages: encoded sections, for what proton's Message cannot express
# (footer) and for byte-for-byte comparison.


def encode_section(descriptor, value):
    d = Data()
    d.put_object(Described(ulong(descriptor), value))
    return d.encode()


def split_sections(encoded):
    """[(descriptor, bytes of the section)] of an encoded message."""
    out = []
    d = Data()
    off = 0
    while off < len(encoded):
        d.clear()
        n = d.decode(encoded[off:])
        assert n > 0, f"undecodable bytes at offset {off}"
        d.rewind()
        d.next()
        value = d.get_object()
        assert isinstance(value, Described), f"section at offset {off} is not described: {value!r}"
        out.append((int(value.descriptor), encoded[off:off + n]))
        off += n
    return out


def section_value(section_bytes):
    d = Data()
    d.decode(section_bytes)
    d.rewind()
    d.next()
    return d.get_object().value


class RawMessage:
    """Lets a proton Sender (or BlockingSender.send) send already-encoded bytes."""

    def __init__(self, encoded):
        self.encoded = encoded

    def send(self, sender, tag=None):
        dlv = sender.delivery(tag or sender.delivery_tag())
        sender.stream(self.encoded)
        sender.advance()
        if sender.snd_settle_mode == sender.SND_SETTLED:
            dlv.settle()
        return dlv


class RawCollector(MessagingHandler):
    """A link handler that keeps each delivery's bytes undecoded."""

    def __init__(self):
        super().__init__(prefetch=0, auto_accept=False)
        self.handlers = []  # no flow controller, no decoding
        self.received = []

    def on_delivery(self, event):
        dlv = event.delivery
        if dlv.partial:
            return
        self.received.append(event.link.recv(dlv.pending))
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()


# ---------------------------------------------------------------------------
# Consumers in another process, to kill like a crash.


class Subprocess:
    """A client process (`script`, crash_consumer.py by default) to kill."""

    def __init__(self, args, script="crash_consumer.py"):
        self.proc = subprocess.Popen([sys.executable, str(HERE / script), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": str(HERE)})
        self.lines = []

    def read_line(self, timeout=TIMEOUT):
        """Next stdout line, or fail (with its stderr) if none comes in time."""
        box = []
        t = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        if not box or not box[0]:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"process said nothing in {timeout}s; stderr:\n{err}")
        self.lines.append(box[0].rstrip("\n"))
        return self.lines[-1]

    def kill(self):
        self.proc.kill()
        self.proc.communicate()


# ---------------------------------------------------------------------------
# Send some messages, then receive as many (accepting them), with either API.


class SendThenReceive(Handler):
    def __init__(self, url, queue, messages, sender_options=None, receiver_options=None,
                 prefetch=10):
        super().__init__(url, prefetch=prefetch)
        self.queue = queue
        self.to_send = list(messages)
        self.sender_options = sender_options
        self.receiver_options = receiver_options
        self.sent = 0
        self.settled = 0
        self.outcomes = []
        self.received = []
        self.receiver = None

    def start(self, event):
        self.conn = self.connect()
        event.container.create_sender(self.conn, self.queue, options=self.sender_options)

    def on_sendable(self, event):
        while event.sender.credit and self.sent < len(self.to_send):
            event.sender.send(self.to_send[self.sent])
            self.sent += 1
        if event.sender.snd_settle_mode == event.sender.SND_SETTLED and self.sent == len(self.to_send):
            self._receive()

    def on_settled(self, event):
        if event.link.is_sender:
            self.outcomes.append(event.delivery.remote_state)
            self.settled += 1
            if self.settled == len(self.to_send):
                self._receive()

    def _receive(self):
        if self.receiver is None:
            self.receiver = self.container.create_receiver(self.conn, self.queue,
                                                           options=self.receiver_options)

    def on_message(self, event):
        self.received.append(event.message)
        if len(self.received) == len(self.to_send):
            self.done()


def roundtrip(api, url, queue, messages):
    """Send `messages` unsettled to `queue`, receive as many, accept them;
    return the received Messages."""
    messages = list(messages)
    if api == "blocking":
        with blocking(url) as conn:
            snd = conn.create_sender(queue)
            for m in messages:
                snd.send(m)
            rcv = conn.create_receiver(queue, credit=len(messages))
            out = []
            for _ in messages:
                out.append(rcv.receive(timeout=TIMEOUT))
                rcv.accept()
            return out
    h = run(SendThenReceive(url, queue, messages))
    assert h.outcomes == [Delivery.ACCEPTED] * len(messages)
    return h.received


class _Poll:
    def __init__(self, cond, then, interval):
        self.cond, self.then, self.interval = cond, then, interval

    def on_timer_task(self, event):
        if self.cond():
            self.then()
        else:
            event.container.schedule(self.interval, self)


def after_flush(container, connection, then, interval=0.002):
    """Container API twin of flush(): call `then` once `connection` has
    written everything it had to say (see flush() for why)."""
    transport = connection.transport
    container.schedule(0, _Poll(lambda: transport.pending() == 0, then, interval))


class SendAll(Handler):
    """Sends `messages` unsettled and waits for every outcome."""

    def __init__(self, url, queue, messages):
        super().__init__(url)
        self.queue, self.messages = queue, list(messages)
        self.sent = 0
        self.outcomes = []

    def start(self, event):
        event.container.create_sender(self.connect(), self.queue)

    def on_sendable(self, event):
        while event.sender.credit and self.sent < len(self.messages):
            event.sender.send(self.messages[self.sent])
            self.sent += 1

    def on_settled(self, event):
        self.outcomes.append(event.delivery.remote_state)
        if len(self.outcomes) == len(self.messages):
            self.done()


# ---------------------------------------------------------------------------
# Link options Proton's reactor does not have.


class LinkProperties(LinkOption):
    """The attach's link properties, e.g. LinkProperties({"priority": int32(10)})
    (keys become symbols)."""

    def __init__(self, props):
        self.props = {symbol(k): v for k, v in props.items()}

    def apply(self, link):
        link.properties = self.props


class Capabilities(LinkOption):
    """Capabilities of the source (receiver) or target (sender), e.g.
    Capabilities("topic") as Qpid JMS sends."""

    def __init__(self, *caps):
        self.caps = [symbol(c) for c in caps]

    def apply(self, link):
        terminus = link.source if link.is_receiver else link.target
        terminus.capabilities.put_object(Array(UNDESCRIBED, Data.SYMBOL, *self.caps))


class RcvSettleSecond(LinkOption):
    """rcv-settle-mode `second`: the receiver settles after the sender did."""

    def apply(self, link):
        link.rcv_settle_mode = Link.RCV_SECOND


# ---------------------------------------------------------------------------
# BlockingConnection helpers with exact credit: receivers made with credit=0,
# credit given with rcv.link.flow(n), messages taken from the fetcher (a
# BlockingReceiver.receive() would grant one more credit when it has none).


def take(conn, rcv, n, timeout=TIMEOUT):
    """Wait for `n` messages on `rcv` and return them; their deliveries (if
    unsettled) are appended to rcv.fetcher.unsettled."""
    conn.wait(lambda: rcv.fetcher.has_message >= n,
              msg=f"waiting for {n} messages on {rcv.link.name}", timeout=timeout)
    return [rcv.fetcher.pop() for _ in range(n)]


def take_delivery(conn, rcv, timeout=TIMEOUT):
    """(message, delivery) of the next message on `rcv`."""
    conn.wait(lambda: rcv.fetcher.has_message, msg=f"waiting on {rcv.link.name}", timeout=timeout)
    msg, dlv = rcv.fetcher.incoming.popleft()
    return msg, dlv


def drain_all(conn, rcv, credit=100, accept=True):
    """Drain `rcv` with `credit`: every message the source has (up to
    `credit`), once the broker said it has no more. Accepts them unless told
    otherwise."""
    rcv.link.drain(credit)
    # The transport may have read the drain's flow before the fetcher got the
    # messages that came ahead of it (it yields after each): wait for both.
    conn.wait(lambda: not rcv.link.draining() and rcv.link.queued == 0,
              msg="draining", timeout=TIMEOUT)
    out = []
    while rcv.fetcher.has_message:
        msg, dlv = rcv.fetcher.incoming.popleft()
        out.append(msg)
        if dlv.settled:
            continue  # pre-settled by the broker
        if accept:
            dlv.update(Delivery.ACCEPTED)
            dlv.settle()
        else:
            rcv.fetcher.unsettled.append(dlv)
    return out


def fetch_all(url, address, options=None, credit=100):
    """Every message `address` has (up to `credit`), accepted, on a connection
    of its own."""
    with blocking(url) as conn:
        rcv = conn.create_receiver(address, credit=0, options=options)
        return drain_all(conn, rcv, credit)


def condition_of(delivery):
    """(outcome, condition name, condition description) the peer gave."""
    cond = delivery.remote.condition
    return (delivery.remote_state, cond.name if cond else None, cond.description if cond else None)


def send_for_outcome(snd, msg):
    """Send `msg` on a BlockingSender, wait for the broker's settlement and
    return condition_of() its delivery (no exception on `rejected`)."""
    return condition_of(snd.send(msg, error_states=[]))


def annotation(msg, key):
    return (msg.annotations or {}).get(symbol(key))


def round_trip(conn, address):
    """Return once the broker has handled everything the BlockingConnection
    `conn` sent so far (credit, dispositions): flush it, then attach and
    detach a sender to `address` (the broker handles a connection's frames in
    order, so its answer to the attach comes after the rest)."""
    flush(conn)
    snd = conn.create_sender(address, name=f"round-trip-{uuid.uuid4().hex[:8]}")
    snd.close()


def remote_filter(link):
    """The source filter of the broker's attach as a dict (None if absent)."""
    data = link.remote_source.filter
    data.rewind()
    if not data.next():
        return None
    return data.get_object()


# ---------------------------------------------------------------------------
# Transactions (AMQP 1.0 part 4) on a BlockingConnection, through its
# Container's declare_transaction() and proton.reactor.Transaction.

# Delivery states by descriptor code (Proton gives a transactional-state as
# remote_state 0x34 with remote.data [txn-id, outcome]).
TRANSACTIONAL_STATE = 0x34
ACCEPTED_OUTCOME = Described(ulong(0x24), [])


class Txn(TransactionHandler):
    """A local transaction declared on the BlockingConnection `conn` (the
    coordinator link is Proton's, made by Container.declare_transaction with
    this object as its TransactionHandler). Each step waits, bounded, for the
    coordinator's answer. `txn.txn` is the proton.reactor.Transaction."""

    def __init__(self, conn, settle_before_discharge=False):
        self.conn = conn
        self.events = []  # (what, condition_of(control delivery)) as they come
        self._seen = 0
        self.txn = conn.container.declare_transaction(
            conn.conn, handler=self, settle_before_discharge=settle_before_discharge)
        what, cond = self._next("declare")
        assert what == "declared", f"declare failed: {cond}"
        assert isinstance(self.id, bytes) and self.id, f"txn-id {self.id!r}"

    @property
    def id(self):
        return self.txn.id

    def _record(self, what, event):
        self.events.append((what, condition_of(event.delivery)))

    def on_transaction_declared(self, event):
        self._record("declared", event)

    def on_transaction_declare_failed(self, event):
        self._record("declare failed", event)

    def on_transaction_committed(self, event):
        self._record("committed", event)

    def on_transaction_aborted(self, event):
        self._record("aborted", event)

    def on_transaction_commit_failed(self, event):
        self._record("commit failed", event)

    def _next(self, what):
        self.conn.wait(lambda: len(self.events) > self._seen, msg=f"waiting for the {what}",
                       timeout=TIMEOUT)
        self._seen += 1
        return self.events[self._seen - 1]

    def send(self, snd, msg):
        """Sends `msg` in the transaction on `snd` (a BlockingSender or a
        proton Sender); returns its delivery at once."""
        return self.txn.send(getattr(snd, "link", snd), msg)

    def post(self, snd, *messages):
        """Sends each message in the transaction and waits for the broker's
        answers: each must be transactional-state{txn-id, accepted}, settled."""
        dlvs = [self.send(snd, m) for m in messages]
        self.conn.wait(lambda: all(d.settled for d in dlvs), msg="waiting for the posts' answers",
                       timeout=TIMEOUT)
        answers = [(d.remote_state, d.remote.data) for d in dlvs]
        assert answers == [(TRANSACTIONAL_STATE, [self.id, ACCEPTED_OUTCOME])] * len(dlvs), answers
        return dlvs

    def accept(self, *deliveries):
        """Accepts received deliveries in the transaction (Transaction.accept:
        a disposition with transactional-state{txn-id, accepted}, settled only
        if settle_before_discharge)."""
        for d in deliveries:
            self.txn.accept(d)

    def commit(self):
        """Commits; returns ("committed", ...) or ("commit failed", (state,
        condition, description))."""
        self.txn.commit()
        return self._next("commit")

    def abort(self):
        self.txn.abort()
        return self._next("rollback")
