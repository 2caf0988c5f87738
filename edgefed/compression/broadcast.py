"""Compressed broadcasts (`federation.broadcast_compression`), pure: no sockets, no threads.

    none   the global weights as float32, as always
    fp16   the global weights as float16 (every broadcast is a full model)
    int8   an int8 delta from the previous global, to the workers that hold it; a full float32 model
           (a keyframe) to any other (first round, late joiner, reconnection, chief restart)

The chief's global model *is* what the workers hold (`held`): the chief trains from it, checkpoints
it, folds compressed uploads onto it. What the encoding lost is kept on the chief as a residual and
added to the next broadcast (server-side error feedback), so it never accumulates: the residual stays
one quantization step wide. `GlobalEncoder` is the chief's side, `GlobalDecoder` the worker's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgefed.compression.codecs import add_into, encode_fp16, encode_int8
from edgefed.errors import user_error
from edgefed.wire import EncodedTensor, Encoding, Tensor, TensorSpec, all_finite, specs_of

KEY = "federation.broadcast_compression"
FORMS = ("none", "fp16", "int8")


@user_error
class BroadcastSettingError(ValueError):
    """A federation.broadcast_compression value that is not one of FORMS."""


class BroadcastError(ValueError):
    """A broadcast the worker cannot take (wrong encodings or shapes, NaN/Inf, a delta from a model
    it does not hold); the message is one line."""


def parse_broadcast_compression(value: object) -> str:
    """The canonical setting for a configuration value (BroadcastSettingError, one line, if invalid)."""
    if value is None:
        return "none"
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in FORMS:
        raise BroadcastSettingError(f"{KEY} {value!r} is not one of {', '.join(FORMS)}")
    return text


def _floating(array: np.ndarray | TensorSpec) -> bool:
    return np.dtype(array.dtype).kind == "f"


class GlobalEncoder:
    """The chief's side: the model the workers hold, the residual, and the last delta.

    Memory under fp16 and int8: one residual per floating tensor (a model copy); the new held model is
    built in the average's own arrays, and the previous one is the book's global weights (no copy)."""

    def __init__(self, setting: str = "none") -> None:
        self.setting = parse_broadcast_compression(setting)
        self._held: list[np.ndarray] = []
        self._residuals: list[np.ndarray | None] = []
        self._delta: tuple[int, list[Tensor]] | None = None  # (round, int8 delta from round - 1)

    def start(self, weights: list[np.ndarray]) -> list[np.ndarray]:
        """The starting weights (the caller's fresh arrays, or a checkpoint's): returns what the workers
        will hold. A restart forgets the residual: the checkpoint is what everyone holds."""
        self._delta = None
        self._residuals = [np.zeros_like(w) if _floating(w) and self.setting != "none" else None for w in weights]
        if self.setting == "fp16":
            weights = [np.array(w, copy=True) for w in weights]
            self._quantize_fp16(weights)
        self._held = weights
        return weights

    def advance(self, average: list[np.ndarray], round_number: int) -> list[np.ndarray]:
        """The new global weights (a fresh, writable average) -> what the workers will hold for
        round_number, built in average's arrays; under int8 the delta to send is kept for delta_for."""
        if self.setting != "none":  # an aggregator may hand out arrays it still shares
            average = [a if a.flags.writeable and a.flags.c_contiguous else np.array(a) for a in average]
        if self.setting == "fp16":
            self._quantize_fp16(average)
        elif self.setting == "int8":
            delta: list[Tensor] = []
            for new, old, residual in zip(average, self._held, self._residuals, strict=True):
                if residual is None:  # exact tensors travel whole, in their dtype
                    delta.append(new)
                    continue
                np.add(residual, new, out=residual)
                np.subtract(residual, old, out=residual)  # what the workers must move by, last loss included
                encoded = encode_int8(residual)
                new[...] = old
                add_into(new, encoded)
                add_into(residual, encoded, -1.0)
                delta.append(encoded)
            self._delta = (round_number, delta)
        self._held = average
        return average

    def _quantize_fp16(self, weights: list[np.ndarray]) -> None:
        """weights := fp16(weights + residual) in place; the residual keeps what fp16 lost."""
        for array, residual in zip(weights, self._residuals, strict=True):
            if residual is None:
                continue
            np.add(residual, array, out=residual)
            encoded = encode_fp16(residual)
            array.fill(0)
            add_into(array, encoded)
            np.subtract(residual, array, out=residual)

    def full(self, weights: list[np.ndarray]) -> list[Tensor]:
        """What a full broadcast of weights (the held model) carries: fp16 tensors under fp16 (exact:
        the held model is fp16-representable), else the weights themselves (the int8 keyframe)."""
        if self.setting != "fp16":
            return list(weights)
        return [encode_fp16(w) if _floating(w) else w for w in weights]

    def delta_for(self, round_number: int) -> list[Tensor] | None:
        """The int8 delta that takes a worker from round_number - 1's model to round_number's, if the
        last advance made it; None: every recipient gets a full model."""
        delta = self._delta
        return delta[1] if delta is not None and delta[0] == round_number else None


class GlobalDecoder:
    """The worker's side: turns each WEIGHTS frame's tensors into the global weights, checked.

    Under int8 it keeps the model it holds (one model copy: the delta is added to it in place); the
    caller reset()s it on every new connection, so a worker that may have missed a round takes only a
    keyframe. The model's specs are remembered across connections: they never change."""

    def __init__(self, setting: str = "none") -> None:
        self.setting = parse_broadcast_compression(setting)
        self.specs: list[TensorSpec] | None = None
        self.round = -1  # the round whose model is held on this connection (-1: none)
        self._held: list[np.ndarray] | None = None

    def reset(self) -> None:
        self.round, self._held = -1, None

    def receive(self, round_number: int, tensors: Sequence[Tensor]) -> list[np.ndarray] | None:
        """The global weights of a WEIGHTS frame (its decoded tensors); None for a full model older than
        the one held (a stale frame: ignore it). BroadcastError for anything it must not take."""
        encoded = [t for t in tensors if isinstance(t, EncodedTensor)]
        if self.setting == "int8" and encoded:
            return self._apply_delta(round_number, tensors)
        if round_number < self.round:
            return None
        weights = self._full(tensors)
        self.round = round_number
        if self.setting == "int8":
            self._held = weights
        return weights

    def _check_specs(self, got: list[TensorSpec]) -> None:
        if self.specs is None:
            self.specs = got
        elif len(got) != len(self.specs) or any(
                (a.shape, a.dtype) != (b.shape, b.dtype) for a, b in zip(got, self.specs, strict=True)):
            raise BroadcastError(f"a broadcast of {_shown(got)} does not fit the model {_shown(self.specs)}")

    def _full(self, tensors: Sequence[Tensor]) -> list[np.ndarray]:
        """A full model: float tensors fp16-encoded under fp16, plain under int8; the others plain."""
        out = []
        for index, tensor in enumerate(tensors):
            if isinstance(tensor, EncodedTensor):
                if self.setting != "fp16" or tensor.encoding is not Encoding.FP16:
                    raise BroadcastError(
                        f"broadcast tensor {index} is {tensor.encoding.label}; {KEY} is {self.setting}")
                array = np.zeros(tensor.shape, np.float32)
                add_into(array, tensor)
            else:
                array = np.asarray(tensor)
                if self.setting == "fp16" and _floating(array):
                    raise BroadcastError(f"broadcast tensor {index} is plain {array.dtype}; {KEY} is fp16")
            if _floating(array) and not all_finite(array):
                raise BroadcastError(f"broadcast tensor {index} holds NaN or Inf")
            out.append(array)
        self._check_specs(specs_of(out))
        return out

    def _apply_delta(self, round_number: int, tensors: Sequence[Tensor]) -> list[np.ndarray]:
        held = self._held
        if held is None or self.round != round_number - 1:
            holds = "no model" if held is None else f"round {self.round}'s model"
            raise BroadcastError(f"a delta broadcast for round {round_number} but this worker holds {holds}")
        if len(tensors) != len(held):
            raise BroadcastError(f"a delta broadcast of {len(tensors)} tensors for a model of {len(held)}")
        for index, (tensor, base) in enumerate(zip(tensors, held, strict=True)):
            expected = Encoding.INT8 if _floating(base) else None
            have = tensor.encoding if isinstance(tensor, EncodedTensor) else None
            if have is not expected or tuple(tensor.shape) != base.shape or (
                    have is None and np.asarray(tensor).dtype != base.dtype):
                self.reset()
                raise BroadcastError(f"delta broadcast tensor {index} ({have.label if have else 'plain'} "
                                     f"{list(tensor.shape)}) does not fit the model's {base.dtype}{list(base.shape)}")
        for index, (tensor, base) in enumerate(zip(tensors, held, strict=True)):
            if isinstance(tensor, EncodedTensor):
                with np.errstate(over="ignore", invalid="ignore"):  # checked right after
                    add_into(base, tensor)
                if not all_finite(base):
                    self.reset()  # what is held is now wrong: only a keyframe can follow
                    raise BroadcastError(f"delta broadcast tensor {index} takes the model to NaN or Inf")
            else:
                base[...] = tensor
        self.round = round_number
        return held


def _shown(specs: Sequence[TensorSpec]) -> str:
    return "[" + ", ".join(f"{s.dtype}{list(s.shape)}" for s in specs[:4]) + (", ...]" if len(specs) > 4 else "]")
