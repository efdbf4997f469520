"""Every message section round-trips through the broker, with both proton APIs."""

import uuid

import pytest
from proton import (UNDESCRIBED, Array, Data, Message, byte, char, decimal32, decimal64,
                    decimal128, float32, int32, short, symbol, timestamp, ubyte, uint, ulong,
                    ushort)

from helpers import (AMQP_SEQUENCE, AMQP_VALUE, APPLICATION_PROPERTIES, BARE_AND_FOOTER, DATA,
                     DELIVERY_ANNOTATIONS, FOOTER, HEADER, MESSAGE_ANNOTATIONS, PROPERTIES,
                     TIMEOUT, RawCollector, RawMessage, blocking, encode_section, roundtrip,
                     section_value, split_sections)

APIS = ["blocking", "container"]

PROPERTY_FIELDS = ["id", "user_id", "address", "subject", "reply_to", "correlation_id",
                   "content_type", "content_encoding", "expiry_time", "creation_time",
                   "group_id", "group_sequence", "reply_to_group_id"]

# One simple value of every AMQP type an application property may hold.
SIMPLE_VALUES = {
    "null": None,
    "bool-true": True,
    "bool-false": False,
    "ubyte": ubyte(255),
    "ushort": ushort(65535),
    "uint": uint(4294967295),
    "uint-small": uint(7),
    "uint-zero": uint(0),
    "ulong": ulong(2**64 - 1),
    "ulong-small": ulong(3),
    "byte": byte(-128),
    "short": short(-32768),
    "int": int32(-2**31),
    "int-small": int32(-3),
    "long": -2**63,
    "long-small": 42,
    "float": float32(1.5),
    "double": 2.718281828459045,
    "decimal32": decimal32(0x2234567),
    "decimal64": decimal64(0x2234567890123),
    "decimal128": decimal128(b"0123456789abcdef"),
    "char": char("\u2713"),
    "timestamp": timestamp(1700000000123),
    "uuid": uuid.UUID("0b7d6f1e-1d1c-4b8e-9a55-7f3f0d5c2a11"),
    "binary": b"\x00\x01\xfe\xff",
    "binary-long": bytes(range(256)) * 2,
    "string": "h\u00e9llo w\u00f6rld \u2713",
    "string-long": "x" * 300,
    "symbol": symbol("a-symbol"),
    "symbol-long": symbol("s" * 300),
}


def check_value(got, want):
    assert got == want and type(got) is type(want), f"sent {want!r}, got {got!r}"


@pytest.mark.parametrize("api", APIS)
def test_header_fields(api, broker, queue):
    sent = Message(body="h", durable=True, priority=7, ttl=60.0)
    (got,) = roundtrip(api, broker.url, queue, [sent])
    assert got.durable is True
    assert got.priority == 7
    # An intermediary may lower the ttl by the time the message spent with it.
    assert 0 < got.ttl <= 60.0
    assert got.delivery_count == 0
    assert got.body == "h"


@pytest.mark.parametrize("api", APIS)
def test_default_header(api, broker, queue):
    (got,) = roundtrip(api, broker.url, queue, [Message(body="d")])
    assert got.durable is False
    assert got.priority == 4
    assert got.ttl == 0
    assert got.delivery_count == 0


@pytest.mark.parametrize("api", APIS)
def test_properties(api, broker, queue):
    ids = ["string-id", ulong(12345), uuid.UUID("9c1b7a86-2f36-4d39-9a0b-8f5e0a3c1d22"),
           b"binary-id"]
    sent = []
    for i, mid in enumerate(ids):
        sent.append(Message(
            body=i, id=mid, user_id=b"someone", address=queue, subject="the subject",
            reply_to="replies", correlation_id=ids[(i + 1) % len(ids)],
            content_type="application/json", content_encoding="gzip",
            expiry_time=4102444800.25,  # 2100-01-01: must not expire
            creation_time=1700000000.5, group_id="group-a", group_sequence=4294967295 - i,
            reply_to_group_id="reply-group"))
    got = roundtrip(api, broker.url, queue, sent)
    for s, g in zip(sent, got):
        for field in PROPERTY_FIELDS:
            want, have = getattr(s, field), getattr(g, field)
            assert have == want, f"{field}: sent {want!r}, got {have!r}"
            assert type(have) is type(want), f"{field}: sent {want!r}, got {have!r}"
        assert g.body == s.body


@pytest.mark.parametrize("api", APIS)
def test_application_properties_of_every_simple_type(api, broker, queue):
    (got,) = roundtrip(api, broker.url, queue, [Message(body="ap", properties=SIMPLE_VALUES)])
    assert set(got.properties) == set(SIMPLE_VALUES)
    for k, want in SIMPLE_VALUES.items():
        check_value(got.properties[k], want)


@pytest.mark.parametrize("api", APIS)
def test_message_annotations(api, broker, queue):
    annotations = {
        symbol("x-opt-string"): "v",
        symbol("x-opt-int"): int32(5),
        symbol("x-opt-long"): 2**40,
        symbol("x-opt-map"): {"k": [1, "two", None]},
        symbol("x-opt-bool"): False,
        ulong(77): "ulong key",
    }
    (got,) = roundtrip(api, broker.url, queue, [Message(body="ma", annotations=annotations)])
    assert got.annotations is not None
    for k, want in annotations.items():
        assert k in got.annotations, f"annotation {k!r} lost: {got.annotations!r}"
        check_value(got.annotations[k], want)


@pytest.mark.parametrize("api", APIS)
def test_delivery_annotations_are_not_forwarded(api, broker, queue):
    sent = Message(body="da", instructions={symbol("x-opt-hop"): "one hop only"},
                   annotations={symbol("x-opt-keep"): "kept"})
    (got,) = roundtrip(api, broker.url, queue, [sent])
    assert not got.instructions, f"delivery annotations forwarded: {got.instructions!r}"
    assert got.annotations[symbol("x-opt-keep")] == "kept"


BODIES = {
    "string": "hello \u2713",
    "empty-string": "",
    "int": int32(-7),
    "long": 2**62,
    "double": -0.125,
    "float": float32(0.5),
    "bool": True,
    "null-value": None,  # sent with no body at all: see test_no_body
    "uuid": uuid.UUID("52d6b8a0-5f0c-4b1e-8f3e-1c2d3e4f5a6b"),
    "timestamp": timestamp(1700000000999),
    "binary-value": b"\x00\x01\x02",
    "symbol": symbol("sym"),
    "ulong": ulong(9),
    "char": char("z"),
    "map": {"a": 1, symbol("s"): [1, "x", {"n": None}], 5: b"bin", ulong(7): True,
            "nested": {"deeper": {"list": [1.5, [2, [3]], "s"]}}},
    "empty-map": {},
    "list": [1, "two", 3.0, None, True, [b"\x01", {"k": "v"}], uuid.UUID(int=1), symbol("y")],
    "empty-list": [],
    "array-int": Array(UNDESCRIBED, Data.INT, 1, 2, 3, -4),
    "array-string": Array(UNDESCRIBED, Data.STRING, "a", "bb", "\u2713"),
    "array-symbol": Array(UNDESCRIBED, Data.SYMBOL, symbol("a"), symbol("b")),
    "array-long": Array(UNDESCRIBED, Data.LONG, 2**40, -1),
    "list-of-arrays": [Array(UNDESCRIBED, Data.INT, 1), Array(UNDESCRIBED, Data.STRING, "s")],
}


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("kind", [k for k in BODIES if k != "null-value"])
def test_amqp_value_body(api, kind, broker, queue):
    body = BODIES[kind]
    (got,) = roundtrip(api, broker.url, queue, [Message(body=body, inferred=False)])
    assert got.inferred is False
    assert got.body == body, f"sent {body!r}, got {got.body!r}"
    assert type(got.body) is type(body)


@pytest.mark.parametrize("api", APIS)
def test_data_body(api, broker, queue):
    body = bytes(range(256)) * 4
    (got,) = roundtrip(api, broker.url, queue, [Message(body=body, inferred=True)])
    assert got.inferred is True, "a data section came back as something else"
    assert got.body == body


@pytest.mark.parametrize("api", APIS)
def test_amqp_sequence_body(api, broker, queue):
    body = [1, "two", [3], {"four": 4}]
    (got,) = roundtrip(api, broker.url, queue, [Message(body=body, inferred=True)])
    assert got.inferred is True, "an amqp-sequence section came back as something else"
    assert got.body == body


@pytest.mark.parametrize("api", APIS)
def test_no_body(api, broker, queue):
    (got,) = roundtrip(api, broker.url, queue,
                       [Message(subject="no body", properties={"k": "v"})])
    assert got.body is None
    assert got.subject == "no body"
    assert got.properties == {"k": "v"}


def send_raw_receive_raw(url, queue, encoded_messages):
    """Send already-encoded messages and receive the bytes of what arrives."""
    with blocking(url) as conn:
        snd = conn.create_sender(queue)
        for enc in encoded_messages:
            snd.send(RawMessage(enc))
        collector = RawCollector()
        rcv = conn.create_receiver(queue, credit=len(encoded_messages), handler=collector)
        conn.wait(lambda: len(collector.received) == len(encoded_messages),
                  msg="receiving raw messages", timeout=TIMEOUT)
        rcv.close()
        return collector.received


def test_bare_message_and_footer_pass_through_byte_for_byte(broker, queue):
    """Properties, application properties, body and footer arrive exactly as
    sent (proton's Message has no footer, so this test encodes the sections
    itself); delivery annotations are dropped; header and message annotations
    keep what was sent."""
    # Priority 6 for the cases with a header; the others have the default 4 and
    # so come after them: the broker serves higher priorities first.
    header = encode_section(HEADER, [True, ubyte(6)])
    da = encode_section(DELIVERY_ANNOTATIONS, {symbol("x-opt-hop"): "dropped"})
    ma = encode_section(MESSAGE_ANNOTATIONS, {symbol("x-opt-mine"): "kept"})
    props = encode_section(PROPERTIES, ["msg-1", None, "to", "subject"])
    app = encode_section(APPLICATION_PROPERTIES, {"k": int32(1), "s": "v"})
    data1 = encode_section(DATA, b"first data section ")
    data2 = encode_section(DATA, b"second data section")
    seq1 = encode_section(AMQP_SEQUENCE, [1, 2])
    seq2 = encode_section(AMQP_SEQUENCE, ["three"])
    value = encode_section(AMQP_VALUE, {"map": [1, 2, 3]})
    null_value = encode_section(AMQP_VALUE, None)
    footer = encode_section(FOOTER, {symbol("x-opt-signature"): b"\x01\x02\x03"})

    cases = [
        header + da + ma + props + app + data1 + data2 + footer,
        header + ma + value + footer,
        props + seq1 + seq2 + footer,
        props + app,  # no body
        null_value,  # a null amqp-value is a body, unlike no body
        app + footer,  # no body, with a footer
    ]
    received = send_raw_receive_raw(broker.url, queue, cases)
    for i, (sent, got) in enumerate(zip(cases, received)):
        sent_secs = split_sections(sent)
        got_secs = split_sections(got)
        assert [d for d, _ in got_secs if d == DELIVERY_ANNOTATIONS] == [], \
            f"case {i}: delivery annotations forwarded"
        want_bare = [(d, b) for d, b in sent_secs if d in BARE_AND_FOOTER]
        got_bare = [(d, b) for d, b in got_secs if d in BARE_AND_FOOTER]
        assert got_bare == want_bare, f"case {i}: bare message or footer altered"
        assert [d for d, _ in got_secs] == sorted(d for d, _ in got_secs), \
            f"case {i}: sections out of order: {[hex(d) for d, _ in got_secs]}"
        sent_ma = {d: section_value(b) for d, b in sent_secs}.get(MESSAGE_ANNOTATIONS)
        got_ma = {d: section_value(b) for d, b in got_secs}.get(MESSAGE_ANNOTATIONS)
        for k, v in (sent_ma or {}).items():
            assert got_ma and got_ma.get(k) == v, f"case {i}: message annotation {k} lost"
        sent_h = {d: section_value(b) for d, b in sent_secs}.get(HEADER)
        if sent_h:
            got_h = {d: section_value(b) for d, b in got_secs}[HEADER]
            assert got_h[0] is True and got_h[1] == 6, f"case {i}: header {got_h!r}"
