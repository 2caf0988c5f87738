"""Streaming weighted averaging: updates are folded into a running sum as they arrive.

The chief never holds N models: memory is one running sum plus the staging buffers that uploads are
received into (see UploadSlots), however many workers there are.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence

import numpy as np

from edgefed.wire import TensorSpec

_FINITE_CHECK_CHUNK = 1 << 20  # elements: bounds the temporary mask np.isfinite allocates


def accumulator_dtype(dtype: str) -> np.dtype:
    """float32 and float64 sum in their own precision; narrower floats and integers in a wider type."""
    if dtype in ("float32", "float64"):
        return np.dtype(dtype)
    if dtype == "float16":
        return np.dtype("float32")
    return np.dtype("float64")


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
        """Add num_samples * arrays to the sum, scaling arrays in place (they are staging buffers)."""
        for running, array in zip(self._sums, arrays, strict=True):
            if array.dtype == running.dtype:
                np.multiply(array, num_samples, out=array)
                np.add(running, array, out=running)
            else:
                np.add(running, array.astype(running.dtype) * num_samples, out=running)
        self.total_samples += num_samples
        self.contributors.append(contributor)

    def add(self, arrays: Sequence[np.ndarray], num_samples: int, contributor: str) -> None:
        """Add num_samples * arrays without touching arrays (one tensor-sized temporary at a time)."""
        for running, array in zip(self._sums, arrays, strict=True):
            np.add(running, np.asarray(array, dtype=running.dtype) * num_samples, out=running)
        self.total_samples += num_samples
        self.contributors.append(contributor)

    def average(self) -> list[np.ndarray]:
        """The weighted mean in the model's dtypes; the aggregator is spent afterwards."""
        if self.total_samples <= 0:
            raise ValueError("no samples were contributed to this round")
        result = []
        for running, spec in zip(self._sums, self.specs, strict=True):
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
            self._free.put([np.empty(spec.shape, np.dtype(spec.dtype).newbyteorder("<")) for spec in specs])

    def acquire(self) -> list[np.ndarray]:
        return self._free.get()

    def release(self, buffers: list[np.ndarray]) -> None:
        self._free.put(buffers)
