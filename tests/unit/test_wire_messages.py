"""Typed control messages: round trips, the bodies peers send today, and every rule of each body."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefed.wire import (
    Bye,
    Chat,
    ControlMessage,
    FileAccept,
    FileDone,
    FileOffer,
    FileResult,
    FrameReader,
    Hello,
    LedgerAck,
    LedgerPush,
    MessageError,
    MessageType,
    ProtocolError,
    ReasonCode,
    Reject,
    Welcome,
    decode_message,
    encode_control_frame,
    encode_message,
    encode_tensor_frame,
    expect,
)
from edgefed.wire.messages import MAX_LEDGER_RECORDS, MAX_SAMPLES, MAX_TEXT_CHARS, decode_body

SHA = "ab" * 32
RECORD = {"id": "0123456789abcdef0123456789abcdef", "round": 3, "seconds": 0.25, "sender": "worker1"}
EXAMPLES: list[ControlMessage] = [
    Hello(num_samples=120),
    Welcome(task_index=2, total=3, round=7, chief="chief"),
    Reject(ReasonCode.STALE, "stale update for round 3; the chief is at round 4"),
    Bye(ReasonCode.LEAVING, "leaving"),
    LedgerPush((RECORD, {**RECORD, "id": "f" * 32})),
    LedgerAck(("a1",), ("b2",), (("c3", "bad signature"),), 42),
    LedgerAck(error="the chief's ledger cannot take records now"),
    Chat("hello ☃"),
    FileOffer("notes.txt", 10, SHA),
    FileAccept(4),
    FileDone(),
    FileResult(True, "received", offer=FileOffer("notes.txt", 10, SHA)),
    FileResult(False, "busy", retryable=True),
]


def through_the_wire(frame_bytes: bytes) -> ControlMessage:
    frames = FrameReader().feed(frame_bytes)
    assert len(frames) == 1
    return decode_message(frames[0])


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: ControlMessage) -> None:
    frame_bytes = encode_message(message, round_=9)
    assert through_the_wire(frame_bytes) == message
    assert FrameReader().feed(frame_bytes)[0].round == 9


@pytest.mark.parametrize(
    ("message_type", "body", "expected"),
    [
        # what worker.py, chief.py, ledger/ and p2p/ send today, encoded as they encode it
        (MessageType.HELLO, {"num_samples": 50, "protocol": 1}, Hello(50)),
        (MessageType.HELLO, {"num_samples": 5}, Hello(5, protocol=1)),  # tests' peers omit "protocol"
        (MessageType.WELCOME, {"task_index": 1, "total": 2, "round": 0, "chief": "chief"}, Welcome(1, 2, 0, "chief")),
        (MessageType.REJECT, {"reason": "update carries no samples"},
         Reject(ReasonCode.OTHER, "update carries no samples")),
        (MessageType.BYE, {"reason": "chief shutting down"}, Bye(ReasonCode.OTHER, "chief shutting down")),
        (MessageType.BYE, {}, Bye(ReasonCode.OTHER, "")),
        (MessageType.LEDGER_PUSH, {"records": [RECORD]}, LedgerPush((RECORD,))),
        (
            MessageType.LEDGER_ACK,
            {"accepted": ["a"], "duplicates": [], "refused": [{"id": "?", "reason": "not an object"}], "height": 3},
            LedgerAck(("a",), (), (("?", "not an object"),), 3),
        ),
        (MessageType.LEDGER_ACK, {"error": "LEDGER_PUSH needs a 'records' list"},
         LedgerAck(error="LEDGER_PUSH needs a 'records' list")),
        (MessageType.CHAT, {"text": "hi"}, Chat("hi")),
        (MessageType.FILE_OFFER, {"name": "a.bin", "size": 0, "sha256": SHA}, FileOffer("a.bin", 0, SHA)),
        (MessageType.FILE_ACCEPT, {"offset": 0}, FileAccept(0)),
        (MessageType.FILE_DONE, {}, FileDone()),
        (MessageType.FILE_RESULT, {"ok": False, "message": "no directory", "retryable": False},
         FileResult(False, "no directory")),
        (MessageType.FILE_RESULT, {"ok": True, "message": "received", "retryable": False, "name": "a.bin",
                                   "size": 0, "sha256": SHA},
         FileResult(True, "received", False, FileOffer("a.bin", 0, SHA))),
    ],
)
def test_todays_bodies_decode(message_type: MessageType, body: dict[str, Any], expected: ControlMessage) -> None:
    assert through_the_wire(encode_control_frame(message_type, 0, body)) == expected


def test_new_bodies_keep_the_keys_todays_readers_use() -> None:
    assert Reject(ReasonCode.NON_FINITE, "tensor 0 contains NaN or Inf").to_body() == {
        "code": "non-finite", "reason": "tensor 0 contains NaN or Inf"}
    assert Hello(7).to_body() == {"num_samples": 7, "protocol": 1}
    assert Welcome(1, 2, 3, "c").to_body() == {"task_index": 1, "total": 2, "round": 3, "chief": "c"}
    assert LedgerAck(("a",), (), (("b", "why"),), 1).to_body() == {
        "accepted": ["a"], "duplicates": [], "refused": [{"id": "b", "reason": "why"}], "height": 1}


def test_unknown_codes_and_keys_from_newer_peers_are_tolerated() -> None:
    assert decode_body(MessageType.BYE, {"code": "quota-exceeded", "reason": "r"}) == Bye(ReasonCode.OTHER, "r")
    assert decode_body(MessageType.HELLO, {"num_samples": 1, "gpu": True}) == Hello(1)


@pytest.mark.parametrize(
    ("message_type", "body", "match", "code"),
    [
        (MessageType.HELLO, {}, "needs the field 'num_samples'", ReasonCode.BAD_HELLO),
        (MessageType.HELLO, {"num_samples": -1}, "num_samples must be an integer from 0", ReasonCode.BAD_HELLO),
        (MessageType.HELLO, {"num_samples": True}, "num_samples", ReasonCode.BAD_HELLO),
        (MessageType.HELLO, {"num_samples": 1.5}, "num_samples", ReasonCode.BAD_HELLO),
        (MessageType.HELLO, {"num_samples": MAX_SAMPLES + 1}, "num_samples", ReasonCode.BAD_HELLO),
        (MessageType.HELLO, {"num_samples": 1, "protocol": 2}, "speaks protocol 2", ReasonCode.UNSUPPORTED_PROTOCOL),
        (MessageType.HELLO, {"num_samples": 1, "protocol": "1"}, "protocol must be", ReasonCode.BAD_HELLO),
        (MessageType.WELCOME, {"task_index": 1, "total": 0, "round": 0, "chief": "c"}, "total", None),
        (MessageType.WELCOME, {"task_index": 1, "total": 1, "round": 2**32, "chief": "c"}, "round", None),
        (MessageType.WELCOME, {"task_index": 1, "total": 1, "round": 0, "chief": ""}, "chief must be", None),
        (MessageType.WELCOME, {"task_index": 1, "total": 1, "round": 0, "chief": "x" * 256}, "chief", None),
        (MessageType.REJECT, {"code": 3, "reason": "r"}, "code must be a string", None),
        (MessageType.BYE, {"code": "stale", "reason": ["r"]}, "reason must be a string", None),
        (MessageType.LEDGER_PUSH, {}, "needs the field 'records'", None),
        (MessageType.LEDGER_PUSH, {"records": {"a": 1}}, "records must be a list", None),
        (MessageType.LEDGER_PUSH, {"records": [RECORD] * (MAX_LEDGER_RECORDS + 1)}, "at most 1000", None),
        (MessageType.LEDGER_PUSH, {"records": [RECORD, 3]}, "record 1 must be an object", None),
        (MessageType.LEDGER_ACK, {"accepted": [], "duplicates": [], "refused": []}, "needs the field 'height'", None),
        (MessageType.LEDGER_ACK, {"accepted": [""], "duplicates": [], "refused": [], "height": 0},
         "not a record id", None),
        (MessageType.LEDGER_ACK, {"accepted": [], "duplicates": [], "refused": [{"id": "a"}], "height": 0},
         "need an id and a reason", None),
        (MessageType.LEDGER_ACK, {"accepted": [], "duplicates": [], "refused": [], "height": -1}, "height", None),
        (MessageType.LEDGER_ACK, {"error": 5}, "error must be a string", None),
        (MessageType.CHAT, {"text": "x" * (MAX_TEXT_CHARS + 1)}, "text must be a string", None),
        (MessageType.FILE_OFFER, {"name": "a", "size": 1, "sha256": SHA.upper()}, "64 lowercase hex", None),
        (MessageType.FILE_OFFER, {"name": "a", "size": -1, "sha256": SHA}, "size", None),
        (MessageType.FILE_ACCEPT, {"offset": "0"}, "offset", None),
        (MessageType.FILE_RESULT, {"ok": 1}, "ok must be true or false", None),
        (MessageType.FILE_RESULT, {"ok": True, "name": "a"}, "names its file badly", None),
    ],
)
def test_bad_bodies_are_refused(
    message_type: MessageType, body: dict[str, Any], match: str, code: ReasonCode | None
) -> None:
    with pytest.raises(MessageError, match=match) as caught:
        through_the_wire(encode_control_frame(message_type, 0, body))
    assert caught.value.code is (code or ReasonCode.PROTOCOL_ERROR)
    assert isinstance(caught.value, ProtocolError)


def test_texts_are_clipped_not_refused() -> None:
    long = "why " * 5000
    message = through_the_wire(encode_control_frame(MessageType.REJECT, 0, {"code": "outlier", "reason": long}))
    assert isinstance(message, Reject) and message.code is ReasonCode.OUTLIER
    assert len(message.reason) == MAX_TEXT_CHARS and message.reason.endswith("...")


def test_expect_names_the_wrong_type() -> None:
    frame = FrameReader().feed(encode_message(Bye(ReasonCode.LATE_JOINER, "no late joiners")))[0]
    assert expect(frame, Bye).code.permanent
    with pytest.raises(MessageError, match="expected HELLO, got BYE") as caught:
        expect(frame, Hello)
    assert caught.value.code is ReasonCode.BAD_HELLO
    tensors = FrameReader().feed(b"".join(bytes(p) for p in _weights_frame()))[0]
    with pytest.raises(ProtocolError, match="WEIGHTS is not a control message"):
        decode_message(tensors)


def _weights_frame() -> list[bytes | memoryview]:
    return encode_tensor_frame(MessageType.WEIGHTS, 0, [np.ones(2, np.float32)], 0)


def test_permanent_codes_are_the_ones_a_retry_cannot_fix() -> None:
    assert {code for code in ReasonCode if code.permanent} == {
        ReasonCode.LATE_JOINER, ReasonCode.BAD_HELLO, ReasonCode.UNSUPPORTED_PROTOCOL,
        ReasonCode.NAME_CONFLICT, ReasonCode.NOT_ALLOWED,
    }


def test_the_sending_side_is_checked_too() -> None:
    with pytest.raises(ValueError, match="num_samples"):
        Hello(num_samples=-3)
    with pytest.raises(ValueError, match="code must be a ReasonCode"):
        Reject("stale", "r")  # type: ignore[arg-type]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
KEYS = ["num_samples", "protocol", "task_index", "total", "round", "chief", "code", "reason", "records",
        "accepted", "duplicates", "refused", "height", "error", "text", "name", "size", "sha256", "offset",
        "ok", "message", "retryable"]
CONTROL_TYPES = [t for t in MessageType if t not in (MessageType.WEIGHTS, MessageType.UPDATE, MessageType.FILE_CHUNK)]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(CONTROL_TYPES), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), JSON, max_size=6))
def test_any_json_body_is_a_message_or_a_message_error(message_type: MessageType, body: dict[str, Any]) -> None:
    with contextlib.suppress(MessageError):
        message = decode_body(message_type, body)
        assert message.TYPE is message_type
        assert through_the_wire(encode_message(message)) == message  # what decodes, re-encodes identically
