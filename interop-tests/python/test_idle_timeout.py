"""Idle timeout: heartbeats keep a quiet connection alive, a silent peer is
dropped and its unsettled messages come back (SPEC §3)."""

import signal
import time

from proton import Message

from helpers import TIMEOUT, Subprocess, blocking
from ordo_broker import DEFAULT_CONFIG

IDLE_CONFIG = DEFAULT_CONFIG.replace('port = 0\n', 'port = 0\nidle-timeout = "1s"\n')


def test_open_announces_half_the_idle_timeout(make_broker):
    """conf/ordo.toml: "Ordo announces half of it so clients heartbeat in
    time" (AMQP 1.0 2.4.5: the idle-time-out sent SHOULD be half the actual
    threshold)."""
    broker = make_broker(IDLE_CONFIG)
    with blocking(broker.url) as conn:
        announced = conn.conn.transport.remote_idle_timeout
        assert announced == 0.5, f"the broker announced idle-time-out {announced} s for a 1 s timeout"


def test_heartbeats_keep_a_quiet_connection_open(make_broker):
    broker = make_broker(IDLE_CONFIG)
    # heartbeat=1: proton asks the broker for a frame at least every second.
    with blocking(broker.url, heartbeat=1) as conn:
        snd = conn.create_sender("quiet")
        rcv = conn.create_receiver("quiet")
        # Stay quiet for several idle periods of both sides (a deliberate wait:
        # what is checked is that nothing happens meanwhile).
        deadline = time.monotonic() + 2.5
        conn.wait(lambda: time.monotonic() > deadline, msg="idling", timeout=TIMEOUT)
        snd.send(Message(body="still here"))
        assert rcv.receive(timeout=TIMEOUT).body == "still here"
        rcv.accept()


def test_frozen_consumer_is_dropped_and_its_messages_come_back(make_broker, queue):
    """A consumer process that stops (SIGSTOP: socket open, no heartbeats)
    holding unsettled messages is closed by the idle timeout; its messages
    go back in order with delivery_count 1."""
    broker = make_broker(IDLE_CONFIG)
    held, total = 3, 5
    with blocking(broker.url) as conn:
        snd = conn.create_sender(queue)
        for i in range(total):
            snd.send(Message(body=f"m{i}"))
    consumer = Subprocess(["blocking", broker.url, queue, str(held)])
    try:
        ready = consumer.read_line().split()
        assert ready[2:] == [f"m{i}" for i in range(held)], ready
        consumer.proc.send_signal(signal.SIGSTOP)
        broker.wait_for_log(f'connection ended container="{ready[1]}"', timeout=10)
    finally:
        consumer.kill()
    with blocking(broker.url) as conn:
        rcv = conn.create_receiver(queue, credit=total)
        got = [rcv.receive(timeout=TIMEOUT) for _ in range(total)]
        assert [(m.body, m.delivery_count) for m in got] == \
            [(f"m{i}", 1 if i < held else 0) for i in range(total)]
        for _ in got:
            rcv.accept()
