"""Hostile inputs found against the chief (issue 13): each must end in ProtocolError, nothing else,
and nothing may be allocated for a tensor before its headers pass the limits."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgefed.wire import (
    HEADER_SIZE,
    FrameHeader,
    FrameReader,
    Limits,
    MessageType,
    ProtocolError,
    TensorSpec,
    encode_control_frame,
    encode_header,
    encode_tensor_frame,
    refuse_tensors,
)

SPEC_START = HEADER_SIZE + 16  # the tensor prefix is count u32, num_samples u64, spec_len u32


def control(payload: bytes, message_type: MessageType = MessageType.HELLO) -> bytes:
    return encode_header(FrameHeader(message_type, 0, len(payload))) + payload


def tensor_frame(shape: tuple[int, ...], dims: tuple[int, ...]) -> bytes:
    """A valid float32 frame of the given shape whose spec block then claims dims instead."""
    parts = encode_tensor_frame(MessageType.UPDATE, 0, [np.ones(shape, np.float32)], 1)
    data = bytearray(b"".join(bytes(p) for p in parts))
    struct.pack_into(f"!{len(dims)}Q", data, SPEC_START + 2, *dims)
    return bytes(data)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    for nested in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        payload = b'{"x":' + nested + b"}"
        with pytest.raises(ProtocolError, match="nested"):
            FrameReader().feed(control(payload))


def test_nesting_depth_limit_is_explicit_and_counts_only_structure() -> None:
    limits = Limits(max_json_depth=3)
    assert FrameReader(limits).feed(control(b'{"a":[{"b":1}]}'))[0].body == {"a": [{"b": 1}]}
    with pytest.raises(ProtocolError, match="nested deeper than 3"):
        FrameReader(limits).feed(control(b'{"a":[[{"b":1}]]}'))
    # brackets inside strings (chat text, escaped quotes included) are not structure
    text = '[[[[[ \\" {{{{ ]]'
    body = FrameReader(limits).feed(control(('{"text":"' + text + '"}').encode()))[0].body
    assert body == {"text": '[[[[[ " {{{{ ]]'}


def test_integer_of_5000_digits_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="number of 5000 characters"):
        FrameReader().feed(control(b'{"num_samples":' + b"9" * 5000 + b"}"))
    with pytest.raises(ProtocolError, match="number of"):
        FrameReader().feed(control(b'{"x":-' + b"1" * 300 + b".5e3}"))


def test_non_finite_numbers_and_duplicate_keys_are_refused() -> None:
    for payload in (b'{"x":NaN}', b'{"x":-Infinity}', b'{"x":1e999}'):
        with pytest.raises(ProtocolError, match="not a finite number"):
            FrameReader().feed(control(payload))
    with pytest.raises(ProtocolError, match="duplicate key 'a'"):
        FrameReader().feed(control(b'{"a":1,"a":2}'))


def test_unknown_flag_bits_are_refused() -> None:
    data = bytearray(encode_control_frame(MessageType.HELLO, 0, {}))
    struct.pack_into("!H", data, 6, 0x8000)
    with pytest.raises(ProtocolError, match="unknown flags 0x8000"):
        FrameReader().feed(bytes(data))
    struct.pack_into("!H", data, 6, 0x8001)  # FINAL plus an unknown bit
    with pytest.raises(ProtocolError, match="unknown flags 0x8000"):
        FrameReader().feed(bytes(data))


def test_shape_that_multiplies_past_the_address_space_is_refused_before_allocation() -> None:
    # A zero dimension makes the byte count 0, so the payload length checks out; the other
    # dimensions still overflow numpy's size computation (ValueError: array is too big).
    data = tensor_frame((0, 1, 1, 1), (0, 1 << 30, 1 << 30, 1 << 30))
    asked: list[list[TensorSpec]] = []

    def allocator(_h: FrameHeader, _n: int, specs: list[TensorSpec]) -> list[np.ndarray]:
        asked.append(specs)
        return [np.empty(s.shape, np.float32) for s in specs]

    with pytest.raises(ProtocolError, match="elements"):
        FrameReader(allocator=allocator).feed(data)
    with pytest.raises(ProtocolError, match="elements"):
        FrameReader().feed(data)  # the default allocator
    assert asked == []


def test_tensor_memory_is_asked_for_only_after_every_header_check() -> None:
    asked: list[int] = []

    def allocator(_h: FrameHeader, _n: int, specs: list[TensorSpec]) -> list[np.ndarray]:
        asked.append(sum(s.nbytes for s in specs))
        return [np.empty(s.shape, np.float32) for s in specs]

    limits = Limits(max_frame_bytes=1 << 20)
    reader = FrameReader(limits, allocator=allocator)
    big = tensor_frame((4,), (1 << 18,))  # declares a 1 MiB tensor in a 16-byte payload
    with pytest.raises(ProtocolError, match="does not match its header"):
        reader.feed(big)
    header_only = joined_header(MessageType.UPDATE, (1 << 20) + 100)
    with pytest.raises(ProtocolError, match="over the limit"):
        FrameReader(limits, allocator=allocator).feed(header_only)
    assert asked == []
    ok = tensor_frame((4,), (4,))
    assert FrameReader(limits, allocator=allocator).feed(ok)[0].tensors is not None
    assert asked == [16]


def joined_header(message_type: MessageType, length: int) -> bytes:
    return encode_header(FrameHeader(message_type, 0, length))


def test_sample_count_of_a_tensor_frame_is_bounded() -> None:
    data = bytearray(b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, 0, [np.ones(2)], 1)))
    struct.pack_into("!Q", data, HEADER_SIZE + 4, 2**64 - 1)
    with pytest.raises(ProtocolError, match="claims 18446744073709551615 samples, over the limit"):
        FrameReader().feed(bytes(data))
    struct.pack_into("!Q", data, HEADER_SIZE + 4, 10**12)
    assert FrameReader().feed(bytes(data))[0].num_samples == 10**12


def test_refuse_tensors_allocator_ends_a_tensor_frame_before_its_data() -> None:
    reader = FrameReader(allocator=refuse_tensors)
    data = b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, 3, [np.ones(8, np.float32)], 1))
    with pytest.raises(ProtocolError, match="UPDATE is not expected here"):
        reader.feed(data[: SPEC_START + 10])  # the tensor header only: the data never needs to arrive
    assert FrameReader(allocator=refuse_tensors).feed(encode_control_frame(MessageType.BYE, 0, {}))


def test_control_payload_memory_grows_with_the_bytes_received() -> None:
    reader = FrameReader()
    declared = 1 << 20
    reader.feed(joined_header(MessageType.HELLO, declared) + b'{"pad":"')
    assert len(reader.buffer()) < 1 << 17  # not a 1 MiB buffer for a peer that sent 8 bytes
    padding = b"x" * (declared - 10)
    frames = reader.feed(padding + b'"}')
    assert len(frames) == 1 and len(frames[0].body["pad"]) == declared - 10
