"""Chief side: compressed deltas checked against the model, then added straight into a running sum.

An int8 or top-k upload is never expanded to a float32 model copy: `add_into` dequantizes chunk by
chunk (int8, fp16) or scatter-adds the kept values (top-k) into the sum, so receiving an upload costs
its encoded bytes plus a bounded temporary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from math import prod

import numpy as np

from edgefed.compression.codecs import _dequantized, _spans, add_into, topk_count
from edgefed.compression.settings import CompressionSetting
from edgefed.wire import EncodedTensor, Tensor, TensorSpec, all_finite, has_non_finite


def upload_specs(model: Sequence[TensorSpec], setting: CompressionSetting) -> list[TensorSpec]:
    """The exact specs of an upload under setting: floating tensors in the setting's encoding (top-k
    keeping exactly topk_count of each), the others plain in their own dtype. Under `none`, the model's.
    Exact specs give every upload the same size, so the chief's staging buffers are fixed."""
    if setting.encoding is None:
        return list(model)
    out = []
    for spec in model:
        if np.dtype(spec.dtype).kind != "f":
            out.append(spec)
            continue
        count = topk_count(prod(spec.shape), setting.fraction) if setting.encoding.sparse else 0
        out.append(TensorSpec("float32", spec.shape, setting.encoding, count))
    return out


def delta_norm(tensors: Sequence[Tensor]) -> float:
    """The Euclidean norm of the decoded tensors (float64, a chunk at a time: nothing is expanded)."""
    total = 0.0
    wide = np.dtype(np.float64)
    for tensor in tensors:
        if isinstance(tensor, EncodedTensor):
            for span in _spans(tensor.count):
                part = _dequantized(tensor.values, tensor.scales, span, wide, 1.0)
                total += float(np.dot(part, part))
            continue
        flat = np.asarray(tensor).reshape(-1)
        for span in _spans(flat.size):
            part = flat[span].astype(wide)
            total += float(np.dot(part, part))
    return math.sqrt(total)


def update_mismatch(model: Sequence[TensorSpec], got: Sequence[TensorSpec], setting: CompressionSetting) -> str | None:
    """Why an upload's specs do not fit the model under setting, or None: floating tensors must carry
    the setting's encoding (or be plain, under `none`), other tensors their own dtype."""
    if len(model) != len(got):
        return f"expected {len(model)} tensors, got {len(got)}"
    for index, (want, have) in enumerate(zip(model, got, strict=True)):
        if want.encoding is not None:
            raise ValueError("the model's specs must be plain")
        encoded = setting.encoding is not None and np.dtype(want.dtype).kind == "f"
        if have.shape != want.shape:
            return f"tensor {index} has shape {list(have.shape)}, expected {list(want.shape)}"
        if encoded and have.encoding is not setting.encoding:
            return f"tensor {index} is {have}, expected {setting} (federation.compression)"
        if not encoded and (have.encoding is not None or have.dtype != want.dtype):
            return f"tensor {index} is {have}, expected {want}"
    return None


def first_non_finite(tensors: Sequence[Tensor]) -> int | None:
    """Index of the first tensor holding NaN or Inf (int8 encodings never do), or None."""
    for index, tensor in enumerate(tensors):
        if isinstance(tensor, EncodedTensor):
            if has_non_finite(tensor):
                return index
        elif tensor.dtype.kind == "f" and not all_finite(tensor):
            return index
    return None


class DeltaSum:
    """A running sample-weighted sum of decoded deltas, in `dtype` (float64 by default: exact enough
    for any number of workers; float32 halves the memory)."""

    def __init__(self, model: Sequence[TensorSpec], dtype: str = "float64") -> None:
        self.specs = list(model)
        self._sums = [np.zeros(spec.shape, dtype) for spec in self.specs]
        self.total_samples = 0

    def add(self, tensors: Sequence[Tensor], num_samples: int) -> None:
        """Add num_samples * decoded(tensors); the caller has checked them (update_mismatch, finite)."""
        for running, tensor in zip(self._sums, tensors, strict=True):
            add_into(running, tensor, float(num_samples))
        self.total_samples += num_samples

    def apply(self, weights: Sequence[np.ndarray]) -> list[np.ndarray]:
        """weights + the weighted mean delta, in the weights' dtypes (new arrays)."""
        if self.total_samples <= 0:
            raise ValueError("no samples were contributed to this round")
        out = []
        for running, base in zip(self._sums, weights, strict=True):
            mean = running / self.total_samples
            if base.dtype.kind in "iu":
                mean = np.rint(mean)
            out.append((base + mean).astype(base.dtype))
        return out
