"""Worker side: a model delta in, the tensors to send out, with error feedback.

What an encoding loses in one round is not lost for good: the worker keeps it as a residual and adds
it to the next round's delta, so over rounds the sum of what was sent tracks the sum of the true
deltas (the gap stays one residual wide instead of growing). For top-k this is what makes 1 % of the
values per round enough: a coordinate that is never large in one round grows in the residual until
it is sent.

Memory: one float32 residual per lossy setting (a model copy); the delta is formed inside it, so
`compress_update(new, base)` needs no other model-sized temporary; the worker's int8 upload is
encoded while it is sent (`compress_trained_streamed`), so it is never held whole either.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgefed.compression.codecs import add_into, encode_fp16, encode_int8, encode_topk
from edgefed.compression.settings import NONE, CompressionSetting
from edgefed.compression.streaming import int8_stream
from edgefed.wire import EncodedStream, Encoding, Tensor, all_finite


class CompressionError(ValueError):
    """An update cannot be compressed (its tensors do not fit, or it holds NaN/Inf)."""


def _encode(setting: CompressionSetting, x: np.ndarray) -> Tensor:
    if setting.encoding is Encoding.FP16:
        return encode_fp16(x)
    if setting.encoding is Encoding.INT8:
        return encode_int8(x)
    if setting.encoding in (Encoding.TOPK, Encoding.TOPK_INT8):
        return encode_topk(x, setting.fraction, int8=setting.encoding is Encoding.TOPK_INT8)
    raise AssertionError(f"no encoder for {setting}")


def _whole(tensors: list[Tensor | EncodedStream]) -> list[Tensor]:
    """A compression's tensors when nothing was streamed."""
    whole = [t for t in tensors if not isinstance(t, EncodedStream)]
    assert len(whole) == len(tensors)
    return whole


class Compressor:
    """Per-worker state for one setting: the residuals of the floating-point tensors.

    Floating tensors are encoded with error feedback; other dtypes (counters, integer buffers) and
    every tensor under `none` travel as their exact delta in their own dtype.
    """

    def __init__(self, setting: CompressionSetting = NONE) -> None:
        self.setting = setting
        self._residuals: list[np.ndarray | None] | None = None
        self._rebased = False  # rebase() subtracted the global weights from the residuals
        self._exact_base: list[np.ndarray | None] = []  # after rebase(): copies of the residual-less tensors

    @property
    def residuals(self) -> list[np.ndarray | None]:
        """What has not been sent yet, per tensor (None: exact, nothing kept)."""
        return list(self._residuals or [])

    def residual_norm(self) -> float:
        return float(np.sqrt(sum(float(np.square(r, dtype=np.float64).sum()) for r in self.residuals
                                 if r is not None)))

    def reset(self) -> None:
        """Forget the residuals (e.g. when the worker restarts from a checkpoint of another run)."""
        self._residuals = None
        self._rebased = False

    def compress_update(self, new: Sequence[np.ndarray], base: Sequence[np.ndarray]) -> list[Tensor]:
        """The tensors to send for new - base (the weights trained from base), residual included."""
        if len(new) != len(base):
            raise CompressionError(f"{len(new)} trained tensors for {len(base)} global ones")
        for index, (a, b) in enumerate(zip(new, base, strict=True)):
            if a.shape != b.shape:
                raise CompressionError(f"tensor {index} is {list(a.shape)}, the global one {list(b.shape)}")
        return _whole(self._compress(new, base))

    def compress(self, delta: Sequence[np.ndarray]) -> list[Tensor]:
        """The tensors to send for a delta already computed."""
        return _whole(self._compress(delta, None))

    # -- a worker that keeps no copy of the global weights ------------------------------------------
    def rebase(self, base: Sequence[np.ndarray]) -> None:
        """New global weights arrived and the next update is trained from them: subtract them from
        the residuals now, so the caller need not keep them (a model copy fewer on a worker). Only the
        tensors without a residual (exact dtypes, or every tensor under `none`) are copied, to form
        their exact delta later. A second rebase before compress_trained forgets the residuals."""
        self._ensure_residuals(base)
        assert self._residuals is not None
        for kept, b in zip(self._residuals, base, strict=True):
            if kept is not None:
                if self._rebased:
                    kept.fill(0)
                np.subtract(kept, b, out=kept, casting="same_kind")
        self._exact_base = [np.array(b, copy=True) if kept is None else None
                            for kept, b in zip(self._residuals, base, strict=True)]
        self._rebased = True

    def compress_trained(self, new: Sequence[np.ndarray]) -> list[Tensor]:
        """The tensors to send for new - (the weights of the last rebase), residual included."""
        return _whole(self._compress_trained(new, streamed=False))

    def compress_trained_streamed(self, new: Sequence[np.ndarray]) -> list[Tensor | EncodedStream]:
        """compress_trained, with int8 tensors as streams encoded while they are sent (int8_stream):
        their residuals are final once the stream is consumed; send it before compressing again."""
        return self._compress_trained(new, streamed=True)

    def _compress_trained(self, new: Sequence[np.ndarray], streamed: bool) -> list[Tensor | EncodedStream]:
        if not self._rebased or self._residuals is None:
            raise CompressionError("no global weights to form a delta from (rebase first)")
        self._rebased = False
        try:
            if len(new) != len(self._exact_base) or any(
                    b is not None and a.shape != b.shape for a, b in zip(new, self._exact_base, strict=True)):
                raise CompressionError("the trained tensors do not fit the global weights")
            return self._compress(new, self._exact_base, rebased=True, streamed=streamed)
        except CompressionError:  # residuals left holding -base would corrupt the next round: start clean
            for kept in self._residuals:
                if kept is not None:
                    kept.fill(0)
            raise

    def _compress(self, new: Sequence[np.ndarray], base: Sequence[np.ndarray | None] | None,
                  rebased: bool = False, streamed: bool = False) -> list[Tensor | EncodedStream]:
        """rebased: the residuals already hold -base (rebase()); base is then only read for the
        tensors without a residual. streamed: int8 tensors as int8_stream()s."""
        self._ensure_residuals(new)
        assert self._residuals is not None
        out: list[Tensor | EncodedStream] = []
        for index, (a, kept) in enumerate(zip(new, self._residuals, strict=True)):
            b = None if base is None else base[index]
            if kept is None:
                out.append(np.array(a, copy=True) if b is None else np.subtract(a, b, dtype=a.dtype))
                continue
            np.add(kept, a, out=kept, casting="same_kind")  # the delta formed in place: residual + new - base
            if b is not None and not rebased:
                np.subtract(kept, b, out=kept, casting="same_kind")
            if not all_finite(kept):
                kept.fill(0)
                raise CompressionError(f"tensor {index} of the update holds NaN or Inf; its residual is cleared")
            if streamed and self.setting.encoding is Encoding.INT8:
                out.append(int8_stream(kept))  # encoded, and the residual updated, while it is sent
                continue
            encoded = _encode(self.setting, kept)
            add_into(kept, encoded, -1.0)  # keep exactly what the receiver will not see
            out.append(encoded)
        return out

    def _ensure_residuals(self, tensors: Sequence[np.ndarray]) -> None:
        shapes = [t.shape for t in tensors]
        if self._residuals is not None:
            known = [r.shape if r is not None else None for r in self._residuals]
            if len(known) == len(shapes) and all(k is None or k == s for k, s in zip(known, shapes, strict=True)):
                return
            raise CompressionError(f"the model's shapes changed from {known} to {shapes}")
        self._residuals = [
            np.zeros(t.shape, np.float32) if self.setting.lossy and t.dtype.kind == "f" else None for t in tensors
        ]
