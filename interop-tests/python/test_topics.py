"""Topics (SPEC §2, docs/ADDRESSES.md "Topics"): every subscriber gets a copy,
durable subscriptions keep what was published while the subscriber was away
and end with a closing detach. BlockingConnection."""

import pytest
from proton import Delivery, Message
from proton.reactor import Container, DurableSubscription

from helpers import (Capabilities, annotation, blocking, drain_all, fetch_all, flush,
                     send_for_outcome, take, take_delivery)
from ordo_broker import DEFAULT_CONFIG


def with_container_id(url, container_id):
    """A BlockingConnection whose Open carries `container_id`."""
    container = Container()
    container.container_id = container_id
    return blocking(url, container=container)


def publish(url, address, bodies, options=None):
    """Sends `bodies` to `address`; every one must be accepted."""
    with blocking(url) as conn:
        snd = conn.create_sender(address, options=options)
        for b in bodies:
            outcome = send_for_outcome(snd, Message(body=b))
            assert outcome[0] == Delivery.ACCEPTED, (b, outcome)


def subscribe(conn, address, n_credit, name=None, options=None):
    rcv = conn.create_receiver(address, credit=0, name=name, options=options)
    rcv.link.flow(n_credit)
    flush(conn)
    return rcv


def test_every_subscriber_gets_a_copy(broker, queue):
    topic = f"topic://{queue}"
    with blocking(broker.url) as c1, blocking(broker.url) as c2, blocking(broker.url) as c3:
        subs = [(c, subscribe(c, topic, 10)) for c in (c1, c2, c3)]
        publish(broker.url, topic, [f"m{i}" for i in range(5)])
        for c, rcv in subs:
            got = take(c, rcv, 5)
            assert [(m.body, m.delivery_count) for m in got] == [(f"m{i}", 0) for i in range(5)]
            for _ in got:
                rcv.accept()
        for c, rcv in subs:
            assert drain_all(c, rcv) == []


def test_message_without_subscribers_is_dropped(broker, queue):
    topic = f"topic://{queue}"
    publish(broker.url, topic, ["nobody"])  # accepted, and dropped
    with blocking(broker.url) as conn:
        rcv = subscribe(conn, topic, 0)
        assert drain_all(conn, rcv) == []
        publish(broker.url, topic, ["somebody"])
        rcv.link.flow(1)
        assert take(conn, rcv, 1)[0].body == "somebody"
        rcv.accept()


TOPIC_PATTERN_CONFIG = DEFAULT_CONFIG + """
[[topics]]
pattern = "news.#"
"""


@pytest.mark.parametrize("how", ["prefix", "capability", "existing-topic", "config-pattern"])
def test_plain_names_that_are_topics(how, make_broker, queue):
    """topic:// makes a topic; so does the `topic` capability on a plain name,
    a plain name of an existing topic, and a name matching [[topics]]."""
    broker = make_broker(TOPIC_PATTERN_CONFIG)
    name = f"news.{queue}" if how == "config-pattern" else queue
    sub_addr, pub_addr, options = {
        "prefix": (f"topic://{name}", f"topic://{name}", None),
        "capability": (name, name, Capabilities("topic")),
        "existing-topic": (name, name, None),
        "config-pattern": (name, name, None),
    }[how]
    with blocking(broker.url) as conn:
        if how == "existing-topic":
            subscribe(conn, f"topic://{name}", 0, name="creator")
        subs = [subscribe(conn, sub_addr, 10, name=f"s{i}", options=options) for i in range(2)]
        publish(broker.url, pub_addr, ["a", "b"], options=options)
        for rcv in subs:
            assert [m.body for m in take(conn, rcv, 2)] == ["a", "b"]
            rcv.accept()
            rcv.accept()


@pytest.mark.parametrize("away", ["link-detached", "connection-closed"])
def test_durable_subscription_keeps_messages_while_away(away, broker, queue):
    """A durable subscriber (DurableSubscription: durable=unsettled-state,
    expiry-policy never) with a fixed container-id and link name goes away
    (detach with closed=false, or a connection closed without detaching) and
    comes back to what was published meanwhile. Closing the link (closed=true)
    then removes the subscription."""
    topic = f"topic://{queue}"
    cid = f"{queue}-client"
    durable = DurableSubscription()
    with with_container_id(broker.url, cid) as conn:
        rcv = subscribe(conn, topic, 10, name="sub", options=durable)
        publish(broker.url, topic, ["p0"])
        assert take(conn, rcv, 1)[0].body == "p0"
        rcv.accept()
        flush(conn)
        if away == "link-detached":
            rcv.link.detach()  # closed=false, before the connection closes
        # else: the connection closes with the link attached
    publish(broker.url, topic, ["p1", "p2", "p3"])
    with with_container_id(broker.url, cid) as conn:
        rcv = conn.create_receiver(topic, credit=0, name="sub", options=durable)
        got = drain_all(conn, rcv)
        assert [(m.body, m.delivery_count) for m in got] == [("p1", 0), ("p2", 0), ("p3", 0)]
        rcv.close()  # closed=true: unsubscribe
    publish(broker.url, topic, ["p4"])  # no subscriber now: dropped
    with with_container_id(broker.url, cid) as conn:
        rcv = conn.create_receiver(topic, credit=0, name="sub", options=durable)
        assert drain_all(conn, rcv) == [], "the closed subscription kept its messages"
        rcv.close()


def test_durable_subscription_unsettled_messages_come_back(broker, queue):
    topic = f"topic://{queue}"
    cid = f"{queue}-client"
    with with_container_id(broker.url, cid) as conn:
        rcv = subscribe(conn, topic, 2, name="sub", options=DurableSubscription())
        publish(broker.url, topic, ["p0", "p1", "p2"])
        assert [m.body for m in take(conn, rcv, 2)] == ["p0", "p1"]  # not settled
    with with_container_id(broker.url, cid) as conn:
        rcv = conn.create_receiver(topic, credit=0, name="sub", options=DurableSubscription())
        got = drain_all(conn, rcv)
        assert [(m.body, m.delivery_count) for m in got] == [("p0", 1), ("p1", 1), ("p2", 0)]
        rcv.close()


def test_non_durable_subscription_ends_with_its_link(broker, queue):
    topic = f"topic://{queue}"
    cid = f"{queue}-client"
    with with_container_id(broker.url, cid) as conn:
        rcv = subscribe(conn, topic, 1, name="sub")
        publish(broker.url, topic, ["p0"])
        assert take(conn, rcv, 1)[0].body == "p0"
        rcv.accept()
    publish(broker.url, topic, ["while away"])
    with with_container_id(broker.url, cid) as conn:
        rcv = conn.create_receiver(topic, credit=0, name="sub")
        assert drain_all(conn, rcv) == [], "a non-durable subscription outlived its link"


def test_rejected_on_a_subscription_dead_letters_with_the_topic(broker, queue):
    topic = f"topic://{queue}"
    with blocking(broker.url) as conn:
        keep = subscribe(conn, topic, 1, name="keeper")
        rej = subscribe(conn, topic, 1, name="rejecter")
        publish(broker.url, topic, ["x"])
        _, dlv = take_delivery(conn, rej)
        dlv.update(Delivery.REJECTED)
        dlv.settle()
        assert take(conn, keep, 1)[0].body == "x"  # the other copy is unaffected
        keep.accept()
        flush(conn)
    dead = fetch_all(broker.url, "DLQ")
    assert [m.body for m in dead] == ["x"]
    assert annotation(dead[0], "x-opt-dead-letter-reason") == "rejected"
    assert annotation(dead[0], "x-opt-original-address") == queue


def test_other_container_id_is_another_subscription(broker, queue):
    """A durable subscription belongs to container-id + link name: the same
    link name from another container does not get its messages."""
    topic = f"topic://{queue}"
    with with_container_id(broker.url, f"{queue}-one") as conn:
        subscribe(conn, topic, 0, name="sub", options=DurableSubscription())
    publish(broker.url, topic, ["for one"])
    with with_container_id(broker.url, f"{queue}-two") as conn:
        rcv = conn.create_receiver(topic, credit=0, name="sub", options=DurableSubscription())
        assert drain_all(conn, rcv) == [], "another container's subscription was handed over"
        rcv.close()
    with with_container_id(broker.url, f"{queue}-one") as conn:
        rcv = conn.create_receiver(topic, credit=0, name="sub", options=DurableSubscription())
        assert [m.body for m in drain_all(conn, rcv)] == ["for one"]
        rcv.close()


def test_full_subscription_rejects_the_copy_others_keep_theirs(make_broker, queue):
    """Every queue, subscription queues included, holds 1 waiting message
    (overflow reject). A subscriber without credit fills up; the next
    publish is rejected with amqp:resource-limit-exceeded, and the subscriber
    with credit still gets its copy."""
    broker = make_broker(DEFAULT_CONFIG + '\n[[queues]]\npattern = "#"\nmax-length = 1\n')
    topic = f"topic://{queue}"
    with blocking(broker.url) as conn:
        busy = subscribe(conn, topic, 10, name="busy")
        idle = subscribe(conn, topic, 0, name="idle")
        snd = conn.create_sender(topic)
        assert send_for_outcome(snd, Message(body="m0"))[0] == Delivery.ACCEPTED
        outcome = send_for_outcome(snd, Message(body="m1"))
        assert outcome[:2] == (Delivery.REJECTED, "amqp:resource-limit-exceeded"), outcome
        assert [m.body for m in take(conn, busy, 2)] == ["m0", "m1"]
        busy.accept()
        busy.accept()
        assert [m.body for m in drain_all(conn, idle)] == ["m0"]


def test_same_name_on_another_topic_replaces_the_subscription(broker, queue):
    """ADDRESSES.md: "The same name on another topic replaces it"."""
    t1, t2 = f"topic://{queue}-1", f"topic://{queue}-2"
    cid = f"{queue}-client"
    with with_container_id(broker.url, cid) as conn:
        subscribe(conn, t1, 0, name="sub", options=DurableSubscription()).link.detach()
    publish(broker.url, t1, ["t1 while away"])
    with with_container_id(broker.url, cid) as conn:
        rcv = conn.create_receiver(t2, credit=0, name="sub", options=DurableSubscription())
        assert drain_all(conn, rcv) == [], "the subscription moved to t2 kept t1's messages"
        rcv.link.detach()
    publish(broker.url, t1, ["t1 later"])  # no subscriber on t1 any more: dropped
    publish(broker.url, t2, ["t2 later"])
    with with_container_id(broker.url, cid) as conn:
        rcv = conn.create_receiver(t2, credit=0, name="sub", options=DurableSubscription())
        assert [m.body for m in drain_all(conn, rcv)] == ["t2 later"]
        rcv.link.detach()
    # Back on t1: a new, empty subscription (the old one, which would hold
    # "t1 while away" and "t1 later", is gone).
    with with_container_id(broker.url, cid) as conn:
        rcv = conn.create_receiver(t1, credit=0, name="sub", options=DurableSubscription())
        assert drain_all(conn, rcv) == [], "the replaced t1 subscription survived"
        rcv.close()
