"""The worker's lean encoders (issue 14, item 4): the same bytes as the whole-array encoders, less memory.

Top-k's radix selection is compared with the np.argpartition selection it replaced (kept below as the
reference); int8 encoded while it is sent (int8_stream, FrameStream) with encode_int8 and
encode_tensor_frame; the residual each leaves with the one the whole encoding leaves, bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgefed.compression import (
    Compressor,
    add_into,
    decode_dense,
    encode_int8,
    encode_topk,
    parse_compression,
    topk_count,
)
from edgefed.compression.codecs import LEAN_CHUNK, quantize_int8, topk_indices
from edgefed.compression.streaming import int8_stream
from edgefed.wire import (
    EncodedStream,
    EncodedTensor,
    Encoding,
    FrameStream,
    MessageType,
    encode_tensor_frame,
    payload_sha256,
    stream_tensor_frame,
)

SIZES = [1, 2, 255, 256, 257, 1000, LEAN_CHUNK - 1, LEAN_CHUNK + 300, 3 * LEAN_CHUNK + 17]
FRACTIONS = [1e-4, 0.01, 0.3, 0.999, 1.0]


def reference_topk(x: np.ndarray, fraction: float, int8: bool) -> EncodedTensor:
    """encode_topk as it was before the lean selection (np.argpartition over |x|)."""
    flat = np.asarray(x, np.float32).reshape(-1)
    k = topk_count(flat.size, fraction)
    if k == flat.size:
        indices = np.arange(flat.size, dtype=np.uint32)
    else:
        indices = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :].astype(np.uint32)
        indices.sort()
    kept = flat[indices]
    if int8:
        values, scales = quantize_int8(kept)
        return EncodedTensor.build(Encoding.TOPK_INT8, x.shape, values, scales, indices)
    return EncodedTensor.build(Encoding.TOPK, x.shape, kept, indices=indices)


def wire_bytes(tensor: EncodedTensor) -> bytes:
    return b"".join(p.tobytes() for p in tensor.parts())


def streamed_bytes(stream: FrameStream) -> bytes:
    return b"".join(bytes(part) for part in stream)


@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("size", SIZES)
def test_topk_sends_the_bytes_argpartition_chose_when_magnitudes_are_distinct(size: int, int8: bool) -> None:
    rng = np.random.default_rng(size)
    for fraction in FRACTIONS:
        ranks = rng.permutation(size).astype(np.float64) + 1  # distinct magnitudes at each of the scales below
        x = (ranks * rng.choice([-1.0, 1.0], size) * rng.choice([1e-30, 1e-3, 1e30], size)).astype(np.float32)
        assert np.unique(np.abs(x)).size == size  # no ties: every valid top-k is this one set
        got, want = encode_topk(x, fraction, int8), reference_topk(x, fraction, int8)
        assert wire_bytes(got) == wire_bytes(want), (size, fraction)


def assert_valid_topk(x: np.ndarray, indices: np.ndarray, k: int) -> None:
    """indices: k distinct sorted positions, none smaller in magnitude than any left out; among the
    values at the threshold magnitude, the lowest positions."""
    magnitude = np.abs(x)
    assert indices.size == k and np.all(np.diff(indices.astype(np.int64)) > 0)
    chosen = np.zeros(x.size, bool)
    chosen[indices] = True
    if k and k < x.size:
        threshold = magnitude[indices].min()
        assert magnitude[~chosen].max() <= threshold
        assert np.all(chosen[magnitude > threshold])
        tied = np.flatnonzero(magnitude == threshold)
        taken = chosen[tied]
        assert np.all(taken[: taken.sum()]) and not np.any(taken[taken.sum() :])  # lowest indices first


@pytest.mark.parametrize("size", SIZES)
def test_topk_with_ties_keeps_a_valid_top_k_of_the_same_magnitudes(size: int) -> None:
    """Where several values share the threshold magnitude, argpartition takes an unspecified few of
    them, the radix selection the lowest-indexed: the sets may differ in those positions only; the
    magnitudes kept are the same multiset and the residual is what was not sent, exactly."""
    rng = np.random.default_rng(1000 + size)
    for fraction in FRACTIONS:
        levels = np.array([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 2.0, -2.0, 1e-40, -1e-40], np.float32)  # +-0, subnormals
        x = rng.choice(levels, size).astype(np.float32)
        k = topk_count(size, fraction)
        indices = topk_indices(x, k)
        assert_valid_topk(x, indices, k)
        want = reference_topk(x, fraction, int8=False)
        assert want.indices is not None
        np.testing.assert_array_equal(np.sort(np.abs(x[indices])), np.sort(np.abs(x[want.indices])))
        strictly_above = np.flatnonzero(np.abs(x) > np.abs(x[indices]).min())
        assert set(strictly_above.tolist()) <= set(want.indices.tolist()) & set(indices.tolist())
        residual = x.copy()
        sent = encode_topk(residual, fraction)
        add_into(residual, sent, -1.0)
        expected = x.copy()
        expected[indices] = 0
        np.testing.assert_array_equal(residual, expected)


def test_topk_selection_edges() -> None:
    x = np.array([3.0, -3.0, np.inf, -1.0], np.float32)
    assert topk_indices(x, 0).size == 0
    assert topk_indices(x, 1).tolist() == [2]  # inf is the largest magnitude, as for argpartition
    assert topk_indices(x, 2).tolist() == [0, 2]  # tie of 3 and -3: the lower index
    assert topk_indices(x, 4).tolist() == [0, 1, 2, 3]
    assert topk_indices(np.empty(0, np.float32), 0).size == 0


def drain(stream: EncodedStream) -> bytes:
    return b"".join(part.tobytes() for part in stream.produce())


@pytest.mark.parametrize("shape", [(), (0,), (1,), (255,), (257,), (3, LEAN_CHUNK + 5), (5 * LEAN_CHUNK,)])
def test_int8_stream_sends_encode_int8_bytes_and_leaves_its_residual(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape) + sum(shape))
    delta = (rng.standard_normal(shape) * rng.choice([0.0, 1e-20, 1.0, 1e37], shape)).astype(np.float32)
    whole = delta.copy()
    encoded = encode_int8(whole)
    add_into(whole, encoded, -1.0)
    streamed = delta.copy()
    stream = int8_stream(streamed)
    assert (stream.encoding, stream.shape, stream.count, stream.nbytes) == (
        encoded.encoding, encoded.shape, encoded.count, encoded.nbytes)
    np.testing.assert_array_equal(streamed, delta)  # nothing happens before the stream is sent
    assert drain(stream) == wire_bytes(encoded)
    assert streamed.tobytes() == whole.tobytes()  # the residual, bit for bit


def test_an_abandoned_int8_stream_keeps_the_unsent_delta_whole() -> None:
    delta = np.random.default_rng(7).standard_normal(4 * LEAN_CHUNK).astype(np.float32)
    residual = delta.copy()
    parts = int8_stream(residual).produce()
    next(parts)  # the scales
    first = next(parts)  # the first chunk of values, handed over: counted as sent
    parts.close()  # the link dropped here
    np.testing.assert_array_equal(residual[LEAN_CHUNK:], delta[LEAN_CHUNK:])
    scales = quantize_int8(delta)[1][: LEAN_CHUNK // 256]
    sent = np.repeat(scales, 256) * first.astype(np.float32)
    assert residual[:LEAN_CHUNK].tobytes() == (delta[:LEAN_CHUNK] - sent).tobytes()


@pytest.mark.parametrize("text", ["int8", "topk:0.01+int8", "topk:0.2"])
@pytest.mark.parametrize("hashing", [False, True])
def test_a_streamed_update_frame_is_the_whole_frame_byte_for_byte(text: str, hashing: bool) -> None:
    """Over rounds of error feedback: the same frame, digest and residuals as compress_trained's."""
    whole, streamed = Compressor(parse_compression(text)), Compressor(parse_compression(text))
    rng = np.random.default_rng(3)
    for round_ in range(4):
        base = [rng.standard_normal((40, LEAN_CHUNK // 20 + 3)).astype(np.float32), np.arange(5, dtype=np.int64)]
        trained = [base[0] + rng.standard_normal(base[0].shape).astype(np.float32), base[1] * round_]
        whole.rebase(base)
        streamed.rebase(base)
        frame = encode_tensor_frame(MessageType.UPDATE, round_, whole.compress_trained(trained), 100)
        stream = stream_tensor_frame(MessageType.UPDATE, round_, streamed.compress_trained_streamed(trained), 100)
        digests: list[str] = []
        stream.hashing, stream.on_done = hashing, digests.append
        assert streamed_bytes(stream) == b"".join(bytes(p) for p in frame)
        assert digests == [payload_sha256(frame) if hashing else ""]
        for mine, theirs in zip(streamed.residuals, whole.residuals, strict=True):
            assert (mine is None and theirs is None) or (mine is not None and theirs is not None
                                                         and mine.tobytes() == theirs.tobytes())
        with pytest.raises(RuntimeError, match="produced once"):
            next(iter(stream))


def test_a_stream_that_breaks_its_spec_is_refused_before_a_wrong_frame_ends() -> None:
    short = EncodedStream(Encoding.INT8, (300,), 300, lambda: iter([np.zeros(2, np.float32)]))
    with pytest.raises(ValueError, match="fewer bytes"):
        streamed_bytes(stream_tensor_frame(MessageType.UPDATE, 1, [short], 1))
    long = EncodedStream(Encoding.INT8, (4,), 4, lambda: iter([np.zeros(1, np.float32), np.zeros(9, np.int8)]))
    with pytest.raises(ValueError, match="more bytes"):
        streamed_bytes(stream_tensor_frame(MessageType.UPDATE, 1, [long], 1))


def test_decoding_a_streamed_int8_update_gives_the_delta_within_its_bound() -> None:
    delta = np.random.default_rng(11).standard_normal((7, 999)).astype(np.float32)
    encoded = np.frombuffer(drain(int8_stream(delta.copy())), np.uint8)
    scales = encoded[: 4 * -(-delta.size // 256)].view("<f4")
    values = encoded[scales.nbytes :].view(np.int8)
    decoded = decode_dense(EncodedTensor.build(Encoding.INT8, delta.shape, values, scales))
    assert np.all(np.abs(decoded - delta) <= np.repeat(scales, 256)[: delta.size].reshape(delta.shape) / 2 + 1e-6)
