"""The sans-IO codec: round trips, limits and every malformed input raising ProtocolError."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgefed.wire import (
    HEADER_SIZE,
    Flags,
    FrameHeader,
    FrameReader,
    Limits,
    MessageType,
    ProtocolError,
    encode_control_frame,
    encode_header,
    encode_tensor_frame,
    payload_sha256,
)


def joined(parts: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(part) for part in parts)


def sample_arrays() -> list[np.ndarray]:
    return [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.array([1.5, -2.5], dtype=np.float64),
        np.zeros((0, 3), dtype=np.float32),
        np.array([7, -8], dtype=np.int64),
        np.array(3.0, dtype=np.float16),
    ]


def test_tensor_frame_round_trip_byte_by_byte() -> None:
    arrays = sample_arrays()
    parts = encode_tensor_frame(MessageType.UPDATE, 41, arrays, 1234, Flags.FINAL)
    data = joined(parts)
    reader = FrameReader()
    frames = []
    for index in range(len(data)):
        frames += reader.feed(data[index : index + 1])
    assert len(frames) == 1
    frame = frames[0]
    assert (frame.type, frame.round, frame.num_samples, frame.flags) == (MessageType.UPDATE, 41, 1234, Flags.FINAL)
    assert frame.tensors is not None
    for got, want in zip(frame.tensors, arrays, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert frame.sha256 == payload_sha256(parts)
    assert reader.at_frame_boundary


def test_several_frames_in_one_buffer() -> None:
    data = encode_control_frame(MessageType.HELLO, 0, {"num_samples": 5}) + joined(
        encode_tensor_frame(MessageType.WEIGHTS, 2, [np.ones(3, np.float32)], 0)
    ) + encode_control_frame(MessageType.BYE, 2, {"reason": "done"})
    frames = FrameReader().feed(data)
    assert [f.type for f in frames] == [MessageType.HELLO, MessageType.WEIGHTS, MessageType.BYE]
    assert frames[0].body == {"num_samples": 5}
    assert frames[2].body == {"reason": "done"}


def test_big_endian_input_arrays_travel_as_little_endian() -> None:
    big = np.arange(4, dtype=">f4")
    frame = FrameReader().feed(joined(encode_tensor_frame(MessageType.UPDATE, 0, [big], 1)))[0]
    assert frame.tensors is not None
    np.testing.assert_array_equal(frame.tensors[0], np.arange(4, dtype=np.float32))


def test_allocator_receives_into_given_buffers_and_can_discard() -> None:
    arrays = [np.full((2, 2), 3.0, np.float32)]
    data = joined(encode_tensor_frame(MessageType.UPDATE, 1, arrays, 9))
    target = [np.zeros((2, 2), np.float32)]
    reader = FrameReader(allocator=lambda _h, _n, _s: target)
    frame = reader.feed(data)[0]
    assert frame.tensors is not None and frame.tensors[0] is target[0]
    np.testing.assert_array_equal(target[0], arrays[0])
    discarding = FrameReader(allocator=lambda _h, _n, _s: None)
    frames = discarding.feed(data + encode_control_frame(MessageType.BYE, 1, {}))
    assert frames[0].discarded and frames[0].tensors is None
    assert frames[1].type is MessageType.BYE  # the stream stays in sync after a discarded frame
    assert frames[0].sha256 == frame.sha256


def test_wrong_magic() -> None:
    data = bytearray(encode_control_frame(MessageType.HELLO, 0, {}))
    data[:4] = b"HTTP"
    with pytest.raises(ProtocolError, match="bad magic"):
        FrameReader().feed(bytes(data))


def test_unsupported_version_and_unknown_type() -> None:
    data = bytearray(encode_control_frame(MessageType.HELLO, 0, {}))
    data[4] = 9
    with pytest.raises(ProtocolError, match="unsupported protocol version 9"):
        FrameReader().feed(bytes(data))
    data = bytearray(encode_control_frame(MessageType.HELLO, 0, {}))
    data[5] = 200
    with pytest.raises(ProtocolError, match="unknown message type 200"):
        FrameReader().feed(bytes(data))


def test_declared_length_over_the_limit() -> None:
    header = encode_header(FrameHeader(MessageType.UPDATE, 0, 10_000))
    with pytest.raises(ProtocolError, match="over the limit of 1000"):
        FrameReader(Limits(max_frame_bytes=1000)).feed(header)
    control = encode_header(FrameHeader(MessageType.HELLO, 0, 2 << 20))
    with pytest.raises(ProtocolError, match="HELLO declares"):
        FrameReader().feed(control)


def test_too_many_tensors() -> None:
    data = joined(encode_tensor_frame(MessageType.UPDATE, 0, [np.ones(1, np.float32)] * 5, 1))
    with pytest.raises(ProtocolError, match="5 tensors, over the limit of 4"):
        FrameReader(Limits(max_tensors=4)).feed(data)


def test_disallowed_dtype_code() -> None:
    data = bytearray(joined(encode_tensor_frame(MessageType.UPDATE, 0, [np.ones(2, np.float32)], 1)))
    data[HEADER_SIZE + 16] = 99  # the first tensor's dtype code, right after the 16-byte prefix
    with pytest.raises(ProtocolError, match="dtype code 99"):
        FrameReader().feed(bytes(data))


def test_payload_length_must_match_tensor_header() -> None:
    data = bytearray(joined(encode_tensor_frame(MessageType.UPDATE, 0, [np.ones(2, np.float32)], 1)))
    struct.pack_into("!Q", data, 12, len(data) - HEADER_SIZE + 4)
    with pytest.raises(ProtocolError, match="does not match its header"):
        FrameReader().feed(bytes(data) + b"\0" * 4)


def test_control_payload_must_be_a_json_object() -> None:
    payload = b"[1, 2]"
    data = encode_header(FrameHeader(MessageType.HELLO, 0, len(payload))) + payload
    with pytest.raises(ProtocolError, match="must be a JSON object"):
        FrameReader().feed(data)
    payload = b"\xff\xfe"
    data = encode_header(FrameHeader(MessageType.HELLO, 0, len(payload))) + payload
    with pytest.raises(ProtocolError, match="not valid JSON"):
        FrameReader().feed(data)


def test_encoder_refuses_object_arrays() -> None:
    with pytest.raises(ValueError, match="cannot travel on the wire"):
        encode_tensor_frame(MessageType.UPDATE, 0, [np.array(["a"], dtype=object)], 1)


VALID = [
    encode_control_frame(MessageType.HELLO, 0, {"num_samples": 3}),
    joined(encode_tensor_frame(MessageType.UPDATE, 5, [np.ones((2, 3), np.float32), np.arange(3)], 7)),
    joined(encode_tensor_frame(MessageType.WEIGHTS, 1, [np.ones(4, np.float16)], 0, Flags.FINAL)),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=512))
def test_fuzz_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    reader = FrameReader(Limits(max_frame_bytes=1 << 16))
    with contextlib.suppress(ProtocolError):
        reader.feed(data)


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(min_value=0, max_value=200), st.integers(0, 255)), max_size=6),
    st.integers(min_value=0, max_value=200),
)
def test_fuzz_mutated_frames_raise_only_protocol_errors(
    frame: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(frame)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    data = data[: max(0, len(data) - cut)]
    with contextlib.suppress(ProtocolError):
        FrameReader(Limits(max_frame_bytes=1 << 16)).feed(bytes(data))
