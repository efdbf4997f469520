"""Exclusive consumers and message groups on the wire (docs/GROUPS.md):
failover with in-flight messages, priority takeover, the exclusive address
options and queue setting, groups spread over consumers, a group owner's
crash, closing a group, JMSXGroupID, group filters and Service Bus session
filters. Through proton.utils.BlockingConnection; the consumers that crash
are processes (crash_consumer.py) using the blocking or the container API.

Proton does not expose the properties of a flow frame, so the `active` flag
exclusive consumers are sent is checked in js/test/groups.test.js only."""

import contextlib
import json

import pytest
from proton import Message, int32, symbol
from proton.reactor import Filter
from proton.utils import LinkDetached

from helpers import (LinkProperties, Subprocess, annotation, blocking, drain_all, flush,
                     remote_filter, round_trip, settle_modified, take, take_delivery)

EXCLUSIVE = "exclusive-consumer"
FIRST = "x-opt-group-first-for-consumer"
SESSION = "com.microsoft:session-filter"


def exclusive(priority=None):
    props = {EXCLUSIVE: True}
    if priority is not None:
        props["priority"] = int32(priority)
    return LinkProperties(props)


def echoed_exclusive(rcv):
    """`exclusive-consumer` in the link properties of the broker's attach."""
    return (rcv.link.remote_properties or {}).get(symbol(EXCLUSIVE))


def accept_all(rcv):
    while rcv.fetcher.unsettled:
        rcv.accept()


def first_flag(m):
    return annotation(m, FIRST)


def send(snd, *messages):
    for m in messages:
        snd.send(m)


@contextlib.contextmanager
def killed_at_exit(proc):
    try:
        yield proc
    finally:
        proc.kill()


# ---------------------------------------------------------------------------
# Exclusive consumers


@pytest.mark.parametrize("mode", ["blocking", "container"])
def test_exclusive_failover_gives_the_standby_everything_in_order(mode, broker, queue):
    """The active exclusive consumer (a process, attached first) holds 5
    unsettled of 8 messages and has no credit left; the standby, with credit,
    gets nothing (its drain completes empty). The active one is killed: the
    standby gets all 8 in order, the 5 with delivery-count 1."""
    held, total = 5, 8
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        send(snd, *(Message(body=f"m{i}") for i in range(total)))
    proc = Subprocess([mode, broker.url, queue, str(held), "--property", f"{EXCLUSIVE}=true"])
    with killed_at_exit(proc):
        what, props = proc.read_line().split(" ", 1)
        assert (what, json.loads(props)) == ("attached", {EXCLUSIVE: True}), \
            "the broker's attach should echo exclusive-consumer = true"
        ready = proc.read_line().split()
        assert ready[0] == "ready" and ready[2:] == [f"m{i}" for i in range(held)], ready
        with blocking(broker.url) as conn:
            standby = conn.create_receiver(queue, credit=0, name="standby", options=exclusive())
            assert echoed_exclusive(standby) is True
            assert drain_all(conn, standby, credit=10) == [], "a standby consumer got messages"
            standby.link.flow(total)
            round_trip(conn, queue)
            proc.kill()  # SIGKILL: no detach, no close
            broker.wait_for_log(f'connection ended container="{ready[1]}"')
            got = take(conn, standby, total)
            assert [(m.body, m.delivery_count, m.first_acquirer) for m in got] == \
                [(f"m{i}", 1 if i < held else 0, i >= held) for i in range(total)]
            accept_all(standby)
            assert drain_all(conn, standby) == []


def test_priority_takeover_waits_for_the_active_consumers_unsettled(broker, queue):
    """The active consumer (priority 0) holds 2 unsettled messages; an
    exclusive consumer of priority 5 attaches with credit. Nobody gets
    anything (not even the old one given credit) until the old one settled
    both; then the newcomer gets the rest in order and the old one nothing."""
    with blocking(broker.url) as ca, blocking(broker.url) as cb:
        snd = ca.create_sender(queue, name="producer")
        send(snd, *(Message(body=f"m{i}") for i in range(6)))
        low = ca.create_receiver(queue, credit=0, name="low", options=exclusive(0))
        assert echoed_exclusive(low) is True
        low.link.flow(2)
        assert [m.body for m in take(ca, low, 2)] == ["m0", "m1"]

        high = cb.create_receiver(queue, credit=10, name="high", options=exclusive(5))
        assert echoed_exclusive(high) is True
        round_trip(cb, queue)
        assert drain_all(cb, high, credit=10) == [], "the newcomer got messages before the takeover"
        assert drain_all(ca, low, credit=4) == [], "the old consumer got messages during the takeover"

        low.accept()  # m0; m1 is still out
        round_trip(ca, queue)
        assert drain_all(cb, high, credit=10) == [], "switched with a delivery still unsettled"
        assert drain_all(ca, low, credit=4) == []

        high.link.flow(10)
        round_trip(cb, queue)
        low.accept()  # m1: nothing unsettled, the newcomer takes over
        flush(ca)  # (waiting on cb below does not service ca)
        got = take(cb, high, 4)
        assert [(m.body, m.delivery_count) for m in got] == [(f"m{i}", 0) for i in range(2, 6)]
        accept_all(high)
        snd.send(Message(body="m6"))
        assert [m.body for m in take(cb, high, 1)] == ["m6"]
        accept_all(high)
        assert drain_all(ca, low, credit=10) == [], "the old consumer got messages after the takeover"


def test_exclusive_and_priority_by_address_options(broker, queue):
    """`?consumer.exclusive=true&consumer.priority=3` is an exclusive consumer
    of priority 3: it wins over an exclusive one of priority 2 attached
    earlier; a consumer that did not ask gets nothing while an exclusive one
    is attached, and competes normally once none is left."""
    with blocking(broker.url) as conn:
        low = conn.create_receiver(queue, credit=0, name="low", options=exclusive(2))
        opt = conn.create_receiver(f"{queue}?consumer.exclusive=true&consumer.priority=3",
                                   credit=0, name="opt")
        plain = conn.create_receiver(queue, credit=0, name="plain")
        assert echoed_exclusive(low) is True
        assert echoed_exclusive(opt) is True, "exclusivity by address option not echoed"
        assert echoed_exclusive(plain) is None, "a consumer that did not ask was made exclusive"
        for r in (low, opt, plain):
            r.link.flow(10)
        snd = conn.create_sender(queue, name="producer")
        send(snd, *(Message(body=f"m{i}") for i in range(4)))
        assert [m.body for m in take(conn, opt, 4)] == ["m0", "m1", "m2", "m3"]
        assert drain_all(conn, low) == []
        assert drain_all(conn, plain) == []

        opt.accept()
        opt.accept()
        opt.close()  # detach with m2, m3 unsettled: `low` is the active one now
        low.link.flow(10)
        got = take(conn, low, 2)
        assert [(m.body, m.delivery_count) for m in got] == [("m2", 1), ("m3", 1)]
        accept_all(low)
        assert drain_all(conn, plain) == []

        low.close()  # no exclusive consumer left
        plain.link.flow(10)
        send(snd, Message(body="m4"), Message(body="m5"))
        assert [(m.body, m.delivery_count) for m in take(conn, plain, 2)] == [("m4", 0), ("m5", 0)]
        accept_all(plain)


@pytest.mark.parametrize("setting", ["queue.exclusive", "queue.x-single-active-consumer"])
def test_queue_setting_makes_plain_consumers_exclusive(setting, broker, queue):
    """A queue created with `?queue.exclusive=true` (alias
    x-single-active-consumer): every consumer is exclusive, also one that
    attaches with the plain name."""
    with blocking(broker.url) as conn:
        first = conn.create_receiver(f"{queue}?{setting}=true", credit=0, name="first")
        second = conn.create_receiver(queue, credit=0, name="second")
        assert echoed_exclusive(first) is True
        assert echoed_exclusive(second) is True
        first.link.flow(10)
        second.link.flow(10)
        snd = conn.create_sender(queue, name="producer")
        send(snd, *(Message(body=f"m{i}") for i in range(5)))
        assert [m.body for m in take(conn, first, 5)] == [f"m{i}" for i in range(5)]
        assert drain_all(conn, second) == [], "a standby consumer got messages"
        for _ in range(3):
            first.accept()
        first.close()  # m3, m4 unsettled
        second.link.flow(10)
        got = take(conn, second, 2)
        assert [(m.body, m.delivery_count) for m in got] == [("m3", 1), ("m4", 1)]
        accept_all(second)
        assert drain_all(conn, second) == []


def test_exclusive_undeliverable_here_waits_at_the_head(broker, queue):
    """modified{undeliverable-here} from the active consumer leaves the
    message at the head of the queue: nothing overtakes it; it goes to the
    next consumer to become active, first."""
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue, name="producer")
        send(snd, *(Message(body=f"m{i}") for i in range(3)))
        a = conn.create_receiver(queue, credit=0, name="a", options=exclusive())
        b = conn.create_receiver(queue, credit=0, name="b", options=exclusive())
        a.link.flow(1)
        m, dlv = take_delivery(conn, a)
        assert m.body == "m0"
        settle_modified(dlv, failed=False, undeliverable=True)
        flush(conn)
        a.link.flow(5)
        b.link.flow(5)
        assert [m.body for m in drain_all(conn, a, credit=1)] == [], "messages overtook m0"
        assert drain_all(conn, b, credit=1) == []
        a.close()
        b.link.flow(5)
        assert [m.body for m in drain_all(conn, b, credit=1)] == ["m0", "m1", "m2"]


# ---------------------------------------------------------------------------
# Message groups


def test_thirty_groups_over_three_consumers(broker, queue):
    """3 consumers with credit, 30 groups x 10 messages (interleaved): each
    group goes to exactly one consumer, in order, 10 groups each; the first
    message of each group a consumer gets is annotated
    x-opt-group-first-for-consumer = true, the later ones are not. A fourth
    consumer attaching later gets only a new group."""
    groups, per_group = 30, 10
    total = groups * per_group
    with contextlib.ExitStack() as stack:
        conns = [stack.enter_context(blocking(broker.url)) for _ in range(3)]
        rcvs = []
        for conn in conns:
            rcv = conn.create_receiver(queue, credit=0)
            rcv.link.flow(total)
            round_trip(conn, queue)  # every consumer has credit before the first message
            rcvs.append(rcv)
        with blocking(broker.url) as pconn:
            snd = pconn.create_sender(queue)
            for i in range(per_group):
                for g in range(groups):
                    snd.send(Message(body=f"g{g}:{i}", group_id=f"g{g}", properties={"seq": i}))
        # Every message was dispatched before its producer got `accepted`: a
        # drain of each consumer brings what it was given.
        owner = {}
        for k, (conn, rcv) in enumerate(zip(conns, rcvs)):
            mine = {}
            for m in drain_all(conn, rcv, credit=1):
                g = m.group_id
                if g not in mine:
                    assert first_flag(m) is True, f"consumer {k}: first of {g} not annotated"
                else:
                    assert first_flag(m) is None, f"consumer {k}: {m.body} annotated as a first"
                mine.setdefault(g, []).append(m.properties["seq"])
                assert m.body == f"{g}:{m.properties['seq']}"
            for g, seqs in mine.items():
                assert seqs == list(range(per_group)), f"consumer {k}: group {g} got {seqs}"
                assert g not in owner, f"group {g} went to consumers {owner[g]} and {k}"
                owner[g] = k
            assert len(mine) == groups // 3, f"consumer {k} got {len(mine)} groups: {sorted(mine)}"
        assert sorted(owner) == sorted(f"g{g}" for g in range(groups))

        # A consumer attaching later takes no group from the others (no
        # rebalance), only a new group (it owns the fewest).
        late_conn = stack.enter_context(blocking(broker.url))
        late = late_conn.create_receiver(queue, credit=0)
        for conn, rcv in [*zip(conns, rcvs), (late_conn, late)]:
            rcv.link.flow(groups + 1)
            round_trip(conn, queue)
        with blocking(broker.url) as pconn:
            snd = pconn.create_sender(queue)
            for g in range(groups):
                snd.send(Message(body=f"g{g}:{per_group}", group_id=f"g{g}",
                                 properties={"seq": per_group}))
            snd.send(Message(body="new:0", group_id="new", properties={"seq": 0}))
        got = drain_all(late_conn, late, credit=1)
        assert [(m.body, first_flag(m)) for m in got] == [("new:0", True)]
        for k, (conn, rcv) in enumerate(zip(conns, rcvs)):
            got = drain_all(conn, rcv, credit=1)
            assert sorted(m.group_id for m in got) == sorted(g for g, o in owner.items() if o == k), \
                f"consumer {k} lost or gained groups"
            assert [first_flag(m) for m in got] == [None] * len(got)


@pytest.mark.parametrize("mode", ["blocking", "container"])
def test_group_owner_crash_moves_the_group(mode, broker, queue):
    """A consumer process owns group g and holds 3 unsettled of its 6
    messages (no credit left). Another consumer with credit gets none of g
    (other groups, yes). The owner is killed: the other one gets all 6 in
    order, the first annotated, delivery-count 1 for the 3 returned."""
    held, total = 3, 6
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue, name="producer")
        send(snd, *(Message(body=f"g{i}", group_id="g") for i in range(total)))
        proc = Subprocess([mode, broker.url, queue, str(held)])
        with killed_at_exit(proc):
            ready = proc.read_line().split()
            assert ready[0] == "ready" and ready[2:] == ["g0", "g1", "g2"], ready
            other = conn.create_receiver(queue, credit=0, name="other")
            assert drain_all(conn, other, credit=10) == [], "g went past its owner"
            other.link.flow(10)
            send(snd, Message(body="h0", group_id="h"), Message(body="h1", group_id="h"))
            got = take(conn, other, 2)
            assert [(m.body, first_flag(m)) for m in got] == [("h0", True), ("h1", None)]
            accept_all(other)
            proc.kill()
            broker.wait_for_log(f'connection ended container="{ready[1]}"')
            got = take(conn, other, total)
            assert [(m.body, m.delivery_count, first_flag(m)) for m in got] == \
                [(f"g{i}", 1 if i < held else 0, True if i == 0 else None) for i in range(total)]
            accept_all(other)
            assert drain_all(conn, other) == []


def grouped(way, body, seq):
    """A message of group "g", by `properties.group-id` or by the application
    property JMSXGroupID; seq -1 closes the group (group-sequence
    4294967295, or a negative JMSXGroupSeq)."""
    if way == "group-id":
        # Proton 0.37's binding takes group_sequence as an unsigned 32-bit
        # number (-1 raises OverflowError), so JMS's -1 is given as what it is
        # on the wire: uint 4294967295.
        return Message(body=body, group_id="g", group_sequence=seq & 0xFFFFFFFF)
    return Message(body=body, properties={"JMSXGroupID": "g", "JMSXGroupSeq": int32(seq)})


@pytest.mark.parametrize("way", ["group-id", "JMSXGroupID"])
def test_closing_message_releases_the_group_once_accepted(way, broker, queue):
    """The group's closing message (group-sequence -1 / JMSXGroupSeq -1)
    releases it once accepted: with its owner out of credit, the group's next
    message goes to another consumer instead of waiting."""
    with blocking(broker.url) as conn:
        a = conn.create_receiver(queue, credit=0, name="a")
        b = conn.create_receiver(queue, credit=0, name="b")
        a.link.flow(2)
        snd = conn.create_sender(queue, name="producer")
        send(snd, grouped(way, "g1", 1), grouped(way, "g2", -1))
        got = take(conn, a, 2)
        assert [(m.body, first_flag(m)) for m in got] == [("g1", True), ("g2", None)]
        if way == "group-id":
            assert [m.group_sequence for m in got] == [1, 0xFFFFFFFF], \
                "group-sequence not passed through"
        else:
            assert [m.properties["JMSXGroupSeq"] for m in got] == [1, -1]
        b.link.flow(10)
        snd.send(grouped(way, "g3", 1))
        assert drain_all(conn, b, credit=10) == [], "the group was released before its closing message was accepted"
        b.link.flow(10)
        a.accept()
        a.accept()  # the closing one
        got = take(conn, b, 1)
        assert [(m.body, first_flag(m)) for m in got] == [("g3", True)]
        accept_all(b)
        # The group is b's now, even with `a` given credit again.
        a.link.flow(10)
        snd.send(grouped(way, "g4", 2))
        assert [(m.body, first_flag(m)) for m in take(conn, b, 1)] == [("g4", None)]
        accept_all(b)
        assert drain_all(conn, a) == []


@pytest.mark.parametrize("prop", ["JMSXGroupID", "_AMQ_GROUP_ID"])
def test_group_by_application_property(prop, broker, queue):
    """The application property JMSXGroupID (or Artemis' _AMQ_GROUP_ID)
    groups messages like properties.group-id; group-id wins when both are
    set."""
    with blocking(broker.url) as conn:
        x = conn.create_receiver(queue, credit=0, name="x")
        y = conn.create_receiver(queue, credit=0, name="y")
        x.link.flow(20)
        y.link.flow(20)
        snd = conn.create_sender(queue, name="producer")
        for i in range(5):
            for g in "jk":
                snd.send(Message(body=f"{g}{i}", properties={prop: g}))
        snd.send(Message(body="j5", group_id="j", properties={prop: "k"}))
        got = [drain_all(conn, rcv, credit=1) for rcv in (x, y)]
        bodies = sorted(([m.body for m in ms] for ms in got), key=lambda b: b[0])
        assert bodies == [[f"j{i}" for i in range(6)], [f"k{i}" for i in range(5)]], bodies
        for ms in got:
            assert [first_flag(m) for m in ms] == [True] + [None] * (len(ms) - 1)


def test_group_filters(broker, queue):
    """Consumers of one group: link property `group-filter`, address option
    `consumer.group-filter`, source filter `com.microsoft:session-filter`.
    The same session twice is refused (`com.microsoft:session-cannot-be-
    locked`); a null session filter gets an unowned group with messages, named
    in the broker's attach, and when there is none is refused
    (`com.microsoft:timeout`)."""
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue, name="producer")
        for i in range(3):
            for g in "abcd":
                snd.send(Message(body=f"{g}{i}", group_id=g))
        ra = conn.create_receiver(queue, credit=10, name="ra",
                                  options=LinkProperties({"group-filter": "a"}))
        rb = conn.create_receiver(f"{queue}?consumer.group-filter=b", credit=10, name="rb")
        rc = conn.create_receiver(queue, credit=10, name="rc",
                                  options=Filter({symbol(SESSION): "c"}))
        for rcv, g in ((ra, "a"), (rb, "b"), (rc, "c")):
            got = drain_all(conn, rcv, credit=1)
            assert [m.body for m in got] == [f"{g}{i}" for i in range(3)], f"filter {g}"
            assert [first_flag(m) for m in got] == [True, None, None]

        with pytest.raises(LinkDetached) as exc:
            conn.create_receiver(queue, credit=10, name="rc2", options=Filter({symbol(SESSION): "c"}))
        assert exc.value.condition == "com.microsoft:session-cannot-be-locked", str(exc.value)

        rany = conn.create_receiver(queue, credit=10, name="rany",
                                    options=Filter({symbol(SESSION): None}))
        assert remote_filter(rany.link) == {symbol(SESSION): "d"}, \
            "the broker's attach should name the group it picked"
        got = drain_all(conn, rany, credit=1)
        assert [m.body for m in got] == ["d0", "d1", "d2"]

        with pytest.raises(LinkDetached) as exc:
            conn.create_receiver(queue, credit=10, name="rany2",
                                 options=Filter({symbol(SESSION): None}))
        assert exc.value.condition == "com.microsoft:timeout", str(exc.value)

        # The filtering consumers hold their groups: an ordinary consumer with
        # credit gets other groups only.
        plain = conn.create_receiver(queue, credit=10, name="plain")
        send(snd, Message(body="a3", group_id="a"), Message(body="e0", group_id="e"),
             Message(body="c3", group_id="c"))
        assert [m.body for m in drain_all(conn, plain, credit=1)] == ["e0"]
        assert [m.body for m in drain_all(conn, ra, credit=1)] == ["a3"]
        assert [m.body for m in drain_all(conn, rc, credit=1)] == ["c3"]
