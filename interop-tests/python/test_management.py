"""The AMQP management node `$management` (docs/OPERATIONS.md) with Qpid
Proton: the request/response pattern of proton.utils.SyncRequestResponse (a
sender to $management and a dynamic receiver for the responses), READ and
QUERY of a queue with known traffic, the error status codes, a relayed
request, and responses to a receiver attached with source $management."""

import uuid

from proton import Message
from proton.utils import SyncRequestResponse

from helpers import TIMEOUT, blocking, take

QUEUE_ATTRIBUTES = [
    "name", "identity", "type", "messages", "bytes", "unsettled", "consumers", "groups",
    "held_groups", "active_consumer", "exclusive", "group_ordering", "enqueued", "delivered",
    "redelivered", "acked", "dead_lettered", "expired", "oldest_message_age_ms",
]


def fill(conn, queue, n):
    snd = conn.create_sender(queue)
    for i in range(n):
        snd.send(Message(body=f"m{i}"))
    snd.close()


def read(queue):
    return Message(properties={"operation": "READ", "type": "ordo:queue", "name": queue})


def query(names, **extra):
    return Message(properties={"operation": "QUERY", "entityType": "queue", **extra},
                   body={"attributeNames": names})


def status(response):
    return response.properties["statusCode"], response.properties["statusDescription"]


def test_read_and_query_through_a_dynamic_receiver(broker, queue):
    with blocking(broker.url) as conn:
        fill(conn, queue, 3)
        rcv = conn.create_receiver(queue, credit=0)
        rcv.link.flow(1)
        take(conn, rcv, 1)
        rcv.accept()

        client = SyncRequestResponse(conn, "$management")
        assert client.reply_to.startswith("dynamic-"), client.reply_to
        response = client.call(read(queue))
        assert status(response) == (200, "OK"), response
        body = response.body
        assert sorted(body) == sorted(QUEUE_ATTRIBUTES), body
        assert (body["name"], body["identity"], body["type"]) == (queue, queue, "ordo:queue")
        assert (body["enqueued"], body["delivered"], body["consumers"]) == (3, 1, 1), body
        assert body["messages"] == 2, body
        assert 0 <= body["oldest_message_age_ms"] < 60_000, body
        assert body["active_consumer"] is None and body["exclusive"] is False, body

        response = client.call(query(["name", "messages", "enqueued"]))
        assert status(response)[0] == 200, response
        assert response.body["attributeNames"] == ["name", "messages", "enqueued"]
        results = response.body["results"]
        assert [queue, 2, 3] in results, results
        assert response.properties["count"] == len(results)

        response = client.call(query([], count=1))
        assert response.body["attributeNames"] == QUEUE_ATTRIBUTES
        assert len(response.body["results"]) == 1

        response = client.call(read(f"no-such-{uuid.uuid4().hex[:8]}"))
        assert status(response)[0] == 404, response
        assert response.body is None
        response = client.call(Message(properties={"operation": "FROB"}))
        assert status(response)[0] == 400, response
        response = client.call(Message(properties={"operation": "DELETE", "type": "ordo:queue",
                                                   "name": queue}))
        assert status(response)[0] == 501, response
        response = client.call(Message(properties={"operation": "GET-TYPES"}))
        assert status(response)[0] == 200 and "ordo:queue" in response.body, response


def test_a_relayed_request_is_answered(broker, queue):
    with blocking(broker.url) as conn:
        fill(conn, queue, 2)
        client = SyncRequestResponse(conn)  # anonymous-relay sender
        request = read(queue)
        request.address = "$management"
        response = client.call(request)
        assert status(response)[0] == 200, response
        assert response.body["messages"] == 2, response.body


def test_responses_reach_a_receiver_attached_to_management(broker, queue):
    with blocking(broker.url) as conn:
        fill(conn, queue, 1)
        # No target address: the link name is the reply address.
        replies = conn.create_receiver("$management", name="mgmt-replies", credit=10)
        requests = conn.create_sender("$management")
        request = read(queue)
        request.reply_to = "mgmt-replies"
        request.id = 42
        requests.send(request)
        response = replies.receive(timeout=TIMEOUT)
        replies.accept()
        assert response.correlation_id == 42, response
        assert status(response)[0] == 200, response
        assert response.body["name"] == queue
