#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/seed-*: a handful of
valid inputs and edge cases per target, encoded here by hand (independently
of the crates' own encoders). Run from anywhere: `python3 fuzz/make_seeds.py`.
Deterministic; the files it writes are committed, and the stable tests in
telemetry/tests/fuzz_corpus.rs and broker/tests/fuzz_corpus.rs replay them.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


# ------------------------------------------------------------------ CBOR


def head(major, n):
    m = major << 5
    if n < 24:
        return bytes([m | n])
    if n < 0x100:
        return bytes([m | 24, n])
    if n < 0x10000:
        return bytes([m | 25]) + struct.pack(">H", n)
    if n < 0x100000000:
        return bytes([m | 26]) + struct.pack(">I", n)
    return bytes([m | 27]) + struct.pack(">Q", n)


class Raw(bytes):
    """Bytes spliced in as they are: for what the encoder below would not write."""


def cbor(v):
    if isinstance(v, Raw):
        return bytes(v)
    if v is None:
        return b"\xf6"
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, float):
        return b"\xfb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        return head(3, len(b)) + b
    if isinstance(v, (bytes, bytearray)):
        return head(2, len(v)) + bytes(v)
    if isinstance(v, list):
        return head(4, len(v)) + b"".join(cbor(x) for x in v)
    if isinstance(v, dict):
        return head(5, len(v)) + b"".join(cbor(k) + cbor(x) for k, x in v.items())
    raise TypeError(v)


# SenML labels (RFC 8428 Table 6).
BVER, BN, BT, BU, BV, BS, N, U, V, VS, VB, S, T, UT, VD = -1, -2, -3, -4, -5, -6, 0, 1, 2, 3, 4, 5, 6, 7, 8

SENML = {
    # RFC 8428 §5.1.2-style: base name, base time, several measurements.
    "pack": [
        {BN: "urn:dev:ow:10e2073a01080063:", BT: 1.32e9, BU: "A", BVER: 10, N: "voltage", U: "V", V: 120.1},
        {N: "current", T: -5, V: 1.2},
        {N: "current", T: -4, V: 1.3},
    ],
    "every_value_kind": [
        {BN: "dev/", N: "f", V: 1.5},
        {N: "s", VS: "on"},
        {N: "b", VB: True},
        {N: "d", VD: b"\x00\x01"},
        {N: "sum", S: 42, BS: 1},
    ],
    "relative_and_absolute_times": [
        {N: "a", V: 1, T: 268435455},
        {N: "a", V: 2, T: 268435456},
        {N: "a", V: 3},
    ],
    "base_fields_only_then_record": [{BN: "x:", BV: 10, BU: "Cel"}, {N: "t", V: 0.5, UT: 60}],
    "extension_labels": [{N: "x", V: 1, "lat": 52.1, "ext_": 1}],
    "newer_version": [{BVER: 11, N: "x", V: 1}],
    "two_values": [{N: "x", V: 1, VS: "1"}],
    "no_name": [{V: 1}],
    "half_float_and_int_keys": Raw(b"\x81\xa2\x00\x61x\x02\xf9\x3c\x00"),
    "indefinite_pack": Raw(b"\x9f\xbf\x00\x61x\x02\x01\xff\xff"),
    "not_a_pack": {"temperature": 21.5},
    "huge_time": [{N: "x", V: 1, T: 1e308, BT: 1e308}],
    "nested_17": Raw(b"\x81" * 17 + b"\x80"),
    "trailing_byte": Raw(cbor([{N: "x", V: 1}]) + b"\x00"),
    "empty": Raw(b""),
}


def batch(envelopes, backlog=7):
    return {
        "gateway_id": "gw-1",
        "spool_id": "0123456789abcdef0123456789abcdef",
        "backlog": backlog,
        "envelopes": envelopes,
    }


def envelope(seq, payload, device="sensor-1"):
    return {
        "seq": seq,
        "device_id": device,
        "topic": f"devices/{device}/telemetry",
        "received_at": 1_700_000_000_000 + seq % 1000,
        "payload": payload,
    }


SYNC_BATCH = {
    "batch": batch([envelope(1, cbor(SENML["pack"])), envelope(2, b"\xa0")]),
    "empty_batch": batch([], backlog=0),
    "max_integers": batch([envelope(2**64 - 1, b"")], backlog=2**64 - 1),
    "fields_reordered_and_unknown": {
        "envelopes": [dict(reversed(list(envelope(3, b"\x01").items())))],
        "backlog": 0,
        "extra": [1, 2],
        "spool_id": "",
        "gateway_id": "gw",
    },
    "payload_as_int_array": batch([{**envelope(4, b""), "payload": [1, 2, 3]}]),
    "duplicate_field": Raw(
        head(5, 5)
        + cbor("gateway_id") + cbor("a")
        + cbor("gateway_id") + cbor("b")
        + cbor("spool_id") + cbor("s")
        + cbor("backlog") + cbor(0)
        + cbor("envelopes") + cbor([])
    ),
    "lone_envelope": envelope(5, b"\x82\x01\x02"),
    "indefinite_envelopes": Raw(
        head(5, 4)
        + cbor("gateway_id") + cbor("gw")
        + cbor("spool_id") + cbor("s")
        + cbor("backlog") + cbor(1)
        + cbor("envelopes") + b"\x9f" + cbor(envelope(6, b"")) + b"\xff"
    ),
    "huge_declared_length": Raw(head(5, 1) + cbor("envelopes") + b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff"),
}


# ------------------------------------------------------------------ MQTT 3.1.1


def remaining(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(byte1, body):
    return bytes([byte1]) + remaining(len(body)) + body


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(b)) + b


def connect(client_id, username=None, password=None, keep_alive=30, will=None, level=4):
    flags = 0x02  # clean session
    payload = s(client_id)
    if will:
        flags |= 0x04 | (will[2] << 3)
        payload += s(will[0]) + s(will[1])
    if username is not None:
        flags |= 0x80
        payload += s(username)
    if password is not None:
        flags |= 0x40
        payload += s(password)
    return packet(0x10, s("MQTT") + bytes([level, flags]) + struct.pack(">H", keep_alive) + payload)


def publish(topic, payload, qos=0, pkid=1, retain=False, dup=False):
    byte1 = 0x30 | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    return packet(byte1, s(topic) + (struct.pack(">H", pkid) if qos else b"") + payload)


def subscribe(pkid, *filters):
    return packet(0x82, struct.pack(">H", pkid) + b"".join(s(f) + bytes([q]) for f, q in filters))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
PACK = cbor(SENML["pack"])

# The first byte steers the target: bits 0-5 TCP segment size - 1, bit 6 authenticated.
WHOLE, AUTH, BYTEWISE = 0x3F, 0x40, 0x00

BROKER = {
    "session": bytes([WHOLE])
    + connect("sensor-1")
    + publish("devices/sensor-1/telemetry", PACK)
    + publish("devices/sensor-1/telemetry", PACK, qos=1, pkid=7)
    + publish("devices/sensor-1/telemetry", PACK, qos=2, pkid=8)
    + packet(0x62, struct.pack(">H", 8))  # PUBREL
    + subscribe(9, ("devices/sensor-1/cmd", 1))
    + packet(0xA2, struct.pack(">H", 10) + s("devices/sensor-1/cmd"))  # UNSUBSCRIBE
    + PINGREQ
    + DISCONNECT,
    "authenticated_session_bytewise": bytes([AUTH | BYTEWISE])
    + connect("c1", username="sensor-1", password="secret", keep_alive=0)
    + publish("devices/sensor-1/telemetry", PACK, qos=1, pkid=1, retain=True, dup=True),
    "authenticated_other_device": bytes([AUTH | WHOLE])
    + connect("c1", username="sensor-1", password="secret")
    + publish("devices/sensor-2/telemetry", PACK, qos=1),
    "bad_topic": bytes([WHOLE]) + connect("c") + publish("not/a/device/topic", PACK, qos=1),
    "malformed_payload": bytes([0x03]) + connect("c") + publish("devices/d/telemetry", b"\x9f\x01", qos=1),
    "will_and_login": bytes([WHOLE])
    + connect("w", username="u", password="p", will=("devices/w/telemetry", b"\xf6", 1)),
    "password_without_username": bytes([WHOLE]) + packet(0x10, s("MQTT") + bytes([4, 0x42, 0, 30]) + s("c") + s("p")),
    "mqtt5_connect": bytes([WHOLE]) + connect("c", level=5),
    "oversized_remaining_length": bytes([WHOLE]) + b"\x30\xff\xff\xff\x7f",
    "five_byte_length": bytes([WHOLE]) + b"\x30\xff\xff\xff\xff\x01",
    "qos3_publish": bytes([WHOLE]) + packet(0x36, s("devices/d/telemetry") + b"\x00\x01\xa0"),
    "publish_zero_pkid": bytes([WHOLE]) + publish("devices/d/telemetry", b"\xa0", qos=1, pkid=0),
    "truncated": bytes([0x01]) + connect("c")[:-3],
    "garbage": bytes([WHOLE]) + bytes(range(256))[::7],
}


def write(target, seeds):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for name, value in seeds.items():
        data = bytes(value) if isinstance(value, (bytes, bytearray)) else cbor(value)
        with open(os.path.join(folder, f"seed-{name}"), "wb") as f:
            f.write(data)


write("senml_decode", SENML)
write("sync_batch_decode", SYNC_BATCH)
write("broker_codec", BROKER)
