"""The encoded tensors of the codec (docs/protocol.md, Encodings): layout, round trips, and every
structural limit refused while decoding, as a ProtocolError, before the frame reaches its caller."""

from __future__ import annotations

import random
import struct
from math import prod

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefed.wire import (
    HEADER_SIZE,
    INT8_BLOCK,
    MAX_SCALE,
    EncodedTensor,
    Encoding,
    FrameHeader,
    FrameReader,
    Limits,
    MessageType,
    ProtocolError,
    TensorSpec,
    encode_tensor_frame,
    has_non_finite,
)

PREFIX = 16  # count u32, samples u64, spec_len u32


def joined(parts: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(p) for p in parts)


def frame_of(*tensors: np.ndarray | EncodedTensor, num_samples: int = 5) -> bytes:
    return joined(encode_tensor_frame(MessageType.UPDATE, 3, list(tensors), num_samples))


def decode(data: bytes, limits: Limits | None = None, seed: int = 0) -> list:
    reader, rng, frames, position = FrameReader(limits), random.Random(seed), [], 0
    while position < len(data):
        size = rng.randint(1, 97)
        frames += reader.feed(data[position : position + size])
        position += size
    assert len(frames) == 1
    return frames


def sample_tensors() -> list[EncodedTensor]:
    rng = np.random.default_rng(1)
    n = 3 * INT8_BLOCK + 7  # a partial last block
    return [
        EncodedTensor.build(Encoding.FP16, (5, 3), rng.standard_normal(15)),
        EncodedTensor.build(Encoding.INT8, (n,), rng.integers(-127, 128, n), rng.random(4)),
        EncodedTensor.build(Encoding.TOPK, (40, 10), rng.standard_normal(6), indices=[0, 3, 50, 51, 200, 399]),
        EncodedTensor.build(Encoding.TOPK_INT8, (600,), rng.integers(-127, 128, 260), rng.random(2),
                            np.arange(0, 520, 2)),
        EncodedTensor.build(Encoding.TOPK, (0, 4), np.zeros(0), indices=np.zeros(0)),  # empty tensor
        EncodedTensor.build(Encoding.INT8, (), [-3], [0.5]),  # 0-d tensor: one value, one scale
    ]


def test_a_float32_frame_is_the_version_1_layout_byte_for_byte() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    spec = struct.pack("!BBQQ", 2, 2, 2, 3)
    payload = struct.pack("!IQI", 1, 5, len(spec)) + spec + array.astype("<f4").tobytes()
    header = b"EFED" + struct.pack("!BBHIQ", 1, MessageType.UPDATE, 0, 3, len(payload))
    assert frame_of(array) == header + payload


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encoded_and_plain_tensors_round_trip_in_any_chunking(seed: int) -> None:
    encoded = sample_tensors()
    plain = np.arange(4, dtype=np.float64)
    frame = decode(frame_of(encoded[0], plain, *encoded[1:]), seed=seed)[0]
    assert frame.decoded is not None and frame.tensors is not None
    assert frame.specs[1] == TensorSpec("float64", (4,))
    np.testing.assert_array_equal(frame.decoded[1], plain)
    for got, want, spec in zip(frame.decoded[:1] + frame.decoded[2:], encoded, frame.specs[:1] + frame.specs[2:],
                               strict=True):
        assert isinstance(got, EncodedTensor)
        assert (got.encoding, got.shape, got.count) == (want.encoding, want.shape, want.count)
        assert spec.encoding is want.encoding and spec.dtype == "float32" and spec.nbytes == want.nbytes
        for part_got, part_want in zip(got.parts(), want.parts(), strict=True):
            assert part_got.dtype == part_want.dtype
            np.testing.assert_array_equal(part_got, part_want)
    # the allocator filled one uint8 buffer per encoded tensor, and the parts are views of it
    assert frame.tensors[0].dtype == np.uint8 and frame.tensors[0].shape == (encoded[0].nbytes,)
    assert np.shares_memory(frame.decoded[2].values, frame.tensors[2])


def test_sizes_follow_the_documented_formulas() -> None:
    n, k = 1000, 37
    assert EncodedTensor.build(Encoding.FP16, (n,), np.zeros(n)).nbytes == 2 * n
    assert EncodedTensor.build(Encoding.INT8, (n,), np.zeros(n), np.zeros(4)).nbytes == n + 4 * 4
    assert EncodedTensor.build(Encoding.TOPK, (n,), np.zeros(k), indices=np.arange(k)).nbytes == 8 * k
    assert EncodedTensor.build(Encoding.TOPK_INT8, (n,), np.zeros(k), np.zeros(1), np.arange(k)).nbytes == 5 * k + 4


def test_a_sparse_spec_carries_its_count_after_the_shape() -> None:
    tensor = EncodedTensor.build(Encoding.TOPK, (10, 10), [1.0, 2.0], indices=[4, 9])
    data = frame_of(tensor)
    spec_len = struct.unpack_from("!I", data, HEADER_SIZE + 12)[0]
    assert data[HEADER_SIZE + PREFIX : HEADER_SIZE + PREFIX + spec_len] == struct.pack("!BBQQQ", 34, 2, 10, 10, 2)
    assert struct.unpack_from("<2I", data, HEADER_SIZE + PREFIX + spec_len) == (4, 9)


def data_offset(data: bytes) -> int:
    return HEADER_SIZE + PREFIX + struct.unpack_from("!I", data, HEADER_SIZE + 12)[0]


def patched(data: bytes, at: int, fmt: str, *values: float) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, *values)
    return bytes(out)


TOPK = EncodedTensor.build(Encoding.TOPK, (8,), [1.0, 2.0, 3.0], indices=[1, 4, 6])
TOPK_INT8 = EncodedTensor.build(Encoding.TOPK_INT8, (8,), [1, 2, 3], [0.25], [1, 4, 6])
INT8 = EncodedTensor.build(Encoding.INT8, (300,), np.ones(300), [0.5, 0.25])


@pytest.mark.parametrize(("tensor", "where", "fmt", "values", "error"), [
    (TOPK, 0, "<3I", (1, 1, 6), "strictly increasing"),  # duplicate index
    (TOPK, 0, "<3I", (4, 1, 6), "strictly increasing"),
    (TOPK, 0, "<3I", (1, 4, 8), "outside its 8 elements"),
    (TOPK, 0, "<3I", (1, 4, 2**32 - 1), "outside"),
    (TOPK_INT8, 0, "<3I", (6, 4, 1), "strictly increasing"),
    (TOPK_INT8, 12, "<f", (float("nan"),), "scale"),
    (INT8, 0, "<f", (float("inf"),), "scale"),
    (INT8, 4, "<f", (-0.5,), "scale"),
    (INT8, 0, "<f", (MAX_SCALE * 1.01,), "scale"),
])
def test_broken_encoded_data_is_refused(tensor: EncodedTensor, where: int, fmt: str, values: tuple, error: str) -> None:
    data = frame_of(tensor)
    decode(data)  # the frame as encoded is fine
    with pytest.raises(ProtocolError, match=error):
        decode(patched(data, data_offset(data) + where, fmt, *values))


def spec_at(data: bytes) -> int:
    return HEADER_SIZE + PREFIX


@pytest.mark.parametrize(("fmt", "values", "error"), [
    ("!BBQQ", (34, 1, 8, 9), "keeps 9 values of a tensor of 8"),
    ("!BBQQ", (34, 1, 2**33, 3), "32-bit"),
    ("!BBQQ", (34, 1, 8, 4), "does not match"),  # more values declared than carried
    ("!BBQQ", (34, 1, 4, 2), "does not match"),  # fewer values declared than carried
    ("!BB", (99, 1), "dtype code 99"),
])
def test_broken_sparse_specs_are_refused_before_the_data(fmt: str, values: tuple, error: str) -> None:
    data = frame_of(TOPK)

    def allocator(_header: FrameHeader, _samples: int, _specs: list[TensorSpec]) -> list[np.ndarray]:
        raise AssertionError("the allocator must not be asked for a broken spec")

    reader = FrameReader(Limits(max_frame_bytes=1 << 36), allocator=allocator)
    with pytest.raises(ProtocolError, match=error):
        reader.feed(patched(data, spec_at(data), fmt, *values))


def test_a_dense_encoding_with_a_count_or_the_wrong_length_is_refused() -> None:
    data = frame_of(INT8)
    with pytest.raises(ProtocolError, match="does not match"):  # the payload is one scale short
        decode(patched(data, spec_at(data), "!BBQ", 33, 1, 600))
    # a dense spec has no count field: one more u64 in the spec block is left over
    spec = struct.pack("!BBQQ", 33, 1, 300, 0)
    body = struct.pack("!IQI", 1, 5, len(spec)) + spec + data[data_offset(data):]
    header = b"EFED" + struct.pack("!BBHIQ", 1, MessageType.UPDATE, 0, 3, len(body))
    with pytest.raises(ProtocolError, match="trailing"):
        FrameReader().feed(header + body)


def test_the_logical_size_is_bounded_by_the_frame_limit() -> None:
    """A top-k tensor of a few bytes may not claim a shape whose float32 sum would pass the limit."""
    small = EncodedTensor.build(Encoding.TOPK, (2000,), [1.0], indices=[7])
    with pytest.raises(ProtocolError, match="over the frame limit"):
        FrameReader(Limits(max_frame_bytes=4096)).feed(frame_of(small))
    decode(frame_of(small), Limits(max_frame_bytes=8000))


def test_a_refused_frame_discards_encoded_data_and_stays_in_sync() -> None:
    data = frame_of(*sample_tensors()) + frame_of(TOPK)
    reader = FrameReader(allocator=lambda *_: None)
    frames = reader.feed(data)
    assert [f.discarded for f in frames] == [True, True] and frames[0].decoded is None
    assert reader.at_frame_boundary


def test_build_refuses_what_the_decoder_refuses() -> None:
    with pytest.raises(ProtocolError, match="strictly increasing"):
        EncodedTensor.build(Encoding.TOPK, (4,), [1.0, 2.0], indices=[2, 2])
    with pytest.raises(ProtocolError, match="needs 1 scales"):
        EncodedTensor.build(Encoding.INT8, (4,), [1, 2, 3, 4])
    with pytest.raises(ProtocolError, match="carries 3 values"):
        EncodedTensor.build(Encoding.FP16, (4,), [1.0, 2.0, 3.0])
    with pytest.raises(ProtocolError, match="carries indices"):
        EncodedTensor.build(Encoding.FP16, (1,), [1.0], indices=[0])


def test_non_finite_values_are_left_to_the_receiver_like_plain_tensors() -> None:
    """fp16 and top-k values may be NaN/Inf (the chief answers REJECT non-finite); int8 never is."""
    tensor = EncodedTensor.build(Encoding.FP16, (2,), [1.0, np.inf])
    decoded = decode(frame_of(tensor))[0].decoded[0]
    assert has_non_finite(decoded)
    assert not has_non_finite(TOPK) and not has_non_finite(INT8)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_encoded_tensor_round_trips_in_any_chunking(data: st.DataObject) -> None:
    encoding = data.draw(st.sampled_from(list(Encoding)))
    shape = tuple(data.draw(st.lists(st.integers(0, 40), max_size=3)))
    size = prod(shape)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    count = data.draw(st.integers(0, size)) if encoding.sparse else size
    indices = np.sort(rng.choice(size, count, replace=False)) if encoding.sparse else None
    values = rng.integers(-128, 128, count) if encoding.quantized else rng.standard_normal(count) * 1e3
    scales = None
    if encoding.quantized:
        scales = rng.random(-(-count // INT8_BLOCK)) * data.draw(st.sampled_from([0.0, 1e-30, 1.0, MAX_SCALE]))
    tensor = EncodedTensor.build(encoding, shape, values, scales, indices)
    got = decode(frame_of(tensor), seed=data.draw(st.integers(0, 2**32)))[0].decoded[0]
    assert (got.encoding, got.shape, got.count) == (encoding, shape, count)
    for part_got, part_want in zip(got.parts(), tensor.parts(), strict=True):
        np.testing.assert_array_equal(part_got, part_want)
