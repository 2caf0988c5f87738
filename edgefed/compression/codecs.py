"""The arithmetic of the encodings: float32 array -> EncodedTensor, and back into a running sum.

Everything works in chunks of CHUNK elements, so the temporaries of encoding or adding one tensor are
bounded by a few MiB whatever the model size.

Error bounds of one encode/decode round trip (no error feedback), for a float32 value x:
- fp16: |x - x'| <= 2^-11 |x| for 6.1e-5 <= |x| <= 65504 (values beyond 65504 are clipped to it),
  and <= 2^-25 below; x' = 0 for |x| < 2^-25.
- int8: |x - x'| <= s / 2 = max|block| / 254 per block of INT8_BLOCK (256) values (plus float32
  rounding of the scale, < 1e-6 relative); blocks holding values beyond 127 x MAX_SCALE (~3.4e38,
  float32's own limit) are clipped there.
- topk: the kept values exactly; every other value is lost (0). topk+int8: the kept values within
  max|kept block| / 254.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from edgefed.wire import INT8_BLOCK, MAX_SCALE, EncodedTensor, Encoding, Tensor

CHUNK = 1 << 18  # elements per step (1 MiB of float32); a multiple of INT8_BLOCK
LEAN_CHUNK = 1 << 16  # elements per step where a worker's peak memory is at stake (top-k's selection, int8_stream)
FP16_MAX = float(np.finfo(np.float16).max)
_QMAX = 127


def _spans(size: int, step: int = CHUNK) -> Iterator[slice]:
    for start in range(0, size, step):
        yield slice(start, min(start + step, size))


def _flat(array: np.ndarray) -> np.ndarray:
    """A flat view (writes reach array): array must be C-contiguous."""
    if not array.flags.c_contiguous:
        raise ValueError("array must be C-contiguous (a flat view is needed)")
    return array.reshape(-1)


def encode_fp16(x: np.ndarray) -> EncodedTensor:
    flat = _flat(np.asarray(x, np.float32))
    values = np.empty(flat.size, np.float16)
    for span in _spans(flat.size):
        values[span] = np.clip(flat[span], -FP16_MAX, FP16_MAX)
    return EncodedTensor.build(Encoding.FP16, x.shape, values)


def _blocks(chunk: np.ndarray) -> np.ndarray:
    """chunk (float32) as rows of INT8_BLOCK values, the last one zero-padded."""
    pad = -chunk.size % INT8_BLOCK
    return np.pad(chunk, (0, pad)).reshape(-1, INT8_BLOCK) if pad else chunk.reshape(-1, INT8_BLOCK)


def block_scales(blocks: np.ndarray) -> np.ndarray:
    """One scale per block: its max |x| / 127, capped where the decoder's check puts it."""
    scales = (np.abs(blocks).max(axis=1) / np.float32(_QMAX)).astype(np.float32)
    # values near float32's limit: cap the scale where the decoder's check puts it (the rest is clipped)
    np.minimum(scales, np.float32(MAX_SCALE), out=scales)
    return scales


def quantized_blocks(blocks: np.ndarray, scales: np.ndarray, size: int) -> np.ndarray:
    """The int8 values of the first size values of blocks, given their block scales."""
    inverse = np.divide(1, scales, out=np.zeros_like(scales), where=scales > 0)
    q = np.rint(blocks * inverse[:, None])
    np.clip(q, -_QMAX, _QMAX, out=q)
    return q.reshape(-1)[:size].astype(np.int8)


def quantize_int8(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scales): one scale per INT8_BLOCK values, the block's max |x| / 127."""
    values = np.empty(flat.size, np.int8)
    scales = np.empty(-(-flat.size // INT8_BLOCK), np.float32)
    for span in _spans(flat.size):
        chunk = flat[span].astype(np.float32)
        blocks = _blocks(chunk)
        chunk_scales = block_scales(blocks)
        values[span] = quantized_blocks(blocks, chunk_scales, chunk.size)
        first = span.start // INT8_BLOCK
        scales[first : first + len(chunk_scales)] = chunk_scales
    return values, scales


def encode_int8(x: np.ndarray) -> EncodedTensor:
    values, scales = quantize_int8(_flat(np.asarray(x, np.float32)))
    return EncodedTensor.build(Encoding.INT8, x.shape, values, scales)


def topk_count(size: int, fraction: float) -> int:
    """Values kept of a tensor of size elements: ceil(fraction * size), at least 1 of a non-empty one."""
    return min(size, max(1, math.ceil(fraction * size))) if size else 0


def encode_topk(x: np.ndarray, fraction: float, int8: bool = False) -> EncodedTensor:
    """The ceil(fraction * n) values of largest magnitude, at their flat indices; among values tied at
    the threshold magnitude, the lowest indices (`topk_indices`: a few MiB of temporaries)."""
    flat = _flat(np.asarray(x, np.float32))
    indices = topk_indices(flat, topk_count(flat.size, fraction))
    kept = flat[indices]
    if int8:
        values, scales = quantize_int8(kept)
        return EncodedTensor.build(Encoding.TOPK_INT8, x.shape, values, scales, indices)
    return EncodedTensor.build(Encoding.TOPK, x.shape, kept, indices=indices)


def _magnitude_bits(flat: np.ndarray, span: slice) -> np.ndarray:
    """|flat[span]| as uint32 bit patterns: for float32 (NaN aside) they order as the magnitudes do."""
    return flat[span].view(np.uint32) & np.uint32(0x7FFFFFFF)


def _kth_from_top(histogram: np.ndarray, k: int) -> tuple[int, int]:
    """(the bin holding the k-th largest value, the count in bins above it)."""
    above = np.cumsum(histogram[::-1])
    position = int(np.searchsorted(above, k))
    top_bin = histogram.size - 1 - position
    return top_bin, int(above[position]) - int(histogram[top_bin])


def topk_indices(flat: np.ndarray, k: int) -> np.ndarray:
    """The sorted uint32 indices of k values of largest magnitude in flat (float32, 1-D): every value
    above the k-th largest magnitude T, then the lowest-indexed values of magnitude T. Found by a
    radix select on the magnitudes' bits (two histogram passes, a third to collect): the temporaries
    are a few chunks, not the 12 bytes per element of np.argpartition."""
    if k >= flat.size:
        return np.arange(flat.size, dtype=np.uint32)
    if k <= 0:
        return np.empty(0, np.uint32)
    high = np.zeros(1 << 15, np.int64)
    for span in _spans(flat.size, LEAN_CHUNK):
        high += np.bincount(_magnitude_bits(flat, span) >> 16, minlength=1 << 15)
    high_bin, above = _kth_from_top(high, k)
    low = np.zeros(1 << 16, np.int64)
    for span in _spans(flat.size, LEAN_CHUNK):
        bits = _magnitude_bits(flat, span)
        low += np.bincount(bits[(bits >> 16) == high_bin] & np.uint32(0xFFFF), minlength=1 << 16)
    low_bin, above_low = _kth_from_top(low, k - above)
    threshold = np.uint32((high_bin << 16) | low_bin)
    ties = k - above - above_low  # values of magnitude exactly threshold to take, lowest index first
    indices = np.empty(k, np.uint32)
    filled = 0
    for span in _spans(flat.size, LEAN_CHUNK):
        bits = _magnitude_bits(flat, span)
        chosen = bits > threshold
        if ties:
            tied = np.flatnonzero(bits == threshold)[:ties]
            chosen[tied] = True
            ties -= tied.size
        picked = np.flatnonzero(chosen)
        indices[filled : filled + picked.size] = picked + span.start
        filled += picked.size
    assert filled == k
    return indices


def _dequantized_part(part: np.ndarray, scales: np.ndarray, weight: float) -> np.ndarray:
    """part (float, in place) times its block scales (the first one's block starts at part[0]) and weight."""
    dtype = part.dtype
    block_scales = scales.astype(dtype) * dtype.type(weight)
    full = part.size - part.size % INT8_BLOCK
    blocks = part[:full].reshape(-1, INT8_BLOCK)  # a view: scaled in place, block by block
    blocks *= block_scales[: full // INT8_BLOCK, None]
    if full < part.size:
        part[full:] *= block_scales[-1]
    return part


def _dequantized(values: np.ndarray, scales: np.ndarray | None, span: slice, dtype: np.dtype,
                 weight: float) -> np.ndarray:
    """weight * values[span] as dtype, times their block scales if quantized (span starts on a block)."""
    part = values[span].astype(dtype)
    if scales is None:
        part *= dtype.type(weight)
        return part
    first = span.start // INT8_BLOCK
    return _dequantized_part(part, scales[first : first + -(-part.size // INT8_BLOCK)], weight)


def decoded_spans(tensor: EncodedTensor, dtype: np.dtype, weight: float = 1.0) -> Iterator[tuple[slice, np.ndarray]]:
    """(span, weight * decoded values[span] as dtype), CHUNK values at a time. span indexes the flat
    tensor for dense encodings, the kept values (and tensor.indices) for sparse ones."""
    for span in _spans(tensor.count):
        yield span, _dequantized(tensor.values, tensor.scales, span, dtype, weight)


def add_into(total: np.ndarray, tensor: Tensor, weight: float = 1.0) -> None:
    """total += weight * tensor (decoded), in place and chunk by chunk: no decoded copy of the tensor.
    total is a C-contiguous float array of the tensor's shape (a running sum, or a residual).
    Sparse tensors are scatter-added: their indices are unique (checked when decoded)."""
    if total.shape != tuple(tensor.shape):
        raise ValueError(f"cannot add a tensor of shape {list(tensor.shape)} into one of {list(total.shape)}")
    flat = _flat(total)
    dtype = total.dtype
    if not isinstance(tensor, EncodedTensor):
        source = _flat(np.ascontiguousarray(tensor))
        for span in _spans(flat.size):
            flat[span] += source[span].astype(dtype) * dtype.type(weight)
        return
    if tensor.encoding.sparse:
        assert tensor.indices is not None
        for span in _spans(tensor.count):
            flat[tensor.indices[span]] += _dequantized(tensor.values, tensor.scales, span, dtype, weight)
        return
    for span in _spans(flat.size):
        flat[span] += _dequantized(tensor.values, tensor.scales, span, dtype, weight)


def decode_dense(tensor: Tensor, dtype: str = "float32") -> np.ndarray:
    """A full array of the decoded tensor (tests, and callers that need one)."""
    out = np.zeros(tuple(tensor.shape), dtype)
    add_into(out, tensor)
    return out
