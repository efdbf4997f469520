"""Transactions (SPEC §7; AMQP 1.0 part 4, local transactions) and strict
ordering groups (SPEC §6) through Qpid Proton.

Transactions are Proton's own: Container.declare_transaction with a
TransactionHandler, Transaction.send / accept / commit / abort. Most tests
drive them on a BlockingConnection (helpers.Txn waits for each answer of the
coordinator), so that what other clients see between the steps can be
checked; test_event_driven_transactions runs a whole exchange through the
event-driven API (its MessagingHandler is the TransactionHandler too), and
crash_transaction.py, the process killed mid-transaction, has both
(TransactionalClientHandler for the event-driven one).

What is asserted is what clients see: bodies, order, delivery-count, the
states the broker answers transfers and discharges with, and its error
conditions."""

import threading

import pytest
from proton import ConnectionException, Delivery, Described, Endpoint, Message, ulong
from proton.handlers import TransactionHandler
from proton.utils import BlockingConnection

from helpers import (ACCEPTED_OUTCOME, TIMEOUT, TRANSACTIONAL_STATE, Handler, Subprocess, Txn,
                     annotation, blocking, drain_all, fetch_all, flush, round_trip, run,
                     settle_modified, take_delivery)

STRICT = "queue.group-ordering=strict"
COMMITTED = ("committed", (Delivery.ACCEPTED, None, None))
ABORTED = ("aborted", (Delivery.ACCEPTED, None, None))


def numbered(n, prefix="m", **kwargs):
    return [Message(body=f"{prefix}{i}", **kwargs) for i in range(n)]


def send(conn, address, messages):
    """Sends each message outside any transaction and waits for `accepted`."""
    snd = conn.create_sender(address)
    for m in messages:
        snd.send(m)
    snd.close()


def bodies_and_counts(messages):
    return [(m.body, m.delivery_count) for m in messages]


def held(conn, rcv, n):
    """Takes `n` messages on `rcv` (a receiver made with credit=0), leaving
    them unsettled; returns [(message, delivery)]."""
    rcv.link.flow(n)
    return [take_delivery(conn, rcv) for _ in range(n)]


def nothing_more(conn, rcv, what):
    """Drains `rcv`: nothing may be there (without settling anything)."""
    got = drain_all(conn, rcv, credit=10, accept=False)
    assert [m.body for m in got] == [], what


def accept_plainly(*deliveries):
    for d in deliveries:
        d.update(Delivery.ACCEPTED)
        d.settle()


# ---------------------------------------------------------------------------
# Transactional posting


def test_posts_appear_at_commit_in_order(broker, queue):
    """Messages sent in a transaction are each answered
    transactional-state{txn-id, accepted}; a receiver (another connection)
    sees none of them until the commit is accepted, then all, in order, with
    nothing sent outside the transaction held back meanwhile."""
    with blocking(broker.url) as conn, blocking(broker.url) as other:
        rcv = other.create_receiver(queue, credit=0)
        txn = Txn(conn)
        snd = conn.create_sender(queue)
        txn.post(snd, *numbered(3, "t"))
        snd.send(Message(body="plain"))  # outside the transaction: visible at once
        txn.post(snd, *numbered(2, "u"))
        got = drain_all(other, rcv, accept=False)
        assert [m.body for m in got] == ["plain"], "transactional posts visible before the commit"
        accept_plainly(*rcv.fetcher.unsettled)
        rcv.fetcher.unsettled.clear()
        assert txn.commit() == COMMITTED
        got = drain_all(other, rcv)
        assert bodies_and_counts(got) == [("t0", 0), ("t1", 0), ("t2", 0), ("u0", 0), ("u1", 0)]
    assert fetch_all(broker.url, queue) == []


def test_posts_rolled_back_never_appear(broker, queue):
    """An aborted transaction's posts are discarded; the link goes on, and a
    transaction declared next on the same connection commits normally."""
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        txn = Txn(conn)
        txn.post(snd, *numbered(3, "gone"))
        assert txn.abort() == ABORTED
        assert fetch_all(broker.url, queue) == []
        snd.send(Message(body="plain"))
        again = Txn(conn)
        assert again.id != txn.id, "a new transaction got the old one's id"
        again.post(snd, Message(body="kept"))
        assert again.commit() == COMMITTED
    assert [m.body for m in fetch_all(broker.url, queue)] == ["plain", "kept"]


def test_several_transactions_per_connection_and_any_session(broker, queue):
    """Two transactions open at once on one connection, their posts
    interleaved and some sent on a sender of another session of that
    connection: the rolled back one's posts never appear, the committed
    one's do, in their order."""
    with blocking(broker.url) as conn:
        one, two = Txn(conn), Txn(conn)
        assert one.id != two.id
        snd = conn.create_sender(queue)
        ssn = conn.conn.session()
        ssn.open()
        other = ssn.sender(f"{queue}-second-session")
        other.target.address = queue
        other.open()
        conn.wait(lambda: other.state & Endpoint.REMOTE_ACTIVE, msg="second session's sender",
                  timeout=TIMEOUT)
        one.post(snd, Message(body="one-0"))
        two.post(other, Message(body="two-0"))
        one.post(other, Message(body="one-1"))
        two.post(snd, Message(body="two-1"))
        assert two.abort() == ABORTED
        assert fetch_all(broker.url, queue) == []
        assert one.commit() == COMMITTED
    assert [m.body for m in fetch_all(broker.url, queue)] == ["one-0", "one-1"]


def test_commit_after_a_refused_post_is_rejected_rollback(broker, queue):
    """A post the broker refuses (an anonymous-relay message without `to`:
    transactional-state{txn-id, rejected amqp:invalid-field}) dooms the
    transaction: its commit is rejected with amqp:transaction:rollback and
    none of its other posts appear."""
    with blocking(broker.url) as conn:
        txn = Txn(conn)
        txn.post(conn.create_sender(queue), Message(body="would-be"))
        bad = txn.send(conn.create_sender(None), Message(body="nowhere"))
        conn.wait(lambda: bad.settled, msg="the refused post's answer", timeout=TIMEOUT)
        assert bad.remote_state == TRANSACTIONAL_STATE
        txn_id, outcome = bad.remote.data
        assert txn_id == txn.id
        assert int(outcome.descriptor) == 0x25, f"not rejected: {outcome}"
        assert outcome.value[0].value[0] == "amqp:invalid-field", outcome
        what, (state, condition, _) = txn.commit()
        assert (what, state, condition) == \
            ("commit failed", Delivery.REJECTED, "amqp:transaction:rollback")
    assert fetch_all(broker.url, queue) == []


def test_discharge_of_an_unknown_transaction_is_rejected(broker, queue):
    """A discharge naming no open transaction of the connection (made up, or
    already discharged, or another connection's) is rejected with
    amqp:transaction:unknown-id."""
    with blocking(broker.url) as conn, blocking(broker.url) as other:
        done = Txn(conn)
        assert done.commit() == COMMITTED
        foreign = Txn(other)
        for txn_id in (b"no-such-txn", done.id, foreign.id):
            # Proton's Transaction discharges the id it holds: a declared one
            # (left open, rolled back with the connection) made to hold another.
            t = Txn(conn)
            t.txn.id = txn_id
            what, (state, condition, _) = t.commit()
            assert (what, state, condition) == \
                ("commit failed", Delivery.REJECTED, "amqp:transaction:unknown-id"), txn_id
        assert foreign.abort() == ABORTED  # untouched by the other connection's discharge


# ---------------------------------------------------------------------------
# Transactional retirement


@pytest.mark.parametrize("settle", [False, True], ids=["unsettled", "settled"])
def test_accepts_take_effect_at_commit(settle, broker, queue):
    """Messages accepted in a transaction (the disposition left unsettled, or
    settled by the client: settle_before_discharge) stay locked to it: not
    given to another consumer, not even once their consumer's link is gone;
    once the commit is accepted they are gone for good, and the rest is
    untouched."""
    with blocking(broker.url) as conn, blocking(broker.url) as other:
        send(conn, queue, numbered(4))
        txn = Txn(conn, settle_before_discharge=settle)
        rcv = conn.create_receiver(queue, credit=0)
        got = held(conn, rcv, 2)
        assert [m.body for m, _ in got] == ["m0", "m1"]
        txn.accept(*(d for _, d in got))
        rcv.close()  # the consumer goes; its accepted messages stay locked
        watcher = other.create_receiver(queue, credit=0)
        assert [m.body for m in drain_all(other, watcher, accept=False)] == ["m2", "m3"], \
            "a message accepted in an open transaction went to another consumer"
        watcher.close()  # m2, m3 back (delivery-count 1)
        assert txn.commit() == COMMITTED
    got = fetch_all(broker.url, queue)
    assert bodies_and_counts(got) == [("m2", 1), ("m3", 1)]
    assert fetch_all(broker.url, queue) == []


@pytest.mark.parametrize("settle", [False, True], ids=["unsettled", "settled"])
def test_accepts_rolled_back_come_back_first(settle, broker, queue):
    """Messages accepted in a transaction that is aborted come back at their
    original positions, ahead of the later ones, with delivery-count 1; the
    broker settles the old deliveries itself and ignores the `released`
    Proton sends for them after the abort."""
    with blocking(broker.url) as conn:
        send(conn, queue, numbered(4))
        txn = Txn(conn, settle_before_discharge=settle)
        rcv = conn.create_receiver(queue, credit=0)
        got = held(conn, rcv, 2)
        assert [m.body for m, _ in got] == ["m0", "m1"]
        txn.accept(*(d for _, d in got))
        assert txn.abort() == ABORTED
        if not settle:
            conn.wait(lambda: all(d.settled for _, d in got),
                      msg="the broker settling the rolled back deliveries", timeout=TIMEOUT)
        flush(conn)  # Proton's `released` for them goes before the credit
        again = held(conn, rcv, 4)
        assert [(m.body, m.delivery_count, m.first_acquirer) for m, _ in again] == \
            [("m0", 1, False), ("m1", 1, False), ("m2", 0, True), ("m3", 0, True)]
        accept_plainly(*(d for _, d in again))
        assert drain_all(conn, rcv) == []


RELEASED_OUTCOME = Described(ulong(0x26), [])
FAILED_OUTCOME = Described(ulong(0x27), [True])  # modified{delivery-failed}
REJECTED_OUTCOME = Described(ulong(0x25), [])


def retire_in(txn, dlv, outcome):
    """A disposition transactional-state{txn-id, outcome}, unsettled
    (Proton's Transaction.update cannot give modified its fields)."""
    dlv.local.data = [txn.id, outcome]
    dlv.update(TRANSACTIONAL_STATE)


@pytest.mark.parametrize("discharge", ["commit", "abort"])
def test_released_modified_rejected_take_effect_at_discharge(discharge, broker, queue):
    """m0 released, m1 modified{delivery-failed}, m2 rejected, all in one
    transaction: until the discharge they stay locked (another consumer gets
    only m3). Committed: m0 back with delivery-count 0, m1 with 1, m2 in the
    DLQ (reason "rejected"). Aborted: all three back in order with
    delivery-count 1, the DLQ empty."""
    with blocking(broker.url) as conn, blocking(broker.url) as other:
        send(conn, queue, numbered(4))
        txn = Txn(conn)
        rcv = conn.create_receiver(queue, credit=0)
        got = held(conn, rcv, 3)
        assert [m.body for m, _ in got] == ["m0", "m1", "m2"]
        for (_, d), outcome in zip(got, (RELEASED_OUTCOME, FAILED_OUTCOME, REJECTED_OUTCOME)):
            retire_in(txn, d, outcome)
        round_trip(conn, queue)
        watcher = other.create_receiver(queue, credit=0)
        assert [m.body for m in drain_all(other, watcher)] == ["m3"], \
            "a message retired in an open transaction went to another consumer"
        outcome = txn.commit() if discharge == "commit" else txn.abort()
        assert outcome == (COMMITTED if discharge == "commit" else ABORTED)
        conn.wait(lambda: all(d.settled for _, d in got),
                  msg="the broker settling the retired deliveries", timeout=TIMEOUT)
        got = bodies_and_counts(drain_all(other, watcher))
        dead = fetch_all(broker.url, "DLQ")
    if discharge == "commit":
        assert got == [("m0", 0), ("m1", 1)]
        assert [(m.body, annotation(m, "x-opt-dead-letter-reason")) for m in dead] == \
            [("m2", "rejected")]
    else:
        assert got == [("m0", 1), ("m1", 1), ("m2", 1)]
        assert dead == []


class EventDriven(Handler, TransactionHandler):
    """The whole exchange through the event-driven API: posts a0, a1 in a
    transaction and aborts it; posts m0..m3 in another and commits; takes m0,
    m1 and accepts them in a third, aborted; takes the 4 (m0, m1 back) and
    accepts them in a fourth, committed."""

    def __init__(self, url, queue):
        super().__init__(url, prefetch=0, auto_accept=False)
        self.queue = queue
        self.outbox = []  # (transaction, message) waiting for credit
        self.posting = []  # (transaction, number of posts, deliveries) being posted
        self.current = None  # the transaction accepting what is received
        self.inbox = []  # deliveries taken and not yet accepted
        self.received = []  # (body, delivery-count)
        self.answers = []  # (name, [(remote_state, remote.data)] of its posts, txn-id)
        self.discharged = []  # (name, what)
        self.txns = []  # (transaction, name), kept alive so that `is` tells them apart

    def start(self, event):
        self.conn = self.connect()
        self.sender = event.container.create_sender(self.conn, self.queue)
        self.declare("a")

    def declare(self, name):
        self.txns.append((self.container.declare_transaction(self.conn, handler=self), name))

    def name_of(self, t):
        return next(name for x, name in self.txns if x is t)

    def name(self, event):
        return self.name_of(event.transaction)

    def on_transaction_declared(self, event):
        t, name = event.transaction, self.name(event)
        if name == "a":
            self.post(t, numbered(2, "a"))
        elif name == "m":
            self.post(t, numbered(4))
        else:
            self.current = t
            self.accept_taken()

    def post(self, t, messages):
        self.posting.append((t, len(messages), []))
        self.outbox.extend((t, m) for m in messages)
        self.on_sendable(None)

    def on_sendable(self, event):
        while self.outbox and self.sender.credit:
            t, m = self.outbox.pop(0)
            next(sent for x, _, sent in self.posting if x is t).append(t.send(self.sender, m))

    def on_settled(self, event):
        if not event.link.is_sender:
            return
        for entry in list(self.posting):
            t, n, sent = entry
            if len(sent) == n and all(d.settled for d in sent):
                self.posting.remove(entry)
                name = self.name_of(t)
                self.answers.append((name, [(d.remote_state, d.remote.data) for d in sent], t.id))
                if name == "a":
                    t.abort()
                else:
                    t.commit()

    def on_transaction_aborted(self, event):
        self.discharged.append((self.name(event), "aborted"))
        if self.name(event) == "a":
            self.declare("m")
        else:  # "r1": m0, m1 come back
            self.receiver.flow(4)
            self.current = None
            self.declare("r2")

    def on_transaction_committed(self, event):
        self.discharged.append((self.name(event), "committed"))
        if self.name(event) == "m":
            self.receiver = self.container.create_receiver(self.conn, self.queue)
            self.receiver.flow(2)
            self.current = None
            self.declare("r1")
        else:  # "r2"
            self.done()

    def on_transaction_commit_failed(self, event):
        self.discharged.append((self.name(event), "commit failed"))
        self.done()

    def on_message(self, event):
        self.received.append((event.message.body, event.message.delivery_count))
        self.inbox.append(event.delivery)
        self.accept_taken()

    def accept_taken(self):
        t = self.current
        want = 2 if t is not None and self.name_of(t) == "r1" else 4
        if t is None or len(self.inbox) < want:
            return
        for d in self.inbox:
            t.accept(d)
        self.inbox = []
        if self.name_of(t) == "r1":
            t.abort()
        else:
            t.commit()


def test_event_driven_transactions(broker, queue):
    h = run(EventDriven(broker.url, queue))
    assert h.discharged == [("a", "aborted"), ("m", "committed"), ("r1", "aborted"),
                            ("r2", "committed")]
    assert [(name, len(answers)) for name, answers, _ in h.answers] == [("a", 2), ("m", 4)]
    for name, answers, txn_id in h.answers:
        assert answers == [(TRANSACTIONAL_STATE, [txn_id, ACCEPTED_OUTCOME])] * len(answers), name
    assert h.received == [("m0", 0), ("m1", 0), ("m0", 1), ("m1", 1), ("m2", 0), ("m3", 0)]
    assert fetch_all(broker.url, queue) == []


# ---------------------------------------------------------------------------
# A transaction's connection lost


@pytest.mark.parametrize("settle", [False, True], ids=["unsettled", "settled"])
@pytest.mark.parametrize("mode", ["blocking", "container"])
def test_connection_lost_mid_transaction_rolls_it_back(mode, settle, broker, queue):
    """A process declared a transaction, posted 3 messages and accepted 3 of
    5 in it, and is killed (SIGKILL) before discharging it: the posts never
    appear and the 3 accepted come back first, in order, delivery-count 1."""
    src, dst = f"{queue}-src", f"{queue}-dst"
    with blocking(broker.url) as conn:
        send(conn, src, numbered(5, "s"))
    proc = Subprocess([mode, broker.url, src, "3", dst, "3", *(["--settle"] if settle else [])],
                      script="crash_transaction.py")
    try:
        ready = proc.read_line().split()
        assert ready[0] == "ready" and ready[2:] == ["s0", "s1", "s2"], ready
        assert fetch_all(broker.url, dst) == [], "posts visible before any commit"
        proc.kill()
        broker.wait_for_log(f'connection ended container="{ready[1]}"')
    finally:
        proc.kill()
    assert "connection ended: transaction rolled back" in broker.log()
    assert fetch_all(broker.url, dst) == [], "a lost connection's posts were published"
    got = fetch_all(broker.url, src)
    assert bodies_and_counts(got) == [("s0", 1), ("s1", 1), ("s2", 1), ("s3", 0), ("s4", 0)]


# ---------------------------------------------------------------------------
# Durable commits across kill -9


def test_commits_survive_kill_9_all_or_nothing(broker, queue):
    """Two connections each commit transactions of 3 durable messages, one
    after the other. Once both have had 6 commits accepted, stream x sends
    one more commit and the broker is killed with SIGKILL as soon as that
    discharge is on the wire (stream y is wherever it is in its cycle).
    After the restart every transaction's messages are all there or none,
    every transaction whose commit the client saw accepted is there, nothing
    of a transaction never discharged is, and each stream's messages are in
    order."""
    per_txn, enough = 3, 6
    streams = {name: {"sent": [], "committed": [], "error": None} for name in ("x", "y")}
    killed = threading.Event()

    def stream(name):
        s = streams[name]
        conn = None
        try:
            conn = BlockingConnection(broker.url, timeout=TIMEOUT)
            snd = conn.create_sender(queue)
            for k in range(5000):
                txn = Txn(conn)
                txn.post(snd, *(Message(body=f"{name}{k}-{i}", durable=True)
                                for i in range(per_txn)))
                s["sent"].append(k)  # from here on it may be there (all of it)
                if name == "x" and all(len(x["committed"]) >= enough for x in streams.values()):
                    txn.txn.commit()
                    flush(conn)  # the discharge is on the wire
                    broker.kill()
                    killed.set()
                    return
                assert txn.commit() == COMMITTED
                s["committed"].append(k)
        except ConnectionException:
            pass  # the broker is gone
        except Exception as e:  # noqa: BLE001 - reported below
            s["error"] = repr(e)
            killed.set()
        finally:
            if conn is not None:
                # The broker is gone: do not wait for its Close.
                conn.conn.close()
                conn.container.stop()

    threads = [threading.Thread(target=stream, args=(n,), daemon=True) for n in streams]
    for t in threads:
        t.start()
    try:
        assert killed.wait(TIMEOUT), f"too few commits: {streams}"
    finally:
        broker.kill()
        for t in threads:
            t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a stream did not notice the broker's end"
    assert all(s["error"] is None for s in streams.values()), streams
    broker.start()
    total = sum(len(s["sent"]) for s in streams.values()) * per_txn
    got = [m.body for m in fetch_all(broker.url, queue, credit=total + 10)]
    for name, s in streams.items():
        mine = [b for b in got if b.startswith(name)]
        txns = {}
        for b in mine:
            k, i = b[len(name):].split("-")
            txns.setdefault(int(k), []).append(int(i))
        for k, items in txns.items():
            assert items == list(range(per_txn)), f"transaction {name}{k} partly there: {items}"
        present = sorted(txns)
        lost = sorted(set(s["committed"]) - set(present))
        assert not lost, f"stream {name}: commits seen accepted are missing: {lost}"
        assert set(present) <= set(s["sent"]), f"stream {name}: undischarged work published"
        assert mine == [f"{name}{k}-{i}" for k in present for i in range(per_txn)], \
            f"stream {name} out of order"


# ---------------------------------------------------------------------------
# Strict ordering groups


def test_strict_group_waits_for_the_commit(broker, queue):
    """On `Q?queue.group-ordering=strict` with g1, g2, g3 in group g and h1
    in group h: a receiver with credit gets g1 and h1 only; g2 stays withheld
    while g1 is accepted in an open transaction; after the rollback g1 comes
    back first (delivery-count 1) and nothing else of g; after a committed
    accept g2 comes, then (accepted plainly) g3."""
    with blocking(broker.url) as conn:
        send(conn, f"{queue}?{STRICT}",
             [Message(body=b, group_id=g) for b, g in
              [("g1", "g"), ("g2", "g"), ("g3", "g"), ("h1", "h")]])
        rcv = conn.create_receiver(queue, credit=0)
        first = drain_all(conn, rcv, credit=10, accept=False)
        assert [m.body for m in first] == ["g1", "h1"], "strict: more than one of a group out"
        g1, h1 = rcv.fetcher.unsettled.popleft(), rcv.fetcher.unsettled.popleft()
        accept_plainly(h1)

        txn = Txn(conn)
        txn.accept(g1)
        round_trip(conn, queue)
        nothing_more(conn, rcv, "g2 dispatched before the transaction accepting g1 committed")
        assert txn.abort() == ABORTED
        flush(conn)
        (m, g1), = held(conn, rcv, 1)
        assert (m.body, m.delivery_count) == ("g1", 1), "the rolled back g1 must come first"
        nothing_more(conn, rcv, "g2 dispatched while g1 is out again")

        txn = Txn(conn)
        txn.accept(g1)
        round_trip(conn, queue)
        nothing_more(conn, rcv, "g2 dispatched before the commit")
        assert txn.commit() == COMMITTED
        (m, g2), = held(conn, rcv, 1)
        assert (m.body, m.delivery_count) == ("g2", 0)
        nothing_more(conn, rcv, "g3 dispatched while g2 is out")
        accept_plainly(g2)
        (m, g3), = held(conn, rcv, 1)
        assert m.body == "g3"
        accept_plainly(g3)
        assert drain_all(conn, rcv) == []


@pytest.mark.parametrize("how", ["released", "modified", "detached"])
def test_strict_group_returned_message_is_next(how, broker, queue):
    """A strict group's message given back (released, modified with
    delivery-failed, or its link detached) is the group's next delivery:
    the consumer sees g1, g2, g2, g3, never g3 before the second g2."""
    with blocking(broker.url) as conn:
        send(conn, f"{queue}?{STRICT}", [Message(body=f"g{i}", group_id="g") for i in (1, 2, 3)])
        rcv = conn.create_receiver(queue, credit=0)
        rcv.link.flow(10)
        seen = []
        m, d = take_delivery(conn, rcv)
        seen.append(m.body)
        accept_plainly(d)
        m, d = take_delivery(conn, rcv)
        seen.append(m.body)
        round_trip(conn, queue)
        assert not rcv.fetcher.has_message, "strict: g3 dispatched while g2 is out"
        if how == "released":
            d.update(Delivery.RELEASED)
            d.settle()
        elif how == "modified":
            settle_modified(d)
        else:
            rcv.close()
            rcv = conn.create_receiver(queue, credit=0)
            rcv.link.flow(10)
        for _ in range(2):
            m, d = take_delivery(conn, rcv)
            seen.append((m.body, m.delivery_count))
            accept_plainly(d)
        expected_count = 0 if how == "released" else 1
        assert seen == ["g1", "g2", ("g2", expected_count), ("g3", 0)]
        assert drain_all(conn, rcv) == []


def test_strict_queue_ungrouped_flow_and_arrival_order_within_a_group(broker, queue):
    """On a strict queue messages without a group are not held back by a
    group's unsettled one, and within a group arrival order decides: a1
    (priority 1) is delivered before a2 (priority 9), which waits for a1's
    acceptance."""
    with blocking(broker.url) as conn:
        send(conn, f"{queue}?{STRICT}",
             [Message(body="a1", group_id="a", priority=1),
              Message(body="a2", group_id="a", priority=9),
              Message(body="n1"), Message(body="n2")])
        rcv = conn.create_receiver(queue, credit=0)
        got = drain_all(conn, rcv, credit=10, accept=False)
        assert sorted(m.body for m in got) == ["a1", "n1", "n2"], [m.body for m in got]
        a1 = next(d for m, d in zip(got, rcv.fetcher.unsettled) if m.body == "a1")
        for d in list(rcv.fetcher.unsettled):
            if d is not a1:
                accept_plainly(d)
        rcv.fetcher.unsettled.clear()
        nothing_more(conn, rcv, "a2 overtook a1")
        accept_plainly(a1)
        (m, d), = held(conn, rcv, 1)
        assert m.body == "a2"
        accept_plainly(d)
