"""A consumer that takes N messages without settling them, says so, and then
waits to be killed (the tests kill it with SIGKILL, like a crash).

    crash_consumer.py blocking|container URL QUEUE N [--property KEY=JSON]...

Prints one line: "ready CONTAINER-ID BODY BODY ..." once it holds N unsettled
messages.

With --property (repeatable) the receiver's attach carries that link
property, its value given as JSON (integers are sent as int, e.g.
`--property exclusive-consumer=true --property priority=5`); the process
then first prints "attached JSON": the link properties of the broker's
attach, as a JSON object (null if it sent none).
"""

import argparse
import json
import sys
import time

from proton import int32, symbol
from proton.handlers import MessagingHandler
from proton.reactor import Container, LinkOption
from proton.utils import BlockingConnection


def say_ready(container_id, bodies):
    print("ready", container_id, *bodies, flush=True)


def say_attached(link):
    props = link.remote_properties
    shown = None if props is None else {str(k): v for k, v in props.items()}
    print("attached", json.dumps(shown), flush=True)


class Properties(LinkOption):
    def __init__(self, props):
        self.props = props

    def apply(self, link):
        link.properties = self.props


def parse_property(text):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--property wants KEY=JSON, not {text!r}")
    value = json.loads(value)
    if isinstance(value, int) and not isinstance(value, bool):
        value = int32(value)
    return symbol(key), value


def blocking(url, queue, n, props):
    conn = BlockingConnection(url, timeout=20)
    options = Properties(props) if props else None
    rcv = conn.create_receiver(queue, options=options)  # no prefetch: one credit per receive()
    if props:
        say_attached(rcv.link)
    bodies = [str(rcv.receive(timeout=20).body) for _ in range(n)]
    say_ready(conn.container.container_id, bodies)
    conn.run()  # keeps the connection serviced (heartbeats) until killed
    time.sleep(3600)


class Hold(MessagingHandler):
    def __init__(self, url, queue, n, props):
        super().__init__(prefetch=0, auto_accept=False)
        self.url, self.queue, self.n, self.props = url, queue, n, props
        self.bodies = []

    def on_start(self, event):
        conn = event.container.connect(self.url)
        options = Properties(self.props) if self.props else None
        rcv = event.container.create_receiver(conn, self.queue, options=options)
        rcv.flow(self.n)

    def on_link_opened(self, event):
        if self.props and event.link.is_receiver:
            say_attached(event.link)

    def on_message(self, event):
        self.bodies.append(str(event.message.body))
        if len(self.bodies) == self.n:
            say_ready(event.container.container_id, self.bodies)


def container(url, queue, n, props):
    Container(Hold(url, queue, n, props)).run()
    time.sleep(3600)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["blocking", "container"])
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("n", type=int)
    parser.add_argument("--property", action="append", type=parse_property, default=[])
    args = parser.parse_args()
    {"blocking": blocking, "container": container}[args.mode](
        args.url, args.queue, args.n, dict(args.property))
