"""The store through Qpid Proton (SPEC §1, §3, §8; issue: durable store):
durable messages survive a broker crash (SIGKILL) and a clean restart, in
order, and nothing else does; what a consumer's settled `accepted` removed
never comes back; queue settings and durable subscriptions survive; a full
disk refuses durable messages with amqp:resource-limit-exceeded."""

import pytest
from proton import Delivery, Link, Message
from proton.reactor import Container, DurableSubscription
from proton.utils import BlockingConnection, LinkDetached

from helpers import (TIMEOUT, RcvSettleSecond, blocking, drain_all, fetch_all, flush,
                     send_for_outcome, take_delivery)
from ordo_broker import DEFAULT_CONFIG


def with_container_id(url, container_id):
    """A BlockingConnection whose Open carries `container_id`."""
    container = Container()
    container.container_id = container_id
    return blocking(url, container=container)


def send_all(url, address, messages):
    """Sends each message unsettled and waits for its outcome: accepted means
    stored (for a durable message, on disk)."""
    with blocking(url) as conn:
        snd = conn.create_sender(address)
        outcomes = [send_for_outcome(snd, m)[0] for m in messages]
    assert outcomes == [Delivery.ACCEPTED] * len(messages)


@pytest.mark.parametrize("crash", [True, False], ids=["kill-9", "sigterm"])
def test_durable_messages_survive_a_restart_in_order(crash, broker, queue):
    send_all(broker.url, queue, [Message(body=f"d{i}", durable=True) for i in range(5)]
             + [Message(body="transient", durable=False)])
    broker.restart(crash=crash)
    got = fetch_all(broker.url, queue)
    assert [m.body for m in got] == [f"d{i}" for i in range(5)]
    assert all(m.durable for m in got)
    # Any of them may have been seen before the restart.
    assert [m.first_acquirer for m in got] == [False] * 5
    broker.wait_for_log(r"store recovered .*messages=5")


def test_priority_order_and_delivery_count_survive(broker, queue):
    send_all(broker.url, queue, [Message(body="low", durable=True, priority=1),
                                 Message(body="high", durable=True, priority=9),
                                 Message(body="mid", durable=True, priority=4)])
    with blocking(broker.url) as conn:
        rcv = conn.create_receiver(queue, credit=0)
        rcv.link.flow(1)
        m, dlv = take_delivery(conn, rcv)
        assert m.body == "high"
        dlv.update(Delivery.MODIFIED)
        dlv.local.failed = True
        dlv.settle()
        rcv.close()
    broker.restart(crash=True)
    got = fetch_all(broker.url, queue)
    assert [(m.body, m.delivery_count) for m in got] == [("high", 1), ("mid", 0), ("low", 0)]


def test_what_the_broker_settled_as_accepted_never_comes_back(broker, queue):
    """rcv-settle-mode second: once the broker settles the consumer's
    `accepted`, the removal is on disk; a crash right after cannot bring the
    message back."""
    send_all(broker.url, queue, [Message(body=i, durable=True) for i in range(4)])
    conn = BlockingConnection(broker.url, timeout=TIMEOUT)
    try:
        rcv = conn.create_receiver(queue, credit=0, options=RcvSettleSecond())
        assert rcv.link.remote_rcv_settle_mode == Link.RCV_SECOND
        rcv.link.flow(2)
        (m0, d0), (m1, d1) = take_delivery(conn, rcv), take_delivery(conn, rcv)
        assert (m0.body, m1.body) == (0, 1)
        d0.update(Delivery.ACCEPTED)
        conn.wait(lambda: d0.settled, msg="waiting for the broker to settle", timeout=TIMEOUT)
        d0.settle()
        flush(conn)
        broker.kill()  # 1 is unsettled: it comes back, 0 must not
    finally:
        # The broker is gone: do not wait for its Close.
        conn.conn.close()
        conn.container.stop()
    broker.start()
    got = fetch_all(broker.url, queue)
    assert [m.body for m in got] == [1, 2, 3]
    assert got[0].first_acquirer is False


def test_queue_settings_from_address_options_survive(broker, queue):
    with blocking(broker.url) as conn:
        conn.create_sender(f"{queue}?queue.max-delivery-attempts=2")
    broker.restart(crash=True)
    with blocking(broker.url) as conn:
        # Same value: fine. A different one: the stored queue says otherwise.
        conn.create_sender(f"{queue}?queue.max-delivery-attempts=2")
    with blocking(broker.url) as conn:
        with pytest.raises(LinkDetached) as refused:
            conn.create_sender(f"{queue}?queue.max-delivery-attempts=5")
        assert "amqp:precondition-failed" in str(refused.value)


def test_durable_subscription_keeps_its_messages_across_a_crash(broker, queue):
    """A Qpid-JMS-style durable subscription (container-id + link name,
    durable=unsettled-state) is a stored queue: after a crash it is still
    subscribed to its topic and holds what was published while away."""
    topic = f"topic://{queue}"
    cid = f"{queue}-client"
    with with_container_id(broker.url, cid) as conn:
        rcv = conn.create_receiver(topic, credit=0, name="sub", options=DurableSubscription())
        rcv.link.detach()  # away, not unsubscribed
    send_all(broker.url, topic, [Message(body=f"t{i}", durable=True) for i in range(3)])
    broker.restart(crash=True)
    send_all(broker.url, topic, [Message(body="after", durable=True)])
    with with_container_id(broker.url, cid) as conn:
        rcv = conn.create_receiver(topic, credit=0, name="sub", options=DurableSubscription())
        assert [m.body for m in drain_all(conn, rcv)] == ["t0", "t1", "t2", "after"]
        rcv.close()  # closed=true: unsubscribed, and the store forgets it
    broker.restart(crash=True)
    with with_container_id(broker.url, cid) as conn:
        rcv = conn.create_receiver(topic, credit=0, name="sub", options=DurableSubscription())
        assert drain_all(conn, rcv) == []


def test_a_full_disk_refuses_durable_messages_only(make_broker, queue):
    # A free-space floor no disk meets (the RabbitMQ-style disk alarm).
    broker = make_broker(DEFAULT_CONFIG + "\n[store]\nmin-free-disk = 9223372036854775807\n")
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        outcome = send_for_outcome(snd, Message(body="d", durable=True))
        assert outcome[:2] == (Delivery.REJECTED, "amqp:resource-limit-exceeded")
        assert send_for_outcome(snd, Message(body="t"))[0] == Delivery.ACCEPTED
    assert [m.body for m in fetch_all(broker.url, queue)] == ["t"]
