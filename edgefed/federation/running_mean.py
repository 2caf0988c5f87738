"""Folding one update into a round's accumulator, a chunk at a time (fedavg, clip; issue 14).

A float32 tensor's accumulator is a float32 running *weighted mean*, not a sum:

    mean <- mean * keep + w * share,  share = n_i / (samples so far, n_i included), keep = 1 - share

a convex combination, so it stays within the range of the updates folded so far. A float32 sum of
n_i * w_i would overflow to Inf for finite but huge updates (3e38 x 1000 samples), which is why the
sum used to be float64: two model copies. Each chunk is computed in float64 and rounded to float32
once when stored (a convex combination of finite float32 values rounds to a finite one), so after
n updates every element is within n x 2^-24 x max|w_i| of the exact weighted mean: each fold rounds
once, and the earlier errors are multiplied by keep <= 1.

Other dtypes (float64, float16, integers: usually small tensors, counters, statistics) keep the
float64 running sum of before (keep = 1, share = n_i), divided at the end, as before; so does a
whole model of at most EXACT_SUM_MAX_BYTES of float32 weights, where the sum's extra copy is cheap
and the average stays the exact float64 one (int8's rounding would otherwise turn the mean's
last-bit differences into whole quantization steps a few rounds later).

An update is `w`, or `reference + scale * (w - reference)` (clip pulling it back towards the global
weights), or `base + scale * delta` for a compressed delta decoded chunk by chunk: no model-sized
temporary in any case, and the update's own arrays are never written.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np

from edgefed.compression import decoded_spans
from edgefed.wire import EncodedTensor, Encoding, Tensor

CHUNK = 1 << 16  # elements per step: each float64 scratch is 512 KiB, whatever the tensor's size
FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT8_PEAK = 128.0  # the largest |int8| a decoder may see
_WIDE = np.dtype(np.float64)
EXACT_SUM_MAX_BYTES = 8 << 20  # float32 weights up to this keep the float64 sum: at most 16 MiB more
POOLED_SCRATCHES = 2  # Scratch pairs kept for the next call (folds run one at a time, under the chief's lock)


class UpdateOutOfRange(ValueError):
    """An update whose weights (global + its decoded delta) do not fit float32: it is refused before
    anything is folded, so the round's mean stays as it was."""


def accumulator_dtype(dtype: str, mean: bool = True) -> np.dtype:
    """float32 tensors of a model folded as a mean: a float32 running mean (one model copy); every
    other tensor: a float64 sum."""
    return np.dtype("float32") if mean and np.dtype(dtype) == np.float32 else np.dtype("float64")


def folds_as_mean(float32_bytes: int) -> bool:
    """Whether a model with this many bytes of float32 weights is folded as a float32 mean."""
    return float32_bytes > EXACT_SUM_MAX_BYTES


def fold_shares(accumulator: np.ndarray, total_samples: int, num_samples: int) -> tuple[float, float]:
    """(keep, share) for adding num_samples to an accumulator that holds total_samples so far."""
    if accumulator.dtype != np.float32:
        return 1.0, float(num_samples)  # a sum: running + n * w
    together = total_samples + num_samples
    return total_samples / together, num_samples / together


def _spans(size: int) -> Iterator[slice]:
    for start in range(0, size, CHUNK):
        yield slice(start, min(start + CHUNK, size))


class Scratch:
    """Two float64 buffers of CHUNK elements, reused for every chunk of a call; a call borrows a pair
    (borrowed_scratch) so threads never share one.
    A fresh temporary per chunk and per operation cost more than the arithmetic: under the chief's
    fixed mmap threshold glibc trims its heap at every free (M_TRIM_THRESHOLD stays at 128 KiB), so
    each temporary came back as new pages, faulted in and zeroed (measured: 31 000 page faults and
    ~2x the time to fold one 64 MB update). Small enough to stay in the CPU's cache between steps.
    The pairs are kept between calls for the same reason: a pair made per call was 256 fresh pages
    per tensor per update (2 x 1 MB: 650 page faults per round on the chief, most of them these)."""

    def __init__(self) -> None:
        self._part = np.empty(CHUNK, _WIDE)
        self._spare = np.empty(CHUNK, _WIDE)

    def wide(self, chunk: np.ndarray) -> np.ndarray:
        """chunk (at most CHUNK elements) cast into the first buffer: cast first, then compute, since
        a mixed-dtype ufunc is 2-3x slower."""
        assert chunk.size <= self._part.size, "a span is at most CHUNK elements"
        part = self._part[:chunk.size]
        np.copyto(part, chunk)
        return part

    @property
    def oversized(self) -> bool:
        """A codec's longer chunk grew the spare buffer: such a pair is not kept."""
        return self._spare.size > CHUNK

    def spare(self, length: int) -> np.ndarray:
        if self._spare.size < length:  # decoded chunks of the compression codecs may be longer
            self._spare = np.empty(length, _WIDE)
        return self._spare[:length]

    def wide_spare(self, chunk: np.ndarray) -> np.ndarray:
        """chunk cast into the second buffer."""
        spare = self.spare(chunk.size)
        np.copyto(spare, chunk)
        return spare


_pool: list[Scratch] = []  # at most POOLED_SCRATCHES pairs no call holds
_pool_lock = threading.Lock()


@contextlib.contextmanager
def borrowed_scratch() -> Iterator[Scratch]:
    """A Scratch for this call alone: a kept one when one is free (its pages already resident), else new."""
    with _pool_lock:
        scratch = _pool.pop() if _pool else None
    if scratch is None:
        scratch = Scratch()
    try:
        yield scratch
    finally:
        with _pool_lock:
            if len(_pool) < POOLED_SCRATCHES and not scratch.oversized:  # the pool stays <= 2 x 1 MiB
                _pool.append(scratch)


def _blend(flat_acc: np.ndarray, span: slice, part: np.ndarray, keep: float, share: float,
           scratch: Scratch) -> None:
    """flat_acc[span] = flat_acc[span] * keep + part * share (part is a float64 chunk, consumed).
    Every operation writes into part or the spare buffer: the same float64 arithmetic, in the same
    order, as part * share + float64(acc) * keep with a temporary per operation."""
    with np.errstate(over="ignore"):  # only a float64 sum can overflow: its average is checked at the close
        if share != 1.0:
            part *= share
        if keep == 1.0 and flat_acc.dtype == part.dtype:  # a float64 sum: added in place, no copy back
            np.add(flat_acc[span], part, out=flat_acc[span])  # (a + b is b + a, bit for bit)
            return
        if keep == 1.0:
            part += flat_acc[span]
        elif keep != 0.0:  # 0: the first update, the mean is that update
            kept = scratch.wide_spare(flat_acc[span])
            kept *= keep
            part += kept
        flat_acc[span] = part


def fold_weights(accumulator: np.ndarray, update: np.ndarray, keep: float, share: float,
                 reference: np.ndarray | None = None, scale: float = 1.0) -> None:
    """Fold w = update, or reference + scale * (update - reference) when scale != 1."""
    flat_acc, flat = accumulator.reshape(-1), np.asarray(update).reshape(-1)
    ref = None if reference is None or scale == 1.0 else np.asarray(reference).reshape(-1)
    if ref is None and keep == 0.0 and share == 1.0 and flat_acc.dtype == flat.dtype:
        np.copyto(flat_acc, flat)  # a mean's first update is the mean: float32 -> float64 -> float32 is exact
        return
    with borrowed_scratch() as scratch:
        for span in _spans(flat.size):
            part = scratch.wide(flat[span])
            if ref is not None:
                base = scratch.wide_spare(ref[span])
                part -= base
                part *= scale
                part += base
            _blend(flat_acc, span, part, keep, share, scratch)


def fold_delta(accumulator: np.ndarray, base: np.ndarray, delta: Tensor, keep: float, share: float,
               scale: float = 1.0) -> None:
    """Fold w = base + scale * delta, the delta decoded a chunk at a time (sparse: base everywhere,
    then the kept values added at their indices)."""
    flat_acc, flat_base = accumulator.reshape(-1), np.asarray(base).reshape(-1)
    with borrowed_scratch() as scratch:
        if not isinstance(delta, EncodedTensor):
            flat_delta = np.asarray(delta).reshape(-1)
            for span in _spans(flat_acc.size):
                part = scratch.wide(flat_delta[span])
                part *= scale
                part += flat_base[span]
                _blend(flat_acc, span, part, keep, share, scratch)
            return
        if not delta.encoding.sparse:
            for span, decoded in decoded_spans(delta, _WIDE, scale):
                np.add(decoded, flat_base[span], out=decoded)
                _blend(flat_acc, span, decoded, keep, share, scratch)
            return
        for span in _spans(flat_acc.size):
            _blend(flat_acc, span, scratch.wide(flat_base[span]), keep, share, scratch)
        assert delta.indices is not None
        for span, decoded in decoded_spans(delta, _WIDE, scale * share):
            at = delta.indices[span]
            np.add(decoded, flat_acc[at], out=decoded)
            flat_acc[at] = decoded


def max_abs(array: np.ndarray) -> float:
    """max |array| (0 for an empty one), a chunk at a time."""
    flat, peak = np.asarray(array).reshape(-1), 0.0
    for span in _spans(flat.size):  # max and min: no |chunk| temporary
        peak = max(peak, float(flat[span].max()), -float(flat[span].min()))
    return peak


def _delta_bound(delta: Tensor) -> float:
    """An upper bound of |decoded delta| from its small parts only (no pass over the values)."""
    if not isinstance(delta, EncodedTensor):
        return max_abs(delta)
    if delta.scales is not None:
        return float(delta.scales.max(initial=0.0)) * _INT8_PEAK
    if delta.encoding is Encoding.FP16:
        return float(np.finfo(np.float16).max)
    return max_abs(delta.values)  # top-k's kept float32 values: k of them


def delta_peak(base: np.ndarray, base_bound: float, delta: Tensor, scale: float) -> float | None:
    """max |base + scale * delta| when it may exceed float32's range, else None. The bound from the
    parts decides almost every upload; only a suspicious one is decoded (a chunk at a time)."""
    if base_bound + abs(scale) * _delta_bound(delta) <= FLOAT32_MAX:
        return None
    flat_base, peak = np.asarray(base).reshape(-1), 0.0
    if not isinstance(delta, EncodedTensor):
        flat_delta = np.asarray(delta).reshape(-1)
        for span in _spans(flat_base.size):
            peak = max(peak, float(np.abs(flat_base[span] + scale * flat_delta[span].astype(_WIDE)).max()))
    elif not delta.encoding.sparse:
        for span, values in decoded_spans(delta, _WIDE, scale):
            peak = max(peak, float(np.abs(values + flat_base[span]).max()))
    else:
        assert delta.indices is not None
        for span, values in decoded_spans(delta, _WIDE, scale):
            peak = max(peak, float(np.abs(values + flat_base[delta.indices[span]]).max()))
    return peak if peak > FLOAT32_MAX else None
