"""How a round's updates combine (`federation.aggregation`): pure numpy, no I/O, no threads.

- fedavg: the sample-weighted mean, streamed into one float32 running mean (aggregation.StreamingAggregator,
  running_mean.py; models up to 8 MiB keep a float64 sum); memory: one model copy, whatever the number
  of workers. Defenceless against a hostile worker.
- clip: fedavg, but an update whose distance from the global model exceeds clip_factor x the median of
  recent distances is pulled back to that distance as it is folded (no copy). Still streaming (same
  memory as fedavg); bounds what one worker can move the model, not its direction.
- trimmed-mean / median / krum must see every update before combining: each keeps a float32 copy of
  every update of the round (at most max_buffered_updates, so memory is that many models), and the
  combination adds one tensor per update at a time. They ignore sample counts (one worker, one vote):
  a hostile worker would otherwise just claim many samples.
  - trimmed-mean: per coordinate, drop the robust_fraction highest and lowest values, average the rest.
  - median: the per-coordinate median.
  - krum (multi-Krum): score each update by its squared distances to its n - f - 2 nearest others
    (f = robust_fraction x n), average the n - f best-scored ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from edgefed.config import AGGREGATIONS
from edgefed.federation.aggregation import StreamingAggregator
from edgefed.federation.running_mean import CHUNK, borrowed_scratch
from edgefed.wire import TensorSpec

STRATEGIES = AGGREGATIONS  # federation.aggregation's choices
_SLICE = 1 << 18  # coordinates combined at once by the buffered rules


class Aggregator(Protocol):
    contributors: list[str]
    total_samples: int

    def add(self, arrays: Sequence[np.ndarray], num_samples: int, contributor: str) -> None:
        """Take an update without modifying or keeping arrays."""
        ...

    def add_scaled_in_place(self, arrays: list[np.ndarray], num_samples: int, contributor: str) -> None:
        """Take an update whose arrays are staging buffers: they may be modified, never kept."""
        ...

    def average(self) -> list[np.ndarray]: ...


def distance(update: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> float:
    """Euclidean distance between two models (float64, a chunk of one tensor at a time, in two
    reused buffers: running_mean.Scratch says why no temporaries). NaN or Inf when the update holds
    one and the reference is finite, so it doubles as the update's finite check (first_non_finite
    then says which tensor); only finite float64 values far beyond float32's range can overflow it."""
    total = 0.0
    for mine, theirs in zip(update, reference, strict=True):
        flat, ref = np.asarray(mine).reshape(-1), np.asarray(theirs).reshape(-1)
        with borrowed_scratch() as scratch:
            for start in range(0, flat.size, CHUNK):
                diff = scratch.wide(flat[start:start + CHUNK])
                diff -= scratch.wide_spare(ref[start:start + CHUNK])
                # einsum's own loop, not BLAS: np.dot's OpenBLAS threads spin against the chief's other
                # threads (measured on 2 loaded cores: 17 vs 7.6 ms per 1M-element chunk, 37 vs 10 ms with 2 callers)
                total += float(np.einsum("i,i->", diff, diff))
    return math.sqrt(total)


class ClippingAggregator(StreamingAggregator):
    """fedavg of updates pulled back to at most bound() from the global model (None: no bound yet).
    bound is asked at every update, so it follows the distances seen so far, this round's included."""

    def __init__(
        self, specs: Sequence[TensorSpec], global_weights: Sequence[np.ndarray], bound: Callable[[], float | None]
    ) -> None:
        super().__init__(specs)
        self._global = list(global_weights)
        self.bound = bound

    def _scale(self, arrays: Sequence[np.ndarray], span: float | None = None) -> float:
        """1, or how far to pull the update back towards the global model (bound / its distance)."""
        bound = self.bound()
        if bound is None:
            return 1.0
        span = distance(arrays, self._global) if span is None else span
        return 1.0 if span <= bound or span == 0.0 else bound / span

    def add(self, arrays: Sequence[np.ndarray], num_samples: int, contributor: str) -> None:
        # the update's delta, scaled, put back on the global model: folded chunk by chunk, no copy
        self._fold(arrays, num_samples, contributor, self._global, self._scale(arrays))

    def add_measured(self, arrays: Sequence[np.ndarray], num_samples: int, contributor: str, span: float) -> None:
        """add() for an update whose distance(arrays, global weights) the caller has measured already."""
        self._fold(arrays, num_samples, contributor, self._global, self._scale(arrays, span))


class BufferedAggregator:
    """Keeps every update of the round (bounded by the caller) and combines them at the end."""

    def __init__(self, specs: Sequence[TensorSpec], rule: str, robust_fraction: float) -> None:
        self.specs = list(specs)
        self.rule = rule
        self.robust_fraction = robust_fraction
        self.updates: list[list[np.ndarray]] = []
        self.samples: list[int] = []
        self.contributors: list[str] = []
        self.total_samples = 0

    def add(self, arrays: Sequence[np.ndarray], num_samples: int, contributor: str) -> None:
        self.updates.append([np.array(a, dtype=np.dtype(spec.dtype), copy=True)
                             for a, spec in zip(arrays, self.specs, strict=True)])
        self.samples.append(num_samples)
        self.contributors.append(contributor)
        self.total_samples += num_samples

    def add_scaled_in_place(self, arrays: list[np.ndarray], num_samples: int, contributor: str) -> None:
        self.add(arrays, num_samples, contributor)  # staging buffers are reused: keep a copy

    def average(self) -> list[np.ndarray]:
        if not self.updates:
            raise ValueError("no samples were contributed to this round")
        if self.rule == "krum":
            chosen = krum_select(self.updates, self.robust_fraction)
            picked = StreamingAggregator(self.specs)
            for index in chosen:
                picked.add(self.updates[index], 1, self.contributors[index])
            result = picked.average()
        else:
            result = [self._combine(index, spec) for index, spec in enumerate(self.specs)]
        self.updates = []
        return result

    def _combine(self, tensor: int, spec: TensorSpec) -> np.ndarray:
        """Coordinate-wise, a slice of coordinates at a time: the temporary stack stays n x _SLICE."""
        n = len(self.updates)
        flats = [update[tensor].reshape(-1) for update in self.updates]
        out = np.empty(flats[0].size, np.dtype(spec.dtype))
        trim = trim_count(n, self.robust_fraction)
        # the sorted rows averaged: the one or two middle ones (median), or all but trim at each end
        low, high = ((n - 1) // 2, n // 2 + 1) if self.rule == "median" else (trim, n - trim)
        for start in range(0, out.size, _SLICE):
            stack = np.stack([flat[start:start + _SLICE] for flat in flats]).astype(np.float64)
            stack.sort(axis=0)
            out[start:start + _SLICE] = stack[low:high].mean(axis=0)
        return out.reshape(spec.shape)


def trim_count(n: int, fraction: float) -> int:
    """Values dropped at each end: fraction x n, leaving at least one."""
    return min(int(fraction * n), (n - 1) // 2)


def krum_select(updates: Sequence[Sequence[np.ndarray]], fraction: float) -> list[int]:
    """Multi-Krum: the n - f updates whose n - f - 2 nearest neighbours are closest."""
    n = len(updates)
    f = min(int(fraction * n), max(0, (n - 3) // 2))
    if n <= 2:
        return list(range(n))
    squared = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            squared[i, j] = squared[j, i] = distance(updates[i], updates[j]) ** 2
    neighbours = max(1, n - f - 2)
    scores = [float(np.sort(np.delete(squared[i], i))[:neighbours].sum()) for i in range(n)]
    return sorted(range(n), key=lambda i: scores[i])[: n - f]


def make_aggregator(
    rule: str, specs: Sequence[TensorSpec], global_weights: Sequence[np.ndarray], robust_fraction: float,
    clip_bound: Callable[[], float | None],
) -> Aggregator:
    if rule == "fedavg":
        return StreamingAggregator(specs)
    if rule == "clip":
        return ClippingAggregator(specs, global_weights, clip_bound)
    if rule in ("trimmed-mean", "median", "krum"):
        return BufferedAggregator(specs, rule, robust_fraction)
    raise ValueError(f"unknown aggregation {rule!r} (known: {', '.join(STRATEGIES)})")
