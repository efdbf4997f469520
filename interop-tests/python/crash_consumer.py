"""A consumer that takes N messages without settling them, says so, and then
waits to be killed (the tests kill it with SIGKILL, like a crash).

    crash_consumer.py blocking|container URL QUEUE N

Prints one line: "ready CONTAINER-ID BODY BODY ..." once it holds N unsettled
messages.
"""

import sys
import time

from proton.handlers import MessagingHandler
from proton.reactor import Container
from proton.utils import BlockingConnection


def say_ready(container_id, bodies):
    print("ready", container_id, *bodies, flush=True)


def blocking(url, queue, n):
    conn = BlockingConnection(url, timeout=20)
    rcv = conn.create_receiver(queue)  # no prefetch: one credit per receive()
    bodies = [str(rcv.receive(timeout=20).body) for _ in range(n)]
    say_ready(conn.container.container_id, bodies)
    conn.run()  # keeps the connection serviced (heartbeats) until killed
    time.sleep(3600)


class Hold(MessagingHandler):
    def __init__(self, url, queue, n):
        super().__init__(prefetch=0, auto_accept=False)
        self.url, self.queue, self.n = url, queue, n
        self.bodies = []

    def on_start(self, event):
        conn = event.container.connect(self.url)
        rcv = event.container.create_receiver(conn, self.queue)
        rcv.flow(self.n)

    def on_message(self, event):
        self.bodies.append(str(event.message.body))
        if len(self.bodies) == self.n:
            say_ready(event.container.container_id, self.bodies)


def container(url, queue, n):
    Container(Hold(url, queue, n)).run()
    time.sleep(3600)


if __name__ == "__main__":
    mode, url, queue, n = sys.argv[1:]
    {"blocking": blocking, "container": container}[mode](url, queue, int(n))
