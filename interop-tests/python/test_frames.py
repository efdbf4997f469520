"""Multi-frame transfers: small frames both ways, and an aborted transfer."""

import os

import pytest
from proton import Message

from helpers import TIMEOUT, Handler, after_flush, blocking, roundtrip, run
from ordo_broker import DEFAULT_CONFIG

SMALL_FRAMES = DEFAULT_CONFIG.replace('port = 0\n', 'port = 0\nmax-frame-size = 512\n')


@pytest.mark.parametrize("api", ["blocking", "container"])
def test_small_frames_both_ways(api, make_broker, queue):
    """The broker's max-frame-size is 512: it must split what it sends, and
    reassemble what Proton (also told 512) splits."""
    broker = make_broker(SMALL_FRAMES)
    big = os.urandom(300 * 1024)
    sent = [Message(body="small"), Message(body=big, inferred=True),
            Message(body={"k": "x" * 2000}, properties={"p": "y" * 1000})]
    if api == "blocking":
        with blocking(broker.url, max_frame_size=512) as conn:
            assert conn.conn.transport.remote_max_frame_size == 512
            snd = conn.create_sender(queue)
            for m in sent:
                snd.send(m)
            rcv = conn.create_receiver(queue, credit=3)
            got = []
            for _ in sent:
                got.append(rcv.receive(timeout=TIMEOUT))
                rcv.accept()
    else:
        # Proton sends within the broker's 512 either way.
        got = roundtrip(api, broker.url, queue, sent)
    assert [m.body for m in got] == [m.body for m in sent]
    assert got[2].properties == {"p": "y" * 1000}


class AbortThenSend(Handler):
    """Streams half of a big message, aborts it once some frames are out,
    then sends a small one; afterwards receives what the queue has."""

    def __init__(self, url, queue):
        super().__init__(url, prefetch=0)
        self.queue = queue
        self.started = False
        self.aborted = None
        self.outcome = None
        self.got = []

    def start(self, event):
        self.conn = self.connect(max_frame_size=512)
        event.container.create_sender(self.conn, self.queue)

    def on_sendable(self, event):
        if self.started:
            return
        self.started = True
        sender = event.sender
        encoded = Message(body=os.urandom(64 * 1024), inferred=True).encode()
        dlv = sender.delivery("doomed")
        sender.stream(encoded[: len(encoded) // 2])  # no advance(): more would follow

        def abort_and_go_on():
            dlv.abort()
            self.aborted = dlv
            sender.send(Message(body="after the abort"))
        after_flush(event.container, self.conn, abort_and_go_on)

    def on_accepted(self, event):
        self.outcome = "accepted"
        self.receiver = event.container.create_receiver(self.conn, self.queue)
        self.receiver.flow(10)

    def on_message(self, event):
        self.got.append(event.message.body)
        if len(self.got) == 1:
            # drain the rest: nothing more must come
            event.receiver.drain(10)

    def on_link_flow(self, event):
        if event.link.is_receiver and self.got and not event.link.draining():
            self.done()


def test_aborted_transfer_is_discarded(make_broker, queue):
    broker = make_broker(SMALL_FRAMES)
    h = run(AbortThenSend(broker.url, queue))
    assert h.aborted is not None and h.aborted.aborted
    assert h.outcome == "accepted"
    assert h.got == ["after the abort"]
