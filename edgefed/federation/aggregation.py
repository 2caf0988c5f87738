"""Streaming weighted averaging: updates are folded into a running sum as they arrive.

The chief never holds N models: memory is one running sum plus the staging buffers that uploads are
received into (see UploadSlots), however many workers there are.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence

import numpy as np

from edgefed.compression import add_into
from edgefed.wire import Tensor, TensorSpec

_FINITE_CHECK_CHUNK = 1 << 20  # elements: bounds the temporary mask np.isfinite allocates


def accumulator_dtype(dtype: str) -> np.dtype:
    """Every sum is float64: a float32 sum of n_i * w_i overflows to Inf for finite but huge updates
    (3e38 x 1000 samples), and one Inf poisons every later round. The mean of finite float32 values is
    within float32's range, so the average cast back is finite whatever the updates were."""
    del dtype
    return np.dtype("float64")


def _add_scaled(running: np.ndarray, array: np.ndarray, num_samples: int) -> None:
    """running += num_samples * array, computed in running's dtype a chunk at a time (the temporary
    stays _FINITE_CHECK_CHUNK elements, whatever the tensor's size)."""
    flat_sum, flat = running.reshape(-1), np.asarray(array).reshape(-1)
    for start in range(0, flat.size, _FINITE_CHECK_CHUNK):
        stop = start + _FINITE_CHECK_CHUNK
        with np.errstate(over="ignore"):  # an overflow is caught by the finite check of the average
            part = np.multiply(flat[start:stop], num_samples, dtype=running.dtype)
            np.add(flat_sum[start:stop], part, out=flat_sum[start:stop])


def first_non_finite(arrays: Sequence[np.ndarray]) -> int | None:
    """Index of the first tensor holding NaN or Inf, or None."""
    for index, array in enumerate(arrays):
        if array.dtype.kind != "f":
            continue
        flat = array.reshape(-1)
        for start in range(0, flat.size, _FINITE_CHECK_CHUNK):
            if not np.isfinite(flat[start : start + _FINITE_CHECK_CHUNK]).all():
                return index
    return None


def spec_mismatch(expected: Sequence[TensorSpec], got: Sequence[TensorSpec]) -> str | None:
    """Why got does not fit the model's expected specs, or None if it does."""
    if len(expected) != len(got):
        return f"expected {len(expected)} tensors, got {len(got)}"
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        if want != have:
            return f"tensor {index} is {have}, expected {want}"
    return None


class StreamingAggregator:
    """A running sample-weighted sum of model updates for one round."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.specs = list(specs)
        self._sums = [np.zeros(spec.shape, accumulator_dtype(spec.dtype)) for spec in self.specs]
        self.total_samples = 0
        self.contributors: list[str] = []

    def add_scaled_in_place(self, arrays: list[np.ndarray], num_samples: int, contributor: str) -> None:
        """Add num_samples * arrays to the sum (arrays are staging buffers; they are left as received)."""
        self.add(arrays, num_samples, contributor)

    def add(self, arrays: Sequence[np.ndarray], num_samples: int, contributor: str) -> None:
        """Add num_samples * arrays without touching arrays (one chunk-sized temporary at a time)."""
        for running, array in zip(self._sums, arrays, strict=True):
            _add_scaled(running, array, num_samples)
        self.total_samples += num_samples
        self.contributors.append(contributor)

    def add_delta(self, base: Sequence[np.ndarray], delta: Sequence[Tensor], num_samples: int, contributor: str,
                  scale: float = 1.0) -> None:
        """Add num_samples * (base + scale * delta) for a compressed upload (docs/compression.md):
        the delta's tensors, encoded or plain, are decoded into the sum a chunk at a time, never
        expanded to a model copy."""
        for running, weights, tensor in zip(self._sums, base, delta, strict=True):
            _add_scaled(running, weights, num_samples)
            with np.errstate(over="ignore"):  # an overflow is caught by the finite check of the average
                add_into(running, tensor, float(num_samples) * scale)
        self.total_samples += num_samples
        self.contributors.append(contributor)

    def average(self) -> list[np.ndarray]:
        """The weighted mean in the model's dtypes; the aggregator is spent afterwards."""
        if self.total_samples <= 0:
            raise ValueError("no samples were contributed to this round")
        result = []
        for running, spec in zip(self._sums, self.specs, strict=True):
            with np.errstate(invalid="ignore", over="ignore"):  # Inf sums are refused by the caller
                np.divide(running, self.total_samples, out=running)
            mean = running
            if spec.dtype != running.dtype.name:
                rounded = np.rint(running) if np.dtype(spec.dtype).kind in "iu" else running
                mean = rounded.astype(spec.dtype)
            result.append(mean)
        self._sums = []
        return result


class UploadSlots:
    """A fixed pool of staging buffers that uploads are received into, one upload per slot.

    Bounding concurrent uploads bounds the chief's memory; uploads beyond the pool wait in the
    kernel's socket buffers (TCP flow control) until a slot frees.
    """

    def __init__(self, specs: Sequence[TensorSpec], count: int) -> None:
        self._free: queue.SimpleQueue[list[np.ndarray]] = queue.SimpleQueue()
        for _ in range(count):
            # spec.storage: the tensor itself, or the bytes of an encoded one (federation.compression)
            self._free.put([np.empty(shape, np.dtype(dtype).newbyteorder("<")) for dtype, shape in
                            (spec.storage for spec in specs)])

    def acquire(self) -> list[np.ndarray]:
        return self._free.get()

    def release(self, buffers: list[np.ndarray]) -> None:
        self._free.put(buffers)
