"""The round's aggregator under secure aggregation (federation.secure_aggregation, docs/privacy.md).

The chief never holds a worker's update: its round sum starts as its own quantized delta, and the
workers' part arrives as one ring sum from edgefed.secagg (take_sum). The average is the global
weights plus the dequantized sample-weighted mean delta, equal to plain FedAvg on the quantized updates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgefed.secagg import ring
from edgefed.wire import Hello, ReasonCode, TensorSpec


def secure_mismatch(hello: Hello, secure: bool) -> tuple[ReasonCode, str] | None:
    """Why a worker cannot join this federation's rounds (federation.secure_aggregation differs), or None."""
    if hello.secure_aggregation == secure:
        return None
    return (ReasonCode.BAD_HELLO, f"the worker has secure aggregation {'on' if hello.secure_aggregation else 'off'}, "
            f"this federation {'on' if secure else 'off'} (federation.secure_aggregation must match on every node)")


class SecureSum:
    def __init__(self, specs: Sequence[TensorSpec], global_weights: Sequence[np.ndarray], bound: float) -> None:
        self.specs = list(specs)
        self._global = list(global_weights)
        self.bound = bound
        self.length = sum(int(np.prod(spec.shape, dtype=np.int64)) for spec in self.specs)
        self._sum = np.zeros(self.length, ring.RING_DTYPE)
        self.contributors: list[str] = []
        self.total_samples = 0
        self.refusal: str | None = None  # why the round's sum could not be unmasked: nothing is adopted

    def delta(self, weights: Sequence[np.ndarray]) -> np.ndarray:
        return ring.flatten(weights) - ring.flatten(self._global)

    def add(self, arrays: Sequence[np.ndarray], num_samples: int, contributor: str) -> None:
        """The chief's own update: quantized like a worker's, added in the clear (it is the chief's)."""
        weight = min(max(num_samples, 1), ring.MAX_TOTAL_WEIGHT - self.total_samples)
        if weight <= 0:
            self.refusal = "the round's sample counts overflow the secure sum's range"
            return
        np.add(self._sum, ring.quantize(self.delta(arrays), self.bound, weight), out=self._sum)
        self.total_samples += weight
        self.contributors.append(contributor)

    def add_scaled_in_place(self, arrays: list[np.ndarray], num_samples: int, contributor: str) -> None:
        raise RuntimeError("under secure aggregation no plain update reaches the chief")

    def take_sum(self, ring_sum: np.ndarray, total_weight: int, contributors: Sequence[str]) -> None:
        """The unmasked sum of the workers' quantized, sample-weighted deltas."""
        if self.total_samples + total_weight > ring.MAX_TOTAL_WEIGHT:
            self.refusal = "the round's sample counts overflow the secure sum's range"
            return
        np.add(self._sum, ring_sum, out=self._sum)
        self.total_samples += total_weight
        self.contributors.extend(contributors)

    def refuse(self, why: str) -> None:
        self.refusal = why

    def average(self) -> list[np.ndarray]:
        """The new global weights (the old ones after a refusal: the round is not adopted)."""
        if self.refusal is not None or self.total_samples <= 0:
            return [np.array(array) for array in self._global]
        mean = ring.dequantize_sum(self._sum, self.bound, self.total_samples) + ring.flatten(self._global)
        out = []
        for part, spec in zip(ring.unflatten(mean, [spec.shape for spec in self.specs]), self.specs, strict=True):
            kind = np.dtype(spec.dtype).kind
            out.append((np.rint(part) if kind in "iu" else part).astype(spec.dtype))
        self._sum = np.zeros(0, ring.RING_DTYPE)
        return out
