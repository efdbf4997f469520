"""A client that does work in a transaction it never discharges, says so, and
then waits to be killed (the tests kill it with SIGKILL, like a crash).

    crash_transaction.py blocking|container URL SRC N DST P [--settle]

Declares a transaction, posts P messages ("p0", "p1", ...) to DST in it
(each answered transactional-state{txn-id, accepted}), takes N messages from
SRC and accepts them in it (settling the dispositions too with --settle:
Transaction(settle_before_discharge=True)), makes sure the broker handled
those dispositions (a link attached after them was answered) and prints one
line: "ready CONTAINER-ID BODY BODY ..." with the bodies it accepted.

`blocking` uses a BlockingConnection and its Container's
declare_transaction (helpers.Txn); `container` the event-driven API
(TransactionalClientHandler).
"""

import argparse
import time

from proton import Message
from proton.handlers import TransactionalClientHandler
from proton.reactor import Container
from proton.utils import BlockingConnection

from helpers import (ACCEPTED_OUTCOME, TRANSACTIONAL_STATE, TIMEOUT, Txn, after_flush,
                     round_trip)


def say_ready(container_id, bodies):
    print("ready", container_id, *bodies, flush=True)


def posts(p):
    return [Message(body=f"p{i}") for i in range(p)]


def blocking(args):
    conn = BlockingConnection(args.url, timeout=TIMEOUT)
    txn = Txn(conn, settle_before_discharge=args.settle)
    txn.post(conn.create_sender(args.dst), *posts(args.p))
    rcv = conn.create_receiver(args.src, credit=0)
    rcv.link.flow(args.n)
    conn.wait(lambda: rcv.fetcher.has_message >= args.n, msg="taking messages", timeout=TIMEOUT)
    bodies = []
    for _ in range(args.n):
        msg, dlv = rcv.fetcher.incoming.popleft()
        bodies.append(str(msg.body))
        txn.accept(dlv)
    round_trip(conn, args.src)
    say_ready(conn.container.container_id, bodies)
    conn.run()  # keeps the connection serviced until killed
    time.sleep(3600)


class Work(TransactionalClientHandler):
    def __init__(self, args):
        super().__init__(prefetch=0, auto_accept=False)
        self.args = args
        self.txn = None
        self.to_post = posts(args.p)
        self.posted = []
        self.receiver = None
        self.bodies = []

    def on_start(self, event):
        self.container = event.container
        self.conn = event.container.connect(self.args.url, reconnect=False)
        event.container.declare_transaction(self.conn, handler=self,
                                            settle_before_discharge=self.args.settle)
        self.sender = event.container.create_sender(self.conn, self.args.dst)

    def on_transaction_declared(self, event):
        self.txn = event.transaction
        self.pump()

    def on_sendable(self, event):
        self.pump()

    def pump(self):
        while self.txn and self.to_post and self.sender.credit:
            self.posted.append(self.txn.send(self.sender, self.to_post.pop(0)))

    def on_settled(self, event):
        if event.link.name != self.sender.name or self.receiver is not None:
            return
        answers = [(d.remote_state, d.remote.data) for d in self.posted if d.remote_state]
        if len(answers) < self.args.p:
            return
        want = (TRANSACTIONAL_STATE, [self.txn.id, ACCEPTED_OUTCOME])
        assert answers == [want] * self.args.p, answers
        self.receiver = self.container.create_receiver(self.conn, self.args.src)
        self.receiver.flow(self.args.n)

    def on_message(self, event):
        self.bodies.append(str(event.message.body))
        self.txn.accept(event.delivery)
        if len(self.bodies) == self.args.n:
            # Once the dispositions are written, a link attached after them
            # is answered after the broker handled them.
            after_flush(self.container, self.conn, lambda: self.container.create_sender(
                self.conn, self.args.src, name="round-trip"))

    def on_link_opened(self, event):
        if event.link.name == "round-trip":
            event.link.close()
            say_ready(self.container.container_id, self.bodies)


def container(args):
    Container(Work(args)).run()
    time.sleep(3600)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["blocking", "container"])
    parser.add_argument("url")
    parser.add_argument("src")
    parser.add_argument("n", type=int)
    parser.add_argument("dst")
    parser.add_argument("p", type=int)
    parser.add_argument("--settle", action="store_true")
    args = parser.parse_args()
    {"blocking": blocking, "container": container}[args.mode](args)
