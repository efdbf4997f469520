"""Dynamic nodes and the anonymous relay (SPEC §2, docs/ADDRESSES.md): a
request/response round trip through a dynamic reply queue and an
anonymous-relay sender, relaying to several addresses, and the relay's
refusals."""

import pytest
from proton import Delivery, Message

from helpers import (Handler, blocking, condition_of, drain_all, fetch_all, run, send_for_outcome,
                     take, take_delivery)
from ordo_broker import DEFAULT_CONFIG

NO_AUTO_CREATE = DEFAULT_CONFIG + """
[broker]
auto-create = false
"""

ACCEPTED = (Delivery.ACCEPTED, None)


def test_open_offers_anonymous_relay(broker):
    with blocking(broker.url) as conn:
        caps = conn.conn.remote_offered_capabilities or []
        assert "ANONYMOUS-RELAY" in caps, caps


def test_request_response_round_trip_blocking(broker, queue):
    service = queue
    with blocking(broker.url) as requester, blocking(broker.url) as responder:
        replies = requester.create_receiver(None, dynamic=True, credit=0)
        reply_to = replies.link.remote_source.address
        assert reply_to and reply_to.startswith("dynamic-"), reply_to
        requester.create_sender(service).send(
            Message(body="ping", reply_to=reply_to, correlation_id="req-1"))

        requests = responder.create_receiver(service, credit=0)
        requests.link.flow(1)
        req = take(responder, requests, 1)[0]
        assert (req.body, req.reply_to) == ("ping", reply_to)
        requests.accept()
        relay = responder.create_sender(None)  # null target address
        assert relay.link.remote_target is not None
        outcome = send_for_outcome(relay, Message(address=req.reply_to, correlation_id=req.correlation_id,
                                                  body="pong"))
        assert outcome[:2] == ACCEPTED, outcome

        replies.link.flow(1)
        reply = take(requester, replies, 1)[0]
        replies.accept()
        assert (reply.body, reply.correlation_id, reply.address) == ("pong", "req-1", reply_to)


class RequestResponse(Handler):
    """Container API: requester and responder in one container, on two
    connections."""

    def __init__(self, url, service):
        super().__init__(url)
        self.service = service
        self.reply_to = None
        self.reply = None
        self.relay_outcomes = []
        self.pending_replies = []

    def start(self, event):
        self.req_conn = self.connect()
        self.resp_conn = self.connect()
        self.replies = event.container.create_receiver(self.req_conn, None, dynamic=True)
        event.container.create_receiver(self.resp_conn, self.service)
        self.relay = event.container.create_sender(self.resp_conn, None)

    def on_link_opened(self, event):
        if event.receiver == self.replies:
            self.reply_to = event.receiver.remote_source.address
            self.requests = event.container.create_sender(self.req_conn, self.service)

    def on_sendable(self, event):
        if event.sender == getattr(self, "requests", None) and not getattr(self, "sent", False):
            self.sent = True
            event.sender.send(Message(body="ping", reply_to=self.reply_to, correlation_id=42))
        elif event.sender == self.relay:
            self._flush_replies()

    def _flush_replies(self):
        while self.pending_replies and self.relay.credit:
            self.relay.send(self.pending_replies.pop(0))

    def on_message(self, event):
        if event.receiver == self.replies:
            self.reply = event.message
            self.done()
        else:  # the responder
            req = event.message
            self.pending_replies.append(
                Message(address=req.reply_to, correlation_id=req.correlation_id, body="pong"))
            self._flush_replies()

    def on_settled(self, event):
        if event.link == self.relay:
            self.relay_outcomes.append(event.delivery.remote_state)


def test_request_response_round_trip_container(broker, queue):
    h = run(RequestResponse(broker.url, queue))
    assert h.reply_to and h.reply_to.startswith("dynamic-"), h.reply_to
    assert (h.reply.body, h.reply.correlation_id) == ("pong", 42)
    assert h.relay_outcomes in ([], [Delivery.ACCEPTED])  # the reply may beat the outcome


def test_dynamic_node_goes_with_its_link(make_broker):
    broker = make_broker(NO_AUTO_CREATE)
    with blocking(broker.url) as conn:
        replies = conn.create_receiver(None, dynamic=True, credit=0)
        address = replies.link.remote_source.address
        relay = conn.create_sender(None)
        assert send_for_outcome(relay, Message(address=address, body="r"))[:2] == ACCEPTED
        replies.link.flow(1)
        assert take(conn, replies, 1)[0].body == "r"
        replies.accept()
        replies.close()
        outcome = send_for_outcome(relay, Message(address=address, body="too late"))
        assert outcome[:2] == (Delivery.REJECTED, "amqp:not-found"), outcome


def test_relay_to_several_addresses(broker, queue):
    topic = f"{queue}-t"
    with blocking(broker.url) as conn:
        subs = []
        for i in range(2):
            s = conn.create_receiver(f"topic://{topic}", credit=0, name=f"sub{i}")
            s.link.flow(10)
            subs.append(s)
        relay = conn.create_sender(None)
        sends = [(f"{queue}-a", "m0"), (f"queue://{queue}-b", "m1"), (f"/queues/{queue}-c", "m2"),
                 (f"topic://{topic}", "m3"), (f"{queue}-a", "m4")]
        outcomes = [send_for_outcome(relay, Message(address=to, body=body))[:2] for to, body in sends]
        assert outcomes == [ACCEPTED] * len(sends)
        for s in subs:
            assert [m.body for m in take(conn, s, 1)] == ["m3"]
            s.accept()
    assert [m.body for m in fetch_all(broker.url, f"{queue}-a")] == ["m0", "m4"]
    assert [m.body for m in fetch_all(broker.url, f"{queue}-b")] == ["m1"]
    assert [m.body for m in fetch_all(broker.url, f"{queue}-c")] == ["m2"]


def test_relay_message_without_to_is_rejected(broker, queue):
    with blocking(broker.url) as conn:
        relay = conn.create_sender(None)
        outcome, cond, desc = send_for_outcome(relay, Message(body="nowhere"))
        assert (outcome, cond) == (Delivery.REJECTED, "amqp:invalid-field"), (outcome, cond, desc)
        # The link goes on.
        assert send_for_outcome(relay, Message(address=queue, body="somewhere"))[:2] == ACCEPTED
    assert [m.body for m in fetch_all(broker.url, queue)] == ["somewhere"]


def test_relay_unknown_to_with_auto_create_off(make_broker, queue):
    broker = make_broker(NO_AUTO_CREATE)
    with blocking(broker.url) as conn:
        relay = conn.create_sender(None)
        for to in [queue, f"queue://{queue}", f"topic://{queue}"]:
            outcome, cond, desc = send_for_outcome(relay, Message(address=to, body="x"))
            assert (outcome, cond) == (Delivery.REJECTED, "amqp:not-found"), (to, outcome, cond, desc)
        assert send_for_outcome(relay, Message(address="DLQ", body="to the DLQ"))[:2] == ACCEPTED
    assert [m.body for m in fetch_all(broker.url, "DLQ")] == ["to the DLQ"]


def test_relay_to_a_full_queue_is_rejected(make_broker, queue):
    broker = make_broker(DEFAULT_CONFIG + '\n[[queues]]\npattern = "one.#"\nmax-length = 1\n')
    with blocking(broker.url) as conn:
        relay = conn.create_sender(None)
        assert send_for_outcome(relay, Message(address=f"one.{queue}", body=1))[:2] == ACCEPTED
        outcome = send_for_outcome(relay, Message(address=f"one.{queue}", body=2))
        assert outcome[:2] == (Delivery.REJECTED, "amqp:resource-limit-exceeded"), outcome
        assert send_for_outcome(relay, Message(address=queue, body=3))[:2] == ACCEPTED
