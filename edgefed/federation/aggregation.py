"""Streaming weighted averaging: updates are folded into the round's accumulator as they arrive.

The chief never holds N models: memory is one accumulator per tensor (a float32 running mean for
float32 tensors, one model copy; a float64 sum for other dtypes and for models of at most 8 MiB:
running_mean.py says why) plus the
staging buffers that uploads are received into (see UploadSlots), however many workers there are.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence

import numpy as np

from edgefed.compression import add_into
from edgefed.federation.running_mean import (
    UpdateOutOfRange,
    accumulator_dtype,
    delta_peak,
    fold_delta,
    fold_shares,
    fold_weights,
    folds_as_mean,
    max_abs,
)
from edgefed.wire import Tensor, TensorSpec, all_finite

__all__ = ["StreamingAggregator", "UpdateOutOfRange", "UploadSlots", "accumulator_dtype", "first_non_finite",
           "spec_mismatch"]

def first_non_finite(arrays: Sequence[np.ndarray]) -> int | None:
    """Index of the first tensor holding NaN or Inf, or None."""
    for index, array in enumerate(arrays):
        if array.dtype.kind == "f" and not all_finite(array):
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
    """A round's sample-weighted mean of model updates, folded in one update at a time."""

    def __init__(self, specs: Sequence[TensorSpec]) -> None:
        self.specs = list(specs)
        # made at the first fold, not here: a round opens while the previous global weights are still
        # alive, and the allocator can reuse their memory once they are gone (peak RSS, not just live bytes)
        self._made: list[np.ndarray] | None = None
        self._mean = folds_as_mean(sum(spec.nbytes for spec in self.specs if np.dtype(spec.dtype) == np.float32))
        self.total_samples = 0
        self.contributors: list[str] = []
        self._base_bounds: list[float] | None = None  # max |global| per tensor, for add_delta's range check

    @property
    def _sums(self) -> list[np.ndarray]:
        """The accumulators: a float32 mean needs no zeroing (the first fold only writes it)."""
        if self._made is None:
            self._made = [np.empty(spec.shape, dtype) if dtype == np.float32 else np.zeros(spec.shape, dtype)
                          for spec, dtype in ((spec, accumulator_dtype(spec.dtype, self._mean)) for spec in self.specs)]
        return self._made

    def add_scaled_in_place(self, arrays: list[np.ndarray], num_samples: int, contributor: str) -> None:
        """Take an update received into staging buffers (read, never kept or modified)."""
        self.add(arrays, num_samples, contributor)

    def add(self, arrays: Sequence[np.ndarray], num_samples: int, contributor: str) -> None:
        """Fold arrays in without touching them (a chunk-sized temporary at a time)."""
        self._fold(arrays, num_samples, contributor)

    def _fold(self, arrays: Sequence[np.ndarray], num_samples: int, contributor: str,
              reference: Sequence[np.ndarray] | None = None, scale: float = 1.0) -> None:
        """Fold reference + scale * (arrays - reference) (just arrays when scale is 1)."""
        if num_samples == 0:  # weighs nothing (a chief without data): counted, not folded
            self._count(num_samples, contributor)
            return
        references = reference if reference is not None else [None] * len(self._sums)
        for running, array, ref in zip(self._sums, arrays, references, strict=True):
            keep, share = fold_shares(running, self.total_samples, num_samples)
            fold_weights(running, array, keep, share, ref, scale)
        self._count(num_samples, contributor)

    def add_delta(self, base: Sequence[np.ndarray], delta: Sequence[Tensor], num_samples: int, contributor: str,
                  scale: float = 1.0) -> None:
        """Fold base + scale * delta for a compressed upload (docs/compression.md): the delta's
        tensors, encoded or plain, are decoded a chunk at a time, never expanded to a model copy.
        UpdateOutOfRange (nothing folded) when base + delta leaves float32's range: the sender's fault."""
        if num_samples == 0:
            self._count(num_samples, contributor)
            return
        for index, (running, weights, tensor) in enumerate(zip(self._sums, base, delta, strict=True)):
            if running.dtype != np.float32:
                continue  # a float64 sum holds any float32 value, and its average is checked when the round closes
            peak = delta_peak(weights, self._base_bound(base, index), tensor, scale)
            if peak is not None:
                raise UpdateOutOfRange(f"tensor {index}: the global weights plus this update's delta reach "
                                       f"{peak:.3g}, beyond float32's range")
        for running, weights, tensor in zip(self._sums, base, delta, strict=True):
            keep, share = fold_shares(running, self.total_samples, num_samples)
            if running.dtype == np.float32:
                fold_delta(running, weights, tensor, keep, share, scale)
                continue
            fold_weights(running, weights, keep, share)
            with np.errstate(over="ignore"):  # an overflow is caught by the finite check of the average
                add_into(running, tensor, share * scale)
        self._count(num_samples, contributor)

    def _base_bound(self, base: Sequence[np.ndarray], index: int) -> float:
        if self._base_bounds is None:  # once per round: base is the round's global weights
            self._base_bounds = [max_abs(w) if w.dtype == np.float32 else 0.0 for w in base]
        return self._base_bounds[index]

    def _count(self, num_samples: int, contributor: str) -> None:
        self.total_samples += num_samples
        self.contributors.append(contributor)

    def average(self) -> list[np.ndarray]:
        """The weighted mean in the model's dtypes; the aggregator is spent afterwards."""
        if self.total_samples <= 0:
            raise ValueError("no samples were contributed to this round")
        result = []
        for running, spec in zip(self._sums, self.specs, strict=True):
            if running.dtype != np.float32 and spec.dtype == "float32":
                # the float64 sum of a small float32 model: divided in float64 and rounded to float32 as it
                # is stored, in one pass (bit for bit what dividing in place, then astype, gave)
                mean = np.empty(running.shape, np.float32)
                with np.errstate(invalid="ignore", over="ignore"):  # Inf sums are refused by the caller
                    np.divide(running, self.total_samples, out=mean)
                result.append(mean)
                continue
            if running.dtype != np.float32:  # a float64 sum: divide it
                with np.errstate(invalid="ignore", over="ignore"):  # Inf sums are refused by the caller
                    np.divide(running, self.total_samples, out=running)
            mean = running
            if spec.dtype != running.dtype.name:
                rounded = np.rint(running) if np.dtype(spec.dtype).kind in "iu" else running
                mean = rounded.astype(spec.dtype)
            result.append(mean)
        self._made = []
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
