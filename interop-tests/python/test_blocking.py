"""Queues through proton.utils.BlockingConnection (the synchronous API)."""

import os

import pytest
from proton import Delivery, Link, Message
from proton.reactor import AtLeastOnce, AtMostOnce
from proton.utils import LinkDetached, SendException

from helpers import TIMEOUT, Subprocess, blocking, flush, settle_modified
from ordo_broker import DEFAULT_CONFIG

N = 1000


def drain_nothing_left(conn, rcv, credit=10):
    """Drain `rcv` and check that the queue had nothing more for it."""
    before = rcv.fetcher.has_message
    rcv.link.drain(credit)
    conn.wait(lambda: not rcv.link.draining(), msg="draining", timeout=TIMEOUT)
    assert rcv.link.credit == 0
    assert rcv.fetcher.has_message == before, "drain brought more messages"


@pytest.mark.parametrize("snd_mode", ["unsettled", "presettled"])
@pytest.mark.parametrize("rcv_mode", ["unsettled", "presettled"])
def test_send_receive_1000_in_order(snd_mode, rcv_mode, broker, queue):
    snd_opts = AtMostOnce() if snd_mode == "presettled" else AtLeastOnce()
    rcv_opts = AtMostOnce() if rcv_mode == "presettled" else AtLeastOnce()
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue, options=snd_opts)
        want_snd = Link.SND_SETTLED if snd_mode == "presettled" else Link.SND_UNSETTLED
        assert snd.link.remote_snd_settle_mode == want_snd
        for i in range(N):
            snd.send(Message(body=i, properties={"seq": i}))
    with blocking(broker.url) as conn:
        rcv = conn.create_receiver(queue, credit=100, options=rcv_opts)
        if rcv_mode == "presettled":
            assert rcv.link.remote_snd_settle_mode == Link.SND_SETTLED
        for i in range(N):
            m = rcv.receive(timeout=TIMEOUT)
            assert (m.body, m.properties["seq"]) == (i, i)
            assert m.delivery_count == 0
            if rcv_mode == "unsettled":
                rcv.accept()
        if rcv_mode == "presettled":
            assert not rcv.fetcher.unsettled, "pre-settled link delivered unsettled transfers"
        drain_nothing_left(conn, rcv)
    # Accepted (or pre-settled) messages are gone for good.
    with blocking(broker.url) as conn:
        drain_nothing_left(conn, conn.create_receiver(queue, credit=0))


def test_same_connection_sender_and_receiver_share_a_link_name(broker, queue):
    """BlockingConnection names a sender and a receiver of one address alike."""
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        rcv = conn.create_receiver(queue)
        assert snd.link.name == rcv.link.name
        for i in range(20):
            snd.send(Message(body=f"m{i}"))
            m = rcv.receive(timeout=TIMEOUT)
            assert m.body == f"m{i}"
            rcv.accept()


@pytest.mark.parametrize("size", [1 << 20, 10 << 20], ids=["1MiB", "10MiB"])
def test_large_message(size, broker, queue):
    body = os.urandom(size)
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        snd.send(Message(body=body, inferred=True, properties={"size": size}))
        snd.send(Message(body="after"))
        rcv = conn.create_receiver(queue)
        m = rcv.receive(timeout=TIMEOUT)
        assert m.properties["size"] == size
        assert len(m.body) == size and m.body == body
        rcv.accept()
        assert rcv.receive(timeout=TIMEOUT).body == "after"
        rcv.accept()


def test_release_puts_message_back_first_in_line(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        for body in ["a", "b", "c"]:
            snd.send(Message(body=body))
        rcv = conn.create_receiver(queue)  # one credit per receive()
        m = rcv.receive(timeout=TIMEOUT)
        assert (m.body, m.delivery_count, m.first_acquirer) == ("a", 0, True)
        rcv.release(delivered=False)  # `released`
        flush(conn)
        m = rcv.receive(timeout=TIMEOUT)
        assert m.body == "a", "released message was not redelivered first"
        assert m.delivery_count == 0, "released must not count as a delivery attempt"
        assert m.first_acquirer is False
        rcv.accept()
        for body in ["b", "c"]:
            m = rcv.receive(timeout=TIMEOUT)
            assert (m.body, m.delivery_count) == (body, 0)
            rcv.accept()
        drain_nothing_left(conn, rcv)


def test_modified_delivery_failed_increments_delivery_count(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        for body in ["a", "b"]:
            snd.send(Message(body=body))
        rcv = conn.create_receiver(queue)
        for attempt in range(3):
            m = rcv.receive(timeout=TIMEOUT)
            assert (m.body, m.delivery_count) == ("a", attempt)
            settle_modified(rcv.fetcher.unsettled.popleft(), failed=True)
            flush(conn)
        m = rcv.receive(timeout=TIMEOUT)
        assert (m.body, m.delivery_count) == ("a", 3)
        # proton's release() default: modified without delivery-failed, which
        # must not count as a failed attempt.
        rcv.release()
        flush(conn)
        m = rcv.receive(timeout=TIMEOUT)
        assert (m.body, m.delivery_count) == ("a", 3)
        rcv.accept()
        m = rcv.receive(timeout=TIMEOUT)
        assert (m.body, m.delivery_count) == ("b", 0)
        rcv.accept()


def test_rejected_message_is_not_redelivered(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        for body in ["bad", "good"]:
            snd.send(Message(body=body))
        rcv = conn.create_receiver(queue)
        assert rcv.receive(timeout=TIMEOUT).body == "bad"
        rcv.reject()
        flush(conn)
        m = rcv.receive(timeout=TIMEOUT)
        assert (m.body, m.delivery_count) == ("good", 0)
        rcv.accept()
        drain_nothing_left(conn, rcv)


def test_competing_consumers_share_the_queue(broker, queue):
    with blocking(broker.url) as c1, blocking(broker.url) as c2:
        r1 = c1.create_receiver(queue, credit=0)
        r2 = c2.create_receiver(queue, credit=0)
        snd = c1.create_sender(queue)
        for i in range(10):
            snd.send(Message(body=i))
        got1 = [r1.receive(timeout=TIMEOUT).body for _ in range(5)]
        got2 = [r2.receive(timeout=TIMEOUT).body for _ in range(5)]
        for r in (r1, r1, r1, r1, r1, r2, r2, r2, r2, r2):
            r.accept()
        assert sorted(got1 + got2) == list(range(10))
        assert got1 == sorted(got1) and got2 == sorted(got2)


@pytest.mark.parametrize("mode", ["blocking", "container"])
def test_consumer_crash_returns_unsettled_messages_in_order(mode, broker, queue):
    """A consumer process holding 5 unsettled messages is killed; a new
    consumer gets all 8 queued messages in the original order, the 5 returned
    ones with delivery_count 1. `mode` is the API the doomed consumer used."""
    held, total = 5, 8
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        for i in range(total):
            snd.send(Message(body=f"m{i}"))
    consumer = Subprocess([mode, broker.url, queue, str(held)])
    ready = consumer.read_line().split()
    assert ready[0] == "ready" and ready[2:] == [f"m{i}" for i in range(held)], ready
    container_id = ready[1]
    consumer.kill()  # SIGKILL: the kernel drops the socket, no detach, no close
    # The broker logs the end of the connection once its deliveries went back.
    broker.wait_for_log(f'connection ended container="{container_id}"')
    with blocking(broker.url) as conn:
        rcv = conn.create_receiver(queue, credit=total)
        for i in range(total):
            m = rcv.receive(timeout=TIMEOUT)
            want_count = 1 if i < held else 0
            assert (m.body, m.delivery_count) == (f"m{i}", want_count), \
                f"position {i}: got {m.body} with delivery_count {m.delivery_count}"
            if i < held:
                assert m.first_acquirer is False
            rcv.accept()
        drain_nothing_left(conn, rcv)


def test_receiver_closed_with_unsettled_returns_them_in_order(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        for i in range(4):
            snd.send(Message(body=i))
        r1 = conn.create_receiver(queue, credit=0)
        assert [r1.receive(timeout=TIMEOUT).body for _ in range(2)] == [0, 1]
        r1.close()  # detach with 2 unsettled
        r2 = conn.create_receiver(queue, credit=4)
        got = [r2.receive(timeout=TIMEOUT) for _ in range(4)]
        assert [(m.body, m.delivery_count) for m in got] == [(0, 1), (1, 1), (2, 0), (3, 0)]


@pytest.mark.parametrize("role", ["receiver", "sender"])
def test_unknown_address_option_is_refused(role, broker, queue):
    with blocking(broker.url) as conn:
        with pytest.raises(LinkDetached) as exc:
            if role == "receiver":
                conn.create_receiver(f"{queue}?bogus=1")
            else:
                conn.create_sender(f"{queue}?bogus=1")
        assert exc.value.condition == "amqp:invalid-field", str(exc.value)
        assert "bogus" in str(exc.value), f"the refusal does not name the option: {exc.value}"
        # The connection survives the refusal.
        snd = conn.create_sender(queue)
        snd.send(Message(body="still fine"))


def test_accepted_option_prefetch_size_is_ignored(broker, queue):
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        snd.send(Message(body="x"))
        rcv = conn.create_receiver(f"{queue}?consumer.prefetchSize=10")
        assert rcv.receive(timeout=TIMEOUT).body == "x"
        rcv.accept()



def test_message_over_max_message_size_is_refused(make_broker, queue):
    """Over [limits] max-message-size the transfer is refused (AMQP: link
    error amqp:link:message-size-exceeded; SPEC §3 also allows `rejected`);
    nothing reaches the queue and the connection stays usable."""
    limit = 1 << 20
    broker = make_broker(DEFAULT_CONFIG + f"\n[limits]\nmax-message-size = {limit}\n")
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        assert snd.link.remote_max_message_size == limit
        snd.send(Message(body=b"u" * (limit - 1024), inferred=True))  # under: fine
        try:
            snd.send(Message(body=b"o" * (2 * limit), inferred=True))
        except LinkDetached as e:
            assert e.condition == "amqp:link:message-size-exceeded", str(e)
        except SendException as e:
            assert e.state == Delivery.REJECTED, e.state
        else:
            raise AssertionError("a message over max-message-size was accepted")
        rcv = conn.create_receiver(queue, credit=2)
        m = rcv.receive(timeout=TIMEOUT)
        assert m.body[:1] == b"u" and len(m.body) == limit - 1024
        rcv.accept()
        drain_nothing_left(conn, rcv)
