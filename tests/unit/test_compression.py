"""The compression library: settings, per-format error bounds, error feedback, chief-side adds, and
the bytes each format puts on the wire for a realistic model (through the real frame encoder)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from edgefed.compression import (
    NONE,
    CompressionError,
    CompressionSetting,
    CompressionSettingError,
    Compressor,
    DeltaSum,
    add_into,
    decode_dense,
    encode_fp16,
    encode_int8,
    encode_topk,
    first_non_finite,
    parse_compression,
    topk_count,
    update_mismatch,
)
from edgefed.compression.codecs import CHUNK
from edgefed.errors import USER_ERRORS
from edgefed.wire import (
    INT8_BLOCK,
    EncodedTensor,
    Encoding,
    FrameReader,
    MessageType,
    Tensor,
    encode_tensor_frame,
    specs_of,
)

SETTINGS = ["none", "fp16", "int8", "topk:0.01", "topk:0.01+int8"]


def awkward(size: int, seed: int = 0) -> np.ndarray:
    """Values over many magnitudes, with zeros, outliers and a partial last int8 block."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(size) * 10.0 ** rng.integers(-9, 4, size)).astype(np.float32)
    x[rng.random(size) < 0.05] = 0
    x[:3] = [1e4, -3e-8, 0.0]
    return x


# -- settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "encoding", "fraction", "canonical"), [
    ("none", None, 1.0, "none"), ("fp16", Encoding.FP16, 1.0, "fp16"), (" INT8 ", Encoding.INT8, 1.0, "int8"),
    ("topk:0.01", Encoding.TOPK, 0.01, "topk:0.01"), ("topk:0.05+int8", Encoding.TOPK_INT8, 0.05, "topk:0.05+int8"),
    ("topk:1", Encoding.TOPK, 1.0, "topk:1"), (None, None, 1.0, "none"),
])
def test_settings_parse_to_a_canonical_form(text: str | None, encoding: Encoding | None, fraction: float,
                                             canonical: str) -> None:
    setting = parse_compression(text)
    assert (setting.encoding, setting.fraction, str(setting)) == (encoding, fraction, canonical)
    assert parse_compression(str(setting)) == setting


@pytest.mark.parametrize(("text", "says"), [
    ("gzip", "is not one of"), ("topk", "needs a fraction"), ("topk+int8", "needs a fraction"),
    ("topk:0", "in (0, 1]"), ("topk:1.5", "in (0, 1]"), ("topk:nan", "in (0, 1]"), ("topk:-0.1", "in (0, 1]"),
    ("topk:abc", "in (0, 1]"), ("topk:0.01+fp16", "only with int8"), ("int8+topk:0.1", "is not one of"), (3, "string"),
])
def test_bad_settings_fail_in_one_line_naming_the_key(text: object, says: str) -> None:
    with pytest.raises(CompressionSettingError) as caught:
        parse_compression(text)
    message = str(caught.value)
    assert says in message and message.startswith("federation.compression") and "\n" not in message
    assert CompressionSettingError in USER_ERRORS  # the CLI prints it without a traceback


# -- error bounds of one round trip -----------------------------------------------------------------
def test_fp16_is_within_half_an_fp16_ulp_and_clips_at_its_range() -> None:
    x = awkward(5000)
    back = decode_dense(encode_fp16(x))
    inside = np.abs(x) <= 65504
    assert np.all(np.abs(back - x)[inside] <= 2.0**-11 * np.abs(x[inside]) + 2.0**-25)
    big = np.array([1e6, -7e4], np.float32)
    np.testing.assert_array_equal(decode_dense(encode_fp16(big)), [65504, -65504])


def test_int8_is_within_1_254_of_each_blocks_largest_value() -> None:
    x = awkward(3 * INT8_BLOCK + 11).reshape(-1, 1)
    encoded = encode_int8(x)
    assert encoded.values.dtype == np.int8 and len(encoded.scales) == 4
    error = np.abs(decode_dense(encoded) - x).reshape(-1)
    for start in range(0, x.size, INT8_BLOCK):
        block = x.reshape(-1)[start : start + INT8_BLOCK]
        assert error[start : start + INT8_BLOCK].max() <= np.abs(block).max() / 254 * (1 + 1e-6)
    assert decode_dense(encode_int8(np.zeros(300, np.float32))).tolist() == [0.0] * 300
    huge = np.array([3.4e38, -3.4e38, 1.0], np.float32)  # the scale is capped at what decoders accept
    assert np.isfinite(decode_dense(encode_int8(huge))).all()


@pytest.mark.parametrize("fraction", [0.01, 0.1, 1.0])
def test_topk_keeps_exactly_the_largest_values(fraction: float) -> None:
    x = awkward(4000, seed=3)
    encoded = encode_topk(x, fraction)
    k = math.ceil(fraction * x.size)
    assert encoded.count == topk_count(x.size, fraction) == k
    back = decode_dense(encoded)
    kept = encoded.indices.astype(np.int64)
    np.testing.assert_array_equal(back[kept], x[kept])
    dropped = np.setdiff1d(np.arange(x.size), kept)
    if dropped.size:
        assert np.abs(x[kept]).min() >= np.abs(x[dropped]).max()
        assert not back[dropped].any()


def test_topk_int8_quantizes_the_kept_values_per_block() -> None:
    x = awkward(60000, seed=4)
    encoded = encode_topk(x, 0.01, int8=True)
    kept = encoded.indices.astype(np.int64)
    error = np.abs(decode_dense(encoded)[kept] - x[kept])
    for start in range(0, kept.size, INT8_BLOCK):
        block = x[kept[start : start + INT8_BLOCK]]
        assert error[start : start + INT8_BLOCK].max() <= np.abs(block).max() / 254 * (1 + 1e-6)


# -- the chief's add --------------------------------------------------------------------------------
@pytest.mark.parametrize("encode", [encode_fp16, encode_int8, lambda x: encode_topk(x, 0.01),
                                    lambda x: encode_topk(x, 0.3, int8=True), lambda x: x])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_add_into_a_running_sum_equals_adding_the_decoded_tensor(
    encode: Callable[[np.ndarray], Tensor], dtype: str
) -> None:
    x = awkward(CHUNK + 3 * INT8_BLOCK + 5, seed=5).reshape(-1, 1)  # crosses a chunk boundary
    tensor = encode(x)
    start = np.random.default_rng(6).standard_normal(x.shape).astype(dtype)
    total = start.copy()
    add_into(total, tensor, 3.0)
    expected = start + 3.0 * decode_dense(tensor, dtype)
    np.testing.assert_allclose(total, expected, rtol=1e-6 if dtype == "float32" else 1e-12, atol=1e-30)
    with pytest.raises(ValueError, match="shape"):
        add_into(np.zeros(3), tensor)


def test_update_checks_name_what_does_not_fit() -> None:
    model = specs_of([np.zeros((4, 3), np.float32), np.zeros(3, np.int64)])
    int8 = CompressionSetting(Encoding.INT8)
    good = [encode_int8(np.ones((4, 3), np.float32)), np.zeros(3, np.int64)]
    assert update_mismatch(model, specs_of(good), int8) is None
    assert "expected fp16" in str(update_mismatch(model, specs_of(good), CompressionSetting(Encoding.FP16)))
    assert "expected float32[4, 3]" in str(update_mismatch(model, specs_of(good), NONE))
    assert "shape" in str(update_mismatch(model, specs_of([encode_int8(np.ones(12, np.float32)), good[1]]), int8))
    assert "expected 2 tensors" in str(update_mismatch(model, specs_of(good[:1]), int8))
    nan = [EncodedTensor.build(Encoding.TOPK, (4, 3), [np.nan], indices=[2]), good[1]]
    assert first_non_finite(nan) == 0 and first_non_finite(good) is None
    assert first_non_finite([np.ones(2), np.array([1.0, np.inf])]) == 1


# -- error feedback ---------------------------------------------------------------------------------
def deltas(rounds: int, size: int = 5000) -> list[np.ndarray]:
    """Deltas with a steady direction plus noise, as SGD steps have."""
    rng = np.random.default_rng(7)
    drift = rng.standard_normal(size).astype(np.float32) * 0.01
    return [drift + rng.standard_normal(size).astype(np.float32) * 0.01 for _ in range(rounds)]


@pytest.mark.parametrize("text", SETTINGS[1:])
def test_error_feedback_keeps_the_sum_of_sent_deltas_on_the_sum_of_true_ones(text: str) -> None:
    setting = parse_compression(text)
    compressor = Compressor(setting)
    true_sum = np.zeros(5000, np.float64)
    sent_sum = np.zeros(5000, np.float64)
    without_feedback = np.zeros(5000, np.float64)
    gaps, relative = [], []
    for delta in deltas(400):
        (sent,) = compressor.compress([delta])
        true_sum += delta
        add_into(sent_sum, sent)
        add_into(without_feedback, Compressor(setting).compress([delta])[0])  # a fresh state: no residual
        (residual,) = compressor.residuals
        # what was not sent is exactly what the worker still holds
        np.testing.assert_allclose(true_sum - sent_sum, residual, atol=1e-4)
        gaps.append(np.linalg.norm(true_sum - sent_sum))
        relative.append(gaps[-1] / np.linalg.norm(true_sum))
    # the gap stays about one residual wide while the sum grows: it does not accumulate over rounds
    assert max(gaps[200:]) <= 1.25 * max(gaps[100:200])
    sparse = setting.encoding in (Encoding.TOPK, Encoding.TOPK_INT8)
    # a top-k coordinate waits ~1/fraction rounds for its turn, so the gap is a share of that
    assert relative[-1] < (0.2 if sparse else 0.01)
    assert relative[-1] < relative[199] < relative[99]
    # without the residual the per-round losses add up: the gap is many times wider
    assert np.linalg.norm(true_sum - without_feedback) > 5 * np.linalg.norm(true_sum - sent_sum)


def test_compress_update_forms_the_delta_and_keeps_other_dtypes_exact() -> None:
    base = [np.full((3, 4), 2.0, np.float32), np.array([5, 6], np.int64)]
    new = [np.full((3, 4), 2.5, np.float32), np.array([7, 6], np.int64)]
    for text in SETTINGS:
        sent = Compressor(parse_compression(text)).compress_update(new, base)
        np.testing.assert_array_equal(sent[1], [2, 0])
        assert (sent[0].encoding if isinstance(sent[0], EncodedTensor) else None) is parse_compression(text).encoding
    np.testing.assert_array_equal(Compressor().compress_update(new, base)[0], np.full((3, 4), 0.5, np.float32))
    assert Compressor().residuals == [] and Compressor(parse_compression("int8")).residual_norm() == 0


def test_a_non_finite_or_misshapen_update_is_refused_and_the_residual_cleared() -> None:
    compressor = Compressor(parse_compression("topk:0.1"))
    compressor.compress([np.arange(10, dtype=np.float32)])
    assert compressor.residual_norm() > 0
    with pytest.raises(CompressionError, match="NaN or Inf"):
        compressor.compress([np.array([np.nan] + [0.0] * 9, np.float32)])
    assert compressor.residual_norm() == 0
    with pytest.raises(CompressionError, match="shapes changed"):
        compressor.compress([np.zeros(11, np.float32)])
    with pytest.raises(CompressionError, match="global one"):
        compressor.compress_update([np.zeros(10, np.float32)], [np.zeros(9, np.float32)])


def test_delta_sum_applies_the_weighted_mean_of_decoded_deltas() -> None:
    base = [np.ones(600, np.float32), np.array([10, 20], np.int64)]
    total = DeltaSum(specs_of(base))
    a = [encode_int8(np.full(600, 0.5, np.float32)), np.array([3, 0], np.int64)]
    b = [encode_topk(np.arange(600, dtype=np.float32), 0.5), np.array([1, 1], np.int64)]
    total.add(a, 1)
    total.add(b, 3)
    new = total.apply(base)
    expected = 1 + (0.5 + 3 * decode_dense(b[0])) / 4
    np.testing.assert_allclose(new[0], expected, rtol=1e-6)
    # integer tensors: base + rint(weighted mean) = [10, 20] + rint([6, 3] / 4)
    assert new[0].dtype == np.float32 and new[1].tolist() == [12, 21]
    with pytest.raises(ValueError, match="no samples"):
        DeltaSum(specs_of(base)).apply(base)


# -- bytes on the wire ------------------------------------------------------------------------------
def mlp_delta() -> list[np.ndarray]:
    """A delta of a 784-512-256-10 MLP (535,818 float32 parameters, 2.1 MB): an edge model's size."""
    rng = np.random.default_rng(8)
    shapes = [(784, 512), (512,), (512, 256), (256,), (256, 10), (10,)]
    return [(rng.standard_normal(shape) * 0.01).astype(np.float32) for shape in shapes]


def test_bytes_per_round_against_float32() -> None:
    delta = mlp_delta()
    sizes = {}
    for text in SETTINGS:
        tensors = Compressor(parse_compression(text)).compress(delta)
        parts = encode_tensor_frame(MessageType.UPDATE, 1, tensors, 100)
        data = b"".join(bytes(p) for p in parts)
        assert FrameReader().feed(data)[0].decoded is not None  # a valid frame
        sizes[text] = len(data)
    ratio = {text: sizes["none"] / size for text, size in sizes.items()}
    assert ratio["fp16"] >= 1.99
    assert ratio["int8"] >= 3.9
    assert ratio["topk:0.01"] >= 12
    assert ratio["topk:0.01+int8"] >= 30


# -- memory: no decoded copy per upload ---------------------------------------------------------------
@pytest.mark.parametrize("text", ["fp16", "int8", "topk:0.01+int8"])
def test_adding_an_upload_allocates_chunks_not_a_decoded_copy(text: str) -> None:
    """tracemalloc sees numpy's allocations: the add's peak stays far below one float32 model copy."""
    import tracemalloc

    delta = np.random.default_rng(9).standard_normal(4 << 20).astype(np.float32)  # 16 MiB
    (encoded,) = Compressor(parse_compression(text)).compress([delta])
    total = np.zeros(delta.shape, np.float64)
    peaks = []
    for work in (lambda: add_into(total, encoded, 3.0), lambda: decode_dense(encoded)):
        tracemalloc.start()
        try:
            work()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] >= delta.nbytes  # the measurement sees numpy: a decoded copy shows
    assert peaks[0] < delta.nbytes / 4, f"{peaks[0]} bytes allocated to add a {delta.nbytes}-byte model's delta"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_all_finite_finds_one_bad_value_anywhere_in_any_float_tensor(bad: float, dtype: str) -> None:
    from edgefed.wire import all_finite
    from edgefed.wire.encodings import FINITE_CHECK_CHUNK as CHUNK

    size = 2 * CHUNK + 5
    assert all_finite(np.zeros(size, dtype)) and all_finite(np.zeros(0, dtype)) and all_finite(np.zeros((3, 0), dtype))
    for where in (0, CHUNK - 1, CHUNK, size - 1):  # each chunk's edges and the short last chunk
        values = np.linspace(-1e3, 1e3, size).astype(dtype).reshape(-1, 1)
        values[where] = bad
        assert not all_finite(values)
