"""Delivery semantics on the wire (SPEC §2-§3, docs/ADDRESSES.md): dead-letters,
redelivery limits, undeliverable-here, rcv-settle-mode second, expiry,
priorities, queue limits, max-message-size, address forms and options,
auto-create, browsing. Through proton.utils.BlockingConnection unless noted."""

import time

import pytest
from proton import Delivery, Link, Message, Terminus, int32, symbol
from proton.reactor import Copy
from proton.utils import LinkDetached

from helpers import (TIMEOUT, Capabilities, Handler, LinkProperties, RcvSettleSecond, annotation,
                     blocking, condition_of, drain_all, fetch_all, flush, run, send_for_outcome,
                     settle_modified, take, take_delivery)
from ordo_broker import DEFAULT_CONFIG

DLQ = "DLQ"
REASON = "x-opt-dead-letter-reason"
ORIGIN = "x-opt-original-address"


def config(extra):
    return DEFAULT_CONFIG + "\n" + extra


def fail_delivery(conn, dlv, undeliverable=False):
    """modified{delivery-failed}, on the wire before anything else."""
    settle_modified(dlv, failed=True, undeliverable=undeliverable)
    flush(conn)


# ---------------------------------------------------------------------------
# Dead-lettering


def test_rejected_message_goes_to_dlq_with_reason_and_original_address(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        snd.send(Message(body="bad", subject="s", correlation_id="c-1",
                         properties={"k": 7}, annotations={symbol("x-custom"): "kept"}))
        snd.send(Message(body="good"))
        rcv = conn.create_receiver(queue, credit=0)
        rcv.link.flow(1)
        assert take(conn, rcv, 1)[0].body == "bad"
        rcv.reject()
        flush(conn)
        rcv.link.flow(1)
        assert [(m.body, m.delivery_count) for m in take(conn, rcv, 1)] == [("good", 0)]
        rcv.accept()
        assert drain_all(conn, rcv) == []
    dead = fetch_all(broker.url, DLQ)
    assert len(dead) == 1, [m.body for m in dead]
    m = dead[0]
    assert (m.body, m.subject, m.correlation_id, m.properties) == ("bad", "s", "c-1", {"k": 7})
    assert annotation(m, REASON) == "rejected"
    assert annotation(m, ORIGIN) == queue
    assert annotation(m, "x-custom") == "kept", "the dead-lettered message lost its annotations"


MDA_CONFIG = config("""
[[queues]]
pattern = "mda.#"
max-delivery-attempts = 3

[[queues]]
pattern = "mdadl.#"
max-delivery-attempts = 2
dead-letter-address = "mdadl-dead"
""")


def fail_until_dead_lettered(conn, address, attempts):
    """Receives the head message `attempts` times, each time with
    modified{delivery-failed}; checks delivery-count and first-acquirer of each
    delivery; then the next message must be 'next'."""
    rcv = conn.create_receiver(address, credit=0)
    for attempt in range(attempts):
        rcv.link.flow(1)
        m, dlv = take_delivery(conn, rcv)
        assert (m.body, m.delivery_count, m.first_acquirer) == ("poison", attempt, attempt == 0), \
            f"delivery {attempt + 1}"
        fail_delivery(conn, dlv)
    rcv.link.flow(1)
    m, dlv = take_delivery(conn, rcv)
    assert (m.body, m.delivery_count) == ("next", 0), \
        f"after {attempts} failed deliveries the poison message should be gone, got {m.body!r}"
    dlv.update(Delivery.ACCEPTED)
    dlv.settle()
    assert drain_all(conn, rcv) == []


@pytest.mark.parametrize("where", ["config", "config-dead-letter-address", "default-10"])
def test_max_delivery_attempts_dead_letters(where, make_broker, queue):
    broker = make_broker(MDA_CONFIG)
    address, attempts, dla = {
        "config": (f"mda.{queue}", 3, DLQ),
        "config-dead-letter-address": (f"mdadl.{queue}", 2, "mdadl-dead"),
        "default-10": (queue, 10, DLQ),
    }[where]
    with blocking(broker.url) as conn:
        snd = conn.create_sender(address)
        snd.send(Message(body="poison", annotations={symbol("x-custom"): 1}))
        snd.send(Message(body="next"))
        fail_until_dead_lettered(conn, address, attempts)
    dead = fetch_all(broker.url, dla)
    assert [m.body for m in dead] == ["poison"]
    m = dead[0]
    assert annotation(m, REASON) == "max-delivery-attempts exceeded"
    assert annotation(m, ORIGIN) == address
    assert annotation(m, "x-custom") == 1
    assert m.delivery_count == attempts, "the header should carry the delivery count reached"


def test_unsettled_at_detach_counts_toward_max_delivery_attempts(make_broker, queue):
    """A delivery still unsettled when its link detaches comes back with
    delivery-count + 1 (SPEC §3), so it counts toward max-delivery-attempts."""
    broker = make_broker(MDA_CONFIG)
    address = f"mda.{queue}"
    with blocking(broker.url) as conn:
        conn.create_sender(address).send(Message(body="poison"))
        for attempt in range(3):
            rcv = conn.create_receiver(address, credit=0, name=f"r{attempt}")
            rcv.link.flow(1)
            m = take(conn, rcv, 1)[0]
            assert (m.body, m.delivery_count) == ("poison", attempt)
            rcv.close()  # detach with it unsettled
        rcv = conn.create_receiver(address, credit=0, name="last")
        assert drain_all(conn, rcv) == [], "dead-lettered after 3 attempts"
    dead = fetch_all(broker.url, DLQ)
    assert [(m.body, m.delivery_count) for m in dead] == [("poison", 3)]
    assert annotation(dead[0], REASON) == "max-delivery-attempts exceeded"


@pytest.mark.parametrize("how", ["rejected", "max-delivery-attempts"])
def test_dead_lettered_from_the_dlq_is_not_lost(how, broker, queue):
    """The DLQ's own dead-letter address is DLQ (the default). A message a DLQ
    consumer rejects, or fails once more past max-delivery-attempts, is
    dead-lettered to DLQ: it must still be there (SPEC §2: "so dead-lettering
    never loses a message")."""
    with blocking(broker.url) as conn:
        conn.create_sender(queue).send(Message(body="x"))
        rcv = conn.create_receiver(queue, credit=0)
        attempts = 1 if how == "rejected" else 10
        for _ in range(attempts):
            rcv.link.flow(1)
            _, dlv = take_delivery(conn, rcv)
            if how == "rejected":
                dlv.update(Delivery.REJECTED)
                dlv.settle()
                flush(conn)
            else:
                fail_delivery(conn, dlv)
        dlq = conn.create_receiver(DLQ, credit=0, name="dlq-consumer")
        dlq.link.flow(1)
        m, dlv = take_delivery(conn, dlq)
        assert m.body == "x"
        if how == "rejected":
            dlv.update(Delivery.REJECTED)
            dlv.settle()
            flush(conn)
        else:
            fail_delivery(conn, dlv)
        dlq.close()
    dead = fetch_all(broker.url, DLQ)
    assert [m.body for m in dead] == ["x"], \
        f"{how} from the DLQ (its own dead-letter address): the message is gone"


def test_max_delivery_attempts_option_at_auto_create(broker, queue):
    """queue.max-delivery-attempts and queue.dead-letter-address as address
    options of the attach that creates the queue."""
    dla = f"{queue}-dead"
    with blocking(broker.url) as conn:
        snd = conn.create_sender(
            f"{queue}?queue.max-delivery-attempts=2&queue.dead-letter-address={dla}")
        snd.send(Message(body="poison"))
        snd.send(Message(body="next"))
        fail_until_dead_lettered(conn, queue, 2)
    dead = fetch_all(broker.url, dla)
    assert [(m.body, m.delivery_count) for m in dead] == [("poison", 2)]
    assert annotation(dead[0], REASON) == "max-delivery-attempts exceeded"
    assert annotation(dead[0], ORIGIN) == queue
    assert fetch_all(broker.url, DLQ) == []


def test_max_delivery_attempts_zero_is_unlimited(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(f"{queue}?queue.max-delivery-attempts=0")
        snd.send(Message(body="again"))
        rcv = conn.create_receiver(queue, credit=0)
        for attempt in range(12):  # past the default of 10
            rcv.link.flow(1)
            m, dlv = take_delivery(conn, rcv)
            assert (m.body, m.delivery_count) == ("again", attempt)
            fail_delivery(conn, dlv)
        rcv.link.flow(1)
        m, dlv = take_delivery(conn, rcv)
        assert (m.body, m.delivery_count, m.first_acquirer) == ("again", 12, False)
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()
    assert fetch_all(broker.url, DLQ) == []


# ---------------------------------------------------------------------------
# Outcomes


@pytest.mark.parametrize("failed", [False, True], ids=["not-failed", "delivery-failed"])
def test_modified_undeliverable_here_goes_to_another_consumer(failed, broker, queue):
    with blocking(broker.url) as conn, blocking(broker.url) as other:
        snd = conn.create_sender(queue)
        for body in ["a", "b", "c"]:
            snd.send(Message(body=body))
        r1 = conn.create_receiver(queue, credit=0)
        r1.link.flow(1)
        m, dlv = take_delivery(conn, r1)
        assert m.body == "a"
        settle_modified(dlv, failed=failed, undeliverable=True)
        flush(conn)
        # r1 goes on with the others and never sees "a" again.
        r1.link.flow(5)
        got = take(conn, r1, 2)
        assert [(x.body, x.delivery_count) for x in got] == [("b", 0), ("c", 0)]
        r1.accept()
        r1.accept()
        assert drain_all(conn, r1) == [], "the link that said undeliverable-here got it again"
        # Another consumer gets it.
        r2 = other.create_receiver(queue, credit=0)
        r2.link.flow(1)
        m, dlv = take_delivery(other, r2)
        assert (m.body, m.delivery_count, m.first_acquirer) == ("a", 1 if failed else 0, False)
        # Released by r2, it still never goes to r1.
        dlv.update(Delivery.RELEASED)
        dlv.settle()
        flush(other)
        assert drain_all(conn, r1) == [], "released by another consumer, it went to r1 again"
        r2.link.flow(1)
        m, dlv = take_delivery(other, r2)
        assert m.body == "a"
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()


@pytest.mark.parametrize("mode", ["second", "first-unsettled-outcome"])
def test_broker_settles_the_consumers_outcome(mode, broker, queue):
    """rcv-settle-mode second: the consumer sends `accepted` unsettled, the
    broker settles it, then the consumer settles. (ADDRESSES.md: so does a
    consumer that sends an unsettled outcome in mode first.) What was accepted
    is never delivered again."""
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        for body in ["a", "b", "c"]:
            snd.send(Message(body=body))
        options = RcvSettleSecond() if mode == "second" else None
        rcv = conn.create_receiver(queue, credit=0, options=options)
        if mode == "second":
            assert rcv.link.remote_rcv_settle_mode == Link.RCV_SECOND, \
                "the broker's attach did not echo rcv-settle-mode second"
        rcv.link.flow(2)
        (ma, da), (mb, db) = take_delivery(conn, rcv), take_delivery(conn, rcv)
        assert (ma.body, mb.body) == ("a", "b")
        da.update(Delivery.ACCEPTED)  # not settled
        conn.wait(lambda: da.settled, msg="waiting for the broker to settle", timeout=TIMEOUT)
        assert da.remote_state == Delivery.ACCEPTED
        da.settle()
        assert not db.settled, "the broker settled a delivery the consumer had not decided on"
        rcv.close()  # b unsettled: it goes back
    with blocking(broker.url) as conn:
        rcv = conn.create_receiver(queue, credit=0)
        got = drain_all(conn, rcv)
        assert [(m.body, m.delivery_count) for m in got] == [("b", 1), ("c", 0)], \
            "an accepted message came back, or b did not"


class SettleSecondConsumer(Handler):
    """Container API: a consumer with rcv-settle-mode second that accepts
    each message unsettled and records when the broker settles it."""

    def __init__(self, url, queue, n):
        super().__init__(url, prefetch=0, auto_accept=False, auto_settle=True)
        self.queue, self.n = queue, n
        self.got, self.broker_settled = [], []

    def start(self, event):
        conn = self.connect()
        self.rcv = event.container.create_receiver(conn, self.queue, options=RcvSettleSecond())
        self.rcv.flow(self.n)

    def on_message(self, event):
        self.got.append(event.message.body)
        event.delivery.update(Delivery.ACCEPTED)

    def on_settled(self, event):  # the broker settled (auto_settle settles our side)
        self.broker_settled.append(event.delivery.remote_state)
        if len(self.broker_settled) == self.n:
            self.done()


def test_rcv_settle_second_container(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        for i in range(3):
            snd.send(Message(body=i))
    h = run(SettleSecondConsumer(broker.url, queue, 3))
    assert h.got == [0, 1, 2]
    assert h.rcv.remote_rcv_settle_mode == Link.RCV_SECOND
    assert h.broker_settled == [Delivery.ACCEPTED] * 3
    assert fetch_all(broker.url, queue) == []


def test_settled_without_outcome_counts_as_accepted(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        snd.send(Message(body="x"))
        rcv = conn.create_receiver(queue, credit=0)
        rcv.link.flow(1)
        _, dlv = take_delivery(conn, rcv)
        dlv.settle()  # no outcome
        rcv.close()
    assert fetch_all(broker.url, queue) == []
    assert fetch_all(broker.url, DLQ) == []


# ---------------------------------------------------------------------------
# Expiry


def test_ttl_expired_message_is_dropped(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        snd.send(Message(body="short", ttl=0.2))
        snd.send(Message(body="long", ttl=60))
        snd.send(Message(body="none"))
    time.sleep(0.3)  # just past the short TTL
    got = fetch_all(broker.url, queue)
    assert [m.body for m in got] == ["long", "none"]
    assert fetch_all(broker.url, DLQ) == []


def test_absolute_expiry_time(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        browser = conn.create_receiver(queue, credit=0, name="browser", options=Copy())
        now = time.time()
        for m in [Message(body="past", expiry_time=now - 10),
                  Message(body="soon", expiry_time=now + 0.5),
                  Message(body="later", expiry_time=now + 60),
                  # ttl and absolute-expiry-time: the sooner wins
                  Message(body="ttl-long-expiry-past", ttl=60, expiry_time=now - 10),
                  Message(body="ttl-short-expiry-later", ttl=0.5, expiry_time=now + 60)]:
            snd.send(m, error_states=[])
        sent = time.time()  # every TTL started before this
        # Right away only "past" and "ttl-long-expiry-past" are expired: a
        # browse (nothing acquired) checks.
        seen = [m.body for m in drain_all(conn, browser)]
        assert time.time() < now + 0.5, "too slow to check before the short expiries"
    assert seen == ["soon", "later", "ttl-short-expiry-later"]
    wait = sent + 0.6 - time.time()
    if wait > 0:
        time.sleep(wait)  # just past the short ones
    assert [m.body for m in fetch_all(broker.url, queue)] == ["later"]


EXPIRY_CONFIG = config("""
[[queues]]
pattern = "exp.#"
expiry-address = "expired"
""")


def test_expired_message_moves_to_expiry_address(make_broker, queue):
    broker = make_broker(EXPIRY_CONFIG)
    address = f"exp.{queue}"
    with blocking(broker.url) as conn:
        snd = conn.create_sender(address)
        snd.send(Message(body="mortal", ttl=0.2, properties={"k": 1},
                         annotations={symbol("x-custom"): "kept"}))
        snd.send(Message(body="keep"))
        # No consumer on the queue: the queue's own once-a-second check moves it.
        exp = conn.create_receiver("expired", credit=0)
        exp.link.flow(10)
        m, dlv = take_delivery(conn, exp, timeout=5)
        dlv.update(Delivery.ACCEPTED)
        dlv.settle()
        assert (m.body, m.properties) == ("mortal", {"k": 1})
        assert annotation(m, ORIGIN) == address
        assert annotation(m, "x-custom") == "kept"
        assert drain_all(conn, exp) == []
    assert [m.body for m in fetch_all(broker.url, address)] == ["keep"]
    assert fetch_all(broker.url, DLQ) == []


def test_message_returned_after_its_expiry_is_not_redelivered(make_broker, queue):
    """Taken before it expired, released after: it is expired now, so it
    goes to the expiry address instead of back to a consumer."""
    broker = make_broker(EXPIRY_CONFIG)
    address = f"exp.{queue}"
    with blocking(broker.url) as conn:
        conn.create_sender(address).send(Message(body="mortal", ttl=0.3))
        rcv = conn.create_receiver(address, credit=0)
        rcv.link.flow(1)
        _, dlv = take_delivery(conn, rcv)
        time.sleep(0.4)  # just past the TTL
        dlv.update(Delivery.RELEASED)
        dlv.settle()
        flush(conn)
        assert drain_all(conn, rcv) == [], "an expired message was delivered again"
        exp = conn.create_receiver("expired", credit=0)
        exp.link.flow(1)
        m = take(conn, exp, 1)[0]
        assert (m.body, annotation(m, ORIGIN)) == ("mortal", address)
        exp.accept()


# ---------------------------------------------------------------------------
# Priorities


def test_message_priority_higher_first_fifo_within(broker, queue):
    sent = [(4, "a"), (9, "b"), (0, "c"), (9, "d"), (None, "e"), (7, "f"), (200, "g"),
            (4, "h"), (0, "i")]
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        for prio, body in sent:
            m = Message(body=body)
            if prio is not None:
                m.priority = prio
            snd.send(m)
        rcv = conn.create_receiver(queue, credit=0)
        got = [m.body for m in drain_all(conn, rcv)]
    # 200 counts as 9; no priority means 4.
    assert got == ["b", "d", "g", "f", "a", "e", "h", "c", "i"]


PRIORITY_WAYS = {
    "link-property-int": dict(options=LinkProperties({"priority": int32(10)})),
    "link-property-long": dict(options=LinkProperties({"priority": 10})),
    "link-property-rabbitmq": dict(options=LinkProperties({"rabbitmq:priority": int32(10)})),
    "option-consumer.priority": dict(suffix="?consumer.priority=10"),
    "option-consumer-priority": dict(suffix="?consumer-priority=10"),
    # "An address option wins over a link property."
    "option-wins-over-property": dict(suffix="?consumer.priority=10",
                                      options=LinkProperties({"priority": int32(-5)})),
}


@pytest.mark.parametrize("way", list(PRIORITY_WAYS))
def test_consumer_priority(way, broker, queue):
    """The higher-priority consumer (attached last) gets messages while it has
    credit; then the other one does."""
    w = PRIORITY_WAYS[way]
    with blocking(broker.url) as conn:
        low = conn.create_receiver(queue, credit=0, name="low")
        high = conn.create_receiver(queue + w.get("suffix", ""), credit=0, name="high",
                                    options=w.get("options"))
        low.link.flow(3)
        high.link.flow(3)
        flush(conn)
        snd = conn.create_sender(queue)
        for i in range(5):
            snd.send(Message(body=i))
        assert [m.body for m in take(conn, high, 3)] == [0, 1, 2]
        assert [m.body for m in take(conn, low, 2)] == [3, 4]


# ---------------------------------------------------------------------------
# Queue limits and message size


LIMITS_CONFIG = config("""
[[queues]]
pattern = "len.#"
max-length = 3
overflow = "reject"

[[queues]]
pattern = "bytes.#"
max-bytes = 1000

[[queues]]
pattern = "droplen.#"
max-length = 3
overflow = "drop-oldest"

[[queues]]
pattern = "dropbytes.#"
max-bytes = 1000
overflow = "drop-oldest"
""")

FULL = (Delivery.REJECTED, "amqp:resource-limit-exceeded")


def test_max_length_reject(make_broker, queue):
    broker = make_broker(LIMITS_CONFIG)
    address = f"len.{queue}"
    with blocking(broker.url) as conn:
        snd = conn.create_sender(address)
        for i in range(3):
            assert send_for_outcome(snd, Message(body=i))[0] == Delivery.ACCEPTED
        assert send_for_outcome(snd, Message(body=3))[:2] == FULL
        # Delivered and unsettled messages do not count: take one, unsettled.
        rcv = conn.create_receiver(address, credit=0)
        rcv.link.flow(1)
        assert take(conn, rcv, 1)[0].body == 0
        assert send_for_outcome(snd, Message(body=4))[0] == Delivery.ACCEPTED
        assert send_for_outcome(snd, Message(body=5))[:2] == FULL
        rcv.accept()
        assert [m.body for m in drain_all(conn, rcv)] == [1, 2, 4]


def test_max_bytes_reject(make_broker, queue):
    broker = make_broker(LIMITS_CONFIG)
    address = f"bytes.{queue}"
    with blocking(broker.url) as conn:
        snd = conn.create_sender(address)
        body = "x" * 400
        assert send_for_outcome(snd, Message(body=body, subject="0"))[0] == Delivery.ACCEPTED
        assert send_for_outcome(snd, Message(body=body, subject="1"))[0] == Delivery.ACCEPTED
        assert send_for_outcome(snd, Message(body=body, subject="2"))[:2] == FULL
        rcv = conn.create_receiver(address, credit=0)
        assert [m.subject for m in drain_all(conn, rcv)] == ["0", "1"]
        assert send_for_outcome(snd, Message(body=body, subject="3"))[0] == Delivery.ACCEPTED


@pytest.mark.parametrize("limit", ["droplen", "dropbytes", "option"])
def test_drop_oldest(limit, make_broker, queue):
    broker = make_broker(LIMITS_CONFIG)
    address = {"droplen": f"droplen.{queue}", "dropbytes": f"dropbytes.{queue}",
               "option": queue}[limit]
    target = address + ("?queue.max-length=2&queue.overflow=drop-oldest" if limit == "option" else "")
    with blocking(broker.url) as conn:
        snd = conn.create_sender(target)
        for i in range(5):
            assert send_for_outcome(snd, Message(body="x" * 400, subject=str(i)))[0] == Delivery.ACCEPTED
        rcv = conn.create_receiver(address, credit=0)
        got = [m.subject for m in drain_all(conn, rcv)]
    want = {"droplen": ["2", "3", "4"], "dropbytes": ["3", "4"], "option": ["3", "4"]}[limit]
    assert got == want
    assert fetch_all(broker.url, DLQ) == []


def test_dead_letters_are_never_refused_by_limits(make_broker, queue):
    """Every queue (DLQ included) holds at most 1 message with overflow
    reject, yet rejected messages all reach the DLQ."""
    broker = make_broker(config('[[queues]]\npattern = "#"\nmax-length = 1\n'))
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        rcv = conn.create_receiver(queue, credit=0)
        for i in range(3):
            assert send_for_outcome(snd, Message(body=i))[0] == Delivery.ACCEPTED
            rcv.link.flow(1)
            assert take(conn, rcv, 1)[0].body == i
            rcv.reject()
            flush(conn)
    assert [m.body for m in fetch_all(broker.url, DLQ)] == [0, 1, 2]


def test_drop_oldest_drops_the_oldest_not_the_highest_priority(make_broker, queue):
    """overflow drop-oldest "discards the oldest queued message" (CONFIG.md):
    the first to arrive, even when a later one of higher priority is at the
    head of the queue."""
    broker = make_broker(LIMITS_CONFIG)
    address = f"droplen.{queue}"  # max-length 3
    with blocking(broker.url) as conn:
        snd = conn.create_sender(address)
        for prio, body in [(0, "oldest"), (9, "urgent"), (4, "normal"), (4, "newest")]:
            m = Message(body=body)
            m.priority = prio
            assert send_for_outcome(snd, m)[0] == Delivery.ACCEPTED
        rcv = conn.create_receiver(address, credit=0)
        got = [m.body for m in drain_all(conn, rcv)]
    assert got == ["urgent", "normal", "newest"], \
        f"drop-oldest dropped the wrong message: {got}"


@pytest.mark.parametrize("size", [200 * 1024, 3 << 20], ids=["one-frame", "multi-frame"])
def test_oversized_message_rejected_link_stays_usable(size, make_broker, queue):
    limit = 64 * 1024
    broker = make_broker(config(f"[limits]\nmax-message-size = {limit}\n"))
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        assert send_for_outcome(snd, Message(body="before"))[0] == Delivery.ACCEPTED
        outcome, cond, desc = send_for_outcome(snd, Message(body=b"o" * size, inferred=True))
        assert (outcome, cond) == (Delivery.REJECTED, "amqp:link:message-size-exceeded"), (outcome, cond, desc)
        assert snd.link.state & Link.REMOTE_ACTIVE, "the producer's link was detached"
        assert send_for_outcome(snd, Message(body="after"))[0] == Delivery.ACCEPTED
        rcv = conn.create_receiver(queue, credit=0)
        assert [m.body for m in drain_all(conn, rcv)] == ["before", "after"]


# ---------------------------------------------------------------------------
# Addresses, capabilities, options, auto-create


def test_prefixed_addresses_name_the_same_queue(broker, queue):
    forms = [queue, f"queue://{queue}", f"/queues/{queue}"]
    with blocking(broker.url) as conn:
        for form in forms:
            conn.create_sender(form).send(Message(body=form))
        got = []
        for form in forms:  # one message through each form, in queue order
            rcv = conn.create_receiver(form, credit=0)
            rcv.link.flow(1)
            got.append(take(conn, rcv, 1)[0].body)
            rcv.accept()
            rcv.close()
        assert got == forms
        assert fetch_all(broker.url, f"queue://{queue}") == []


def test_queue_capability_means_competing_consumers(broker, queue):
    with blocking(broker.url) as conn:
        r1 = conn.create_receiver(queue, credit=0, name="r1", options=Capabilities("queue"))
        r2 = conn.create_receiver(queue, credit=0, name="r2", options=Capabilities("queue"))
        r1.link.flow(10)
        r2.link.flow(10)
        snd = conn.create_sender(queue, options=Capabilities("queue"))
        for i in range(4):
            snd.send(Message(body=i))
        conn.wait(lambda: r1.fetcher.has_message + r2.fetcher.has_message >= 4, timeout=TIMEOUT)
        got = drain_all(conn, r1) + drain_all(conn, r2)
        assert sorted(m.body for m in got) == [0, 1, 2, 3], "each message once, to one consumer"


@pytest.mark.parametrize("role", ["receiver", "sender"])
def test_unknown_option_refused_naming_it(role, broker, queue):
    with blocking(broker.url) as conn:
        for address, name in [(f"{queue}?consumer.priority=1&nonsense=2", "nonsense"),
                              (f"{queue}?queue.no-such-setting=1", "no-such-setting"),
                              (f"topic://{queue}-t?bogus=1", "bogus")]:
            with pytest.raises(LinkDetached) as exc:
                if role == "receiver":
                    conn.create_receiver(address)
                else:
                    conn.create_sender(address)
            assert exc.value.condition == "amqp:invalid-field", str(exc.value)
            # (str(exc.value) holds the address: look at the description.)
            desc = exc.value.link.remote_condition.description or ""
            assert name in desc, f"the refusal does not name {name}: {desc!r}"


@pytest.mark.parametrize("role", ["receiver", "sender"])
def test_queue_option_mismatch_is_precondition_failed(role, broker, queue):
    def attach(address):
        return conn.create_receiver(address) if role == "receiver" else conn.create_sender(address)

    with blocking(broker.url) as conn:
        attach(f"{queue}?queue.max-delivery-attempts=2&queue.max-length=5")  # creates it
        with pytest.raises(LinkDetached) as exc:
            attach(f"{queue}?queue.max-delivery-attempts=4")
        assert exc.value.condition == "amqp:precondition-failed", str(exc.value)
        with pytest.raises(LinkDetached) as exc:
            attach(f"{queue}?queue.max-length=6")
        assert exc.value.condition == "amqp:precondition-failed", str(exc.value)
        # The same values, or none, are fine.
        attach(f"{queue}?queue.max-delivery-attempts=2")
        attach(f"{queue}?queue.max-length=5&queue.max-delivery-attempts=2")
        attach(queue)
    # The settings the creating attach gave are in force: max-length 5.
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        outcomes = [send_for_outcome(snd, Message(body=i))[:2] for i in range(6)]
        assert outcomes == [(Delivery.ACCEPTED, None)] * 5 + [FULL]


def test_queue_option_checked_against_config_settings(make_broker, queue):
    """A queue created with its [[queues]] settings (max-delivery-attempts 3):
    an option repeating them is fine, one with another value (even the
    built-in default 10) is refused."""
    broker = make_broker(MDA_CONFIG)
    address = f"mda.{queue}"
    with blocking(broker.url) as conn:
        conn.create_receiver(address, name="creator")
        conn.create_receiver(f"{address}?queue.max-delivery-attempts=3", name="same")
        with pytest.raises(LinkDetached) as exc:
            conn.create_receiver(f"{address}?queue.max-delivery-attempts=10", name="default")
        assert exc.value.condition == "amqp:precondition-failed", str(exc.value)


NO_AUTO_CREATE = config("""
[broker]
auto-create = false

[[queues]]
pattern = "orders"
dead-letter-address = "orders-dead"
expiry-address = "orders-expired"
""")


def test_auto_create_off(make_broker, queue):
    broker = make_broker(NO_AUTO_CREATE)
    with blocking(broker.url) as conn:
        for address in [queue, f"queue://{queue}", f"topic://{queue}", f"/queues/{queue}"]:
            for role in ["receiver", "sender"]:
                with pytest.raises(LinkDetached) as exc:
                    if role == "receiver":
                        conn.create_receiver(address)
                    else:
                        conn.create_sender(address)
                assert exc.value.condition == "amqp:not-found", f"{role} {address}: {exc.value}"
        # The dead-letter and expiry addresses exist.
        for address in [DLQ, "orders-dead", "orders-expired"]:
            snd = conn.create_sender(address)
            assert send_for_outcome(snd, Message(body=address))[0] == Delivery.ACCEPTED
            rcv = conn.create_receiver(address, credit=0)
            assert [m.body for m in drain_all(conn, rcv)] == [address]


# ---------------------------------------------------------------------------
# Browsing


def test_browse_with_copy_leaves_messages(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        for i in range(3):
            snd.send(Message(body=i))
        browser = conn.create_receiver(queue, credit=0, name="browser", options=Copy())
        assert browser.link.remote_source.distribution_mode == Terminus.DIST_MODE_COPY, \
            "the broker's source does not say copy"
        browser.link.flow(10)
        seen = []
        for _ in range(3):
            m, dlv = take_delivery(conn, browser)
            assert dlv.settled, "browsed deliveries should be pre-settled"
            seen.append((m.body, m.delivery_count))
        assert seen == [(0, 0), (1, 0), (2, 0)]
        snd.send(Message(body=3))  # a new message is shown too
        m, dlv = take_delivery(conn, browser)
        assert (m.body, dlv.settled) == (3, True)
        browser.close()
        # A second browser sees them all again.
        b2 = conn.create_receiver(queue, credit=0, name="browser2", options=Copy())
        assert [m.body for m in drain_all(conn, b2)] == [0, 1, 2, 3]
        rcv = conn.create_receiver(queue, credit=0)
        got = drain_all(conn, rcv)
        assert [(m.body, m.delivery_count, m.first_acquirer) for m in got] == \
            [(i, 0, True) for i in range(4)]
