"""Fuzzing the decoder: 100,000 mutated frames of every type, fed to FrameReader in random chunk
sizes, must raise nothing but ProtocolError; the valid frames still decode identically.

Deterministic (one seed) and bounded by count; a generous time guard stops a pathological slow-down
from hanging the run (reaching it fails the test: it means some input makes decoding crawl).
"""

from __future__ import annotations

import contextlib
import functools
import random
import struct
import time
from collections.abc import Callable

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefed.wire import (
    HEADER_SIZE,
    Bye,
    Chat,
    ControlMessage,
    EncodedTensor,
    Encoding,
    FileAccept,
    FileDone,
    FileOffer,
    FileResult,
    Flags,
    Frame,
    FrameReader,
    Hello,
    LedgerAck,
    LedgerPush,
    Limits,
    MessageError,
    MessageType,
    PayloadKind,
    ProtocolError,
    ReasonCode,
    Reject,
    SecAggAdvert,
    SecAggInbox,
    SecAggRoster,
    SecAggShares,
    SecAggUnmask,
    SecAggUnmaskRequest,
    Welcome,
    decode_message,
    encode_control_frame,
    encode_message,
    encode_raw_frame,
    encode_tensor_frame,
    payload_kind,
)
from edgefed.wire.secagg_messages import b64

SEED = 20261128
MUTATED_FRAMES = 100_000
TIME_GUARD_S = 300.0
LENGTH_AT = 12  # the u64 payload length in the frame header
PREFIX_FIELDS = [(HEADER_SIZE, "!I"), (HEADER_SIZE + 4, "!Q"), (HEADER_SIZE + 12, "!I")]  # count, samples, spec_len
LIMITS = [
    Limits(max_frame_bytes=1 << 22),
    Limits(max_frame_bytes=4096, max_control_bytes=512, max_raw_bytes=256, max_tensors=3, max_ndim=3,
           max_json_depth=3, max_json_number_chars=12),
]


def joined(parts: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(part) for part in parts)


def secagg_messages() -> list[ControlMessage]:
    """One of each secure-aggregation message, small enough for the tightest limits above."""
    advert = SecAggAdvert("w1", b64(bytes(32)), b64(bytes(range(32))), b64(bytes(64)))
    return [advert, SecAggRoster(2, [advert.to_body()]), SecAggShares("c" * 64, {"w2": b64(bytes(148))}),
            SecAggInbox({"w1": b64(bytes(148))}), SecAggUnmaskRequest(["w1", "w2"]),
            SecAggUnmask({"w1": b64(bytes(66))}, {"w2": b64(bytes(66))})]


@functools.cache
def valid_frames() -> list[bytes]:
    """At least one frame of every message type, of every payload shape the codec knows."""
    record = {"id": "0" * 32, "round": 1, "seconds": 0.5, "sender": "w1", "kind": "update"}
    controls = [
        Hello(50), Welcome(1, 3, 4, "chief"), Reject(ReasonCode.STALE, "round 3 is over"),
        Bye(ReasonCode.LEAVING, "done"), LedgerPush((record, record)), LedgerAck(("a" * 32,), (), (("?", "bad"),), 9),
        LedgerAck(error="no"), Chat("hi [{\"}] ☃"), FileOffer("a.txt", 12, "c" * 64), FileAccept(3), FileDone(),
        FileResult(True, "received", offer=FileOffer("a.txt", 12, "c" * 64)),
        *secagg_messages(),
    ]
    frames = [encode_message(message, round_=index) for index, message in enumerate(controls)]
    frames.append(encode_control_frame(MessageType.HELLO, 0, {"num_samples": 5}))  # today's shape
    frames.append(encode_control_frame(MessageType.CHAT, 0, {"text": "x", "nested": [[{"a": [1.5e-300, -7]}]]}))
    frames.append(joined(encode_raw_frame(MessageType.FILE_CHUNK, 0, bytes(range(200)))))
    frames.append(joined(encode_raw_frame(MessageType.FILE_CHUNK, 0, b"")))
    tensors = [
        [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1.5, -2.5]), np.arange(3, dtype=np.int64)],
        [np.ones((2, 1, 2), np.float16), np.zeros((0, 3), np.float32), np.array(7, np.int8)],
        [np.arange(6, dtype=np.uint8).reshape(2, 3), np.arange(4, dtype=np.int16), np.arange(2, dtype=np.int32)],
        [],
        # compressed encodings (docs/protocol.md, Encodings), small so mutations hit indices and scales
        [EncodedTensor.build(Encoding.TOPK, (6, 5), [0.5, -1.0, 2.0, 0.25], indices=[0, 7, 8, 29]),
         EncodedTensor.build(Encoding.INT8, (3, 3), np.arange(-4, 5), [0.125]),
         EncodedTensor.build(Encoding.FP16, (4,), [1.0, -0.5, 65504.0, 0.0])],
        [EncodedTensor.build(Encoding.TOPK_INT8, (300,), np.arange(-130, 130) // 3, [0.5, 2.0], np.arange(40, 300)),
         np.arange(3, dtype=np.float32), EncodedTensor.build(Encoding.TOPK, (0,), [], indices=[])],
        [EncodedTensor.build(Encoding.INT8, (260,), np.arange(260) % 255 - 127, [1e-3, 3.0]),
         EncodedTensor.build(Encoding.TOPK_INT8, (9, 1), [5, -7, 127], [0.01], [2, 3, 8])],
    ]
    for index, arrays in enumerate(tensors):
        for message_type in (MessageType.WEIGHTS, MessageType.UPDATE):
            flags = Flags.FINAL if index % 2 else Flags.NONE
            frames.append(joined(encode_tensor_frame(message_type, 7 + index, arrays, 30 * index, flags)))
    assert {FrameReader().feed(frame)[0].type for frame in frames} == set(MessageType)
    return frames


def same_frame(got: Frame, want: Frame) -> bool:
    if (got.header, got.body, got.raw, got.num_samples, got.specs, got.sha256) != (
        want.header, want.body, want.raw, want.num_samples, want.specs, want.sha256
    ):
        return False
    if got.tensors is None or want.tensors is None:
        return got.tensors is want.tensors
    return all(g.dtype == w.dtype and g.shape == w.shape and g.tobytes() == w.tobytes()
               for g, w in zip(got.tensors, want.tensors, strict=True))


def feed_in_chunks(reader: FrameReader, data: bytes, rng: random.Random) -> list[Frame]:
    frames: list[Frame] = []
    position = 0
    small = rng.random() < 0.3
    while position < len(data):
        size = rng.randint(1, 7) if small else rng.randint(1, 300)
        frames += reader.feed(data[position : position + size])
        position += size
    return frames


# -- mutations: each takes a frame (and the corpus, for splices) and returns new bytes -------------
def flip_bits(data: bytes, rng: random.Random, _corpus: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_bytes(data: bytes, rng: random.Random, _corpus: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        out[rng.randrange(len(out))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    return bytes(out)


def truncate(data: bytes, rng: random.Random, _corpus: list[bytes]) -> bytes:
    return data[: rng.randrange(len(data))]


def splice(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    other = rng.choice(corpus)
    return data[: rng.randrange(len(data) + 1)] + other[rng.randrange(len(other)) :]


def cut_or_insert(data: bytes, rng: random.Random, _corpus: list[bytes]) -> bytes:
    start = rng.randrange(len(data))
    if rng.random() < 0.5:
        return data[:start] + data[start + rng.randint(1, 16) :]
    return data[:start] + rng.randbytes(rng.randint(1, 16)) + data[start:]


def _edit(value: int, bits: int, rng: random.Random) -> int:
    top = (1 << bits) - 1
    return rng.choice((0, 1, top, top >> 1, value - 1, value + 1, value + rng.randint(-64, 64), value * 2,
                       value // 2, rng.randrange(top + 1), 1 << rng.randrange(bits))) & top


def edit_lengths(data: bytes, rng: random.Random, _corpus: list[bytes]) -> bytes:
    """Rewrite the payload length, or a tensor prefix field (count, samples, spec_len), or a dimension."""
    out = bytearray(data)
    fields = [(LENGTH_AT, "!Q")]
    if len(out) > HEADER_SIZE + 16 and out[5] in (MessageType.WEIGHTS, MessageType.UPDATE):
        fields += PREFIX_FIELDS
        spec_len = struct.unpack_from("!I", out, HEADER_SIZE + 12)[0]
        fields += [(HEADER_SIZE + 16 + at, "!Q") for at in range(2, min(spec_len, len(out) - HEADER_SIZE - 24), 8)]
    at, fmt = rng.choice(fields)
    if at + struct.calcsize(fmt) <= len(out):
        value = struct.unpack_from(fmt, out, at)[0]
        struct.pack_into(fmt, out, at, _edit(value, struct.calcsize(fmt) * 8, rng))
    return bytes(out)


# The last two break Python's json module itself (RecursionError, the int-string limit's ValueError).
JSON_INSERTS = [b"[" * 40 + b"]" * 40, b"9" * 60, b"-1e999", b"NaN", b'"\\ud800"', b'{"a":1,"a":2}', b"1.5e-400",
                b'"\\"', b"\xff", b"true", b"null", b"{}", b"[]", b'""', b"0", b"-0", b"1e308",
                b"[" * 3000, b"9" * 5000]


def mutate_json(data: bytes, rng: random.Random, _corpus: list[bytes]) -> bytes:
    """Edit a control payload and fix its length, so the edit reaches the JSON and message checks."""
    known = len(data) >= HEADER_SIZE and data[5] in MessageType._value2member_map_
    if not known or payload_kind(MessageType(data[5])) is not PayloadKind.CONTROL:
        return flip_bits(data, rng, _corpus)
    payload = bytearray(data[HEADER_SIZE:])
    start = rng.randrange(len(payload) + 1)
    end = min(len(payload), start + rng.randint(0, 12))
    payload[start:end] = rng.choice(JSON_INSERTS) if rng.random() < 0.6 else bytes([rng.choice(b'[]{}",:.-eE0\\ ')])
    header = bytearray(data[:HEADER_SIZE])
    struct.pack_into("!Q", header, LENGTH_AT, len(payload))
    return bytes(header) + bytes(payload)


def retype(data: bytes, rng: random.Random, _corpus: list[bytes]) -> bytes:
    return data[:5] + bytes([rng.choice(list(MessageType))]) + data[6:]


MUTATIONS: list[Callable[[bytes, random.Random, list[bytes]], bytes]] = [
    flip_bits, set_bytes, truncate, splice, cut_or_insert, edit_lengths, mutate_json, retype,
]


def decode_hostile(data: bytes, rng: random.Random, limits: Limits) -> list[Frame]:
    """Feed data in random chunks; the only exceptions allowed are ProtocolError (MessageError is one)."""
    frames: list[Frame] = []
    try:
        frames = feed_in_chunks(FrameReader(limits), data, rng)
    except ProtocolError:
        return frames
    for frame in frames:
        assert int(frame.flags) & ~int(Flags.FINAL) == 0, f"unknown flags {int(frame.flags):#x} accepted"
        assert frame.tensors is None or sum(a.nbytes for a in frame.tensors) <= limits.max_frame_bytes
        if payload_kind(frame.type) is PayloadKind.CONTROL:
            with contextlib.suppress(MessageError):
                decode_message(frame)
    return frames


def test_one_hundred_thousand_mutated_frames_raise_only_protocol_errors() -> None:
    rng = random.Random(SEED)
    corpus = valid_frames()
    reference = [FrameReader(LIMITS[0]).feed(frame)[0] for frame in corpus]
    started = time.monotonic()
    decoded = valid_checked = 0
    for count in range(MUTATED_FRAMES):
        data = rng.choice(corpus)
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            if data:
                data = rng.choice(MUTATIONS)(data, rng, corpus)
        decoded += len(decode_hostile(data, rng, LIMITS[count % 2]))
        if count % 10 == 0:  # and a run of valid frames, split differently, decodes exactly as before
            picks = [rng.randrange(len(corpus)) for _ in range(rng.randint(1, 4))]
            frames = feed_in_chunks(FrameReader(LIMITS[0]), b"".join(corpus[i] for i in picks), rng)
            assert len(frames) == len(picks)
            assert all(same_frame(got, reference[i]) for got, i in zip(frames, picks, strict=True))
            valid_checked += len(picks)
        assert time.monotonic() - started < TIME_GUARD_S, f"time guard hit after {count} mutated frames"
    assert decoded > MUTATED_FRAMES // 20  # the mutations leave many frames whole enough to decode
    assert valid_checked >= MUTATED_FRAMES // 10


# -- hypothesis properties ------------------------------------------------------------------------
DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8"]
ARRAYS = st.lists(
    st.tuples(st.sampled_from(DTYPES), st.lists(st.integers(0, 4), max_size=3), st.integers(0, 2**31)),
    max_size=4,
).map(lambda items: [np.random.default_rng(seed).integers(0, 100, shape).astype(dtype) for dtype, shape, seed in items])


@settings(max_examples=200, deadline=None)
@given(ARRAYS, st.integers(0, 2**32 - 1), st.integers(0, 10**12), st.booleans(), st.integers(0, 2**32 - 1))
def test_any_tensor_list_round_trips_in_any_chunking(
    arrays: list[np.ndarray], round_: int, num_samples: int, final: bool, seed: int
) -> None:
    flags = Flags.FINAL if final else Flags.NONE
    data = joined(encode_tensor_frame(MessageType.UPDATE, round_, arrays, num_samples, flags))
    frames = feed_in_chunks(FrameReader(), data, random.Random(seed))
    assert len(frames) == 1 and frames[0].tensors is not None
    assert (frames[0].round, frames[0].num_samples, frames[0].flags) == (round_, num_samples, flags)
    for got, want in zip(frames[0].tensors, arrays, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_any_mutation_of_any_frame_raises_only_protocol_errors(data: st.DataObject) -> None:
    corpus = valid_frames()
    frame = data.draw(st.sampled_from(corpus))
    edits = data.draw(st.lists(st.tuples(st.integers(0, len(frame) - 1), st.integers(0, 255)), max_size=6))
    mutated = bytearray(frame)
    for position, value in edits:
        mutated[position] = value
    cut = data.draw(st.integers(0, len(mutated)))
    chunking = random.Random(data.draw(st.integers(0, 2**32)))
    decode_hostile(bytes(mutated[:cut]), chunking, LIMITS[data.draw(st.integers(0, 1))])


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(MessageType)), st.integers(0, 2**16 - 1), st.binary(max_size=300), st.integers(0, 2**32))
def test_any_payload_behind_a_valid_header_raises_only_protocol_errors(
    message_type: MessageType, flags: int, payload: bytes, seed: int
) -> None:
    header = b"EFED" + struct.pack("!BBHIQ", 1, message_type, flags, 0, len(payload))
    decode_hostile(header + payload, random.Random(seed), LIMITS[seed % 2])
