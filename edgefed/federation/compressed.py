"""Compressed updates in the federation (`federation.compression`, docs/compression.md).

Under `none` nothing here changes a thing: workers upload their trained weights as before. Under a
lossy setting a worker uploads the *delta* from the global weights it trained from, encoded, with
error feedback (`WorkerUploads`); the chief reads it as a `Delta` and

- checks it: exact specs before any data (`upload_specs`: the encoding, top-k's kept count), the
  codec's scale and index bounds while decoding, NaN/Inf on the decoded tensors (`first_non_finite`);
- folds it (`fold_update`): fedavg and clip add num_samples x (global + delta) into their running sum,
  the delta decoded a chunk at a time (no float32 copy of the upload); clip scales the delta to its
  bound instead of rebuilding the update. trimmed-mean, median and krum keep whole updates: they get
  global + delta rebuilt (a model copy each, which they keep anyway). Every rule is translation
  invariant, so combining global + delta_i is combining the deltas: the strategies see deltas.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgefed.compression import (
    NONE,
    BroadcastError,
    BroadcastSettingError,
    CompressionError,
    CompressionSetting,
    CompressionSettingError,
    Compressor,
    GlobalDecoder,
    add_into,
    delta_norm,
    first_non_finite,
    parse_broadcast_compression,
    parse_compression,
)
from edgefed.federation.aggregation import StreamingAggregator
from edgefed.federation.strategies import Aggregator, ClippingAggregator, distance
from edgefed.wire import (
    EncodedStream,
    Frame,
    FrameStream,
    Hello,
    MessageType,
    ProtocolError,
    ReasonCode,
    Tensor,
    encode_tensor_frame,
    stream_tensor_frame,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delta:
    """A received upload under a lossy setting: what the worker's weights moved from the round's
    global weights (each tensor encoded, or plain for non-floating dtypes), checked by the codec."""

    tensors: list[Tensor]


Update = list[np.ndarray] | Delta  # what the chief folds: trained weights (`none`), or a Delta
UploadFrame = list[bytes | memoryview] | FrameStream  # a worker's UPDATE frame: whole, or produced while sent


def hello_mismatch(hello: Hello, setting: CompressionSetting) -> tuple[ReasonCode, str] | None:
    """Why a worker saying hello cannot join a federation using setting, or None. The code is
    bad-hello, a permanent one: the worker stops (state: error) instead of retrying, older ones too."""
    try:
        theirs = parse_compression(hello.compression)
    except CompressionSettingError:
        return (ReasonCode.BAD_HELLO,
                f"HELLO.compression {hello.compression[:64]!r} is not a setting; this federation uses {setting}")
    if theirs != setting:
        return (ReasonCode.BAD_HELLO,
                f"the worker compresses updates as {theirs}, this federation as {setting} (federation.compression)")
    return None


def broadcast_mismatch(hello: Hello, setting: str) -> tuple[ReasonCode, str] | None:
    """Why a worker cannot take this federation's broadcasts (federation.broadcast_compression), or None."""
    try:
        theirs = parse_broadcast_compression(hello.broadcast)
    except BroadcastSettingError:
        return (ReasonCode.BAD_HELLO,
                f"HELLO.broadcast {hello.broadcast[:64]!r} is not a setting; this federation uses {setting}")
    if theirs != setting:
        return (ReasonCode.BAD_HELLO, f"the worker takes broadcasts as {theirs}, this federation sends them as "
                f"{setting} (federation.broadcast_compression)")
    return None


def received_update(decoded: list[Tensor], setting: CompressionSetting, trained_from: Sequence[np.ndarray],
                    measured: bool = True) -> tuple[Update, float | None]:
    """What an UPDATE frame's decoded tensors mean under setting (the header check fixed their specs),
    and its distance from the global weights it was trained from (for screening and clip; None when
    not measured: RoundRules.measures_distances, a pass over the upload saved)."""
    update: Update = [np.asarray(t) for t in decoded] if setting.encoding is None else Delta(list(decoded))
    return update, update_distance(update, trained_from) if measured else None


def needs_finite_pass(update: Update, span: float | None) -> bool:
    """Whether the upload needs a pass of its own for NaN and Inf. Plain weights do not once their
    distance from the global weights is measured and finite: a NaN or Inf anywhere in them makes it
    NaN or Inf (the squares cannot cancel), so the distance's pass is the check."""
    return isinstance(update, Delta) or span is None or not math.isfinite(span)


def content_problem(decoded: Sequence[Tensor]) -> int | None:
    """Index of the first tensor holding NaN or Inf, encoded or plain (int8 never does), or None."""
    return first_non_finite(decoded)


def update_distance(update: Update, trained_from: Sequence[np.ndarray]) -> float:
    """The update's distance from the global weights it was trained from (screening and clip)."""
    if isinstance(update, Delta):
        return delta_norm(update.tensors)
    return distance(update, trained_from)


def fold_update(aggregator: Aggregator, update: Update, num_samples: int, contributor: str,
                base: Sequence[np.ndarray], span: float | None) -> None:
    """Add an update to the round's aggregator; base: the round's global weights."""
    if not isinstance(update, Delta):
        if isinstance(aggregator, ClippingAggregator) and span is not None:
            aggregator.add_measured(update, num_samples, contributor, span)  # not measured a second time
            return
        aggregator.add_scaled_in_place(update, num_samples, contributor)
        return
    if isinstance(aggregator, StreamingAggregator):
        scale = 1.0
        if isinstance(aggregator, ClippingAggregator):
            bound = aggregator.bound()
            if bound is not None and span is not None and span > bound and span > 0:
                scale = bound / span
        aggregator.add_delta(base, update.tensors, num_samples, contributor, scale)
        return
    aggregator.add_scaled_in_place(rebuilt(base, update), num_samples, contributor)


def rebuilt(base: Sequence[np.ndarray], delta: Delta) -> list[np.ndarray]:
    """global + delta as whole arrays in the model's dtypes, for the rules that keep whole updates."""
    out = []
    for weights, tensor in zip(base, delta.tensors, strict=True):
        total = np.array(weights, dtype=np.float64 if weights.dtype.kind in "iu" else weights.dtype, copy=True)
        add_into(total, tensor)
        out.append(np.rint(total).astype(weights.dtype) if weights.dtype.kind in "iu" else total)
    return out


class WorkerUploads:
    """The worker's side: what it sends for trained weights.

    Under `none`, the trained weights themselves. Otherwise the compressed delta from the last global
    weights received, with error feedback: the residual stays here across rounds and reconnections,
    and the global weights are subtracted from it on arrival (Compressor.rebase), so no copy of them
    is kept."""

    def __init__(self, compression: str) -> None:
        self.setting = parse_compression(compression)
        self._compressor = Compressor(self.setting) if self.setting != NONE else None

    @property
    def hello_value(self) -> str:
        return str(self.setting)

    def received_global(self, weights: list[np.ndarray]) -> None:
        """The chief's global weights just arrived: the next update is a delta from them."""
        if self._compressor is not None:
            self._compressor.rebase(weights)

    def tensors(self, trained: list[np.ndarray]) -> list[Tensor | EncodedStream] | None:
        """The tensors to upload (int8 ones encoded while sent: send them before the next call); None
        when a compressed delta cannot be formed (NaN/Inf trained: the residual is cleared and
        nothing is sent this round)."""
        if self._compressor is None:
            return list(trained)
        try:
            return self._compressor.compress_trained_streamed(trained)
        except CompressionError as exc:
            log.error("update not sent: %s", exc)
            return None

    def frame(self, trained: list[np.ndarray], round_: int, num_samples: int) -> UploadFrame | None:
        """The UPDATE frame for trained weights (None: see tensors()); a FrameStream when part of it
        is encoded while sent, to be sent before the next call."""
        tensors = self.tensors(trained)
        if tensors is None:
            return None
        if any(isinstance(t, EncodedStream) for t in tensors):
            return stream_tensor_frame(MessageType.UPDATE, round_, tensors, num_samples)
        whole = [t for t in tensors if not isinstance(t, EncodedStream)]
        return encode_tensor_frame(MessageType.UPDATE, round_, whole, num_samples)


class WorkerBroadcasts:
    """The worker's side of federation.broadcast_compression: each WEIGHTS frame's tensors become the
    global weights (checked: encodings, shapes, NaN/Inf, a delta only onto the model held). Under
    `none` the frame's arrays are taken as they are, as before."""

    def __init__(self, setting: str) -> None:
        self._decoder = GlobalDecoder(setting)

    @property
    def hello_value(self) -> str:
        return self._decoder.setting

    def new_connection(self) -> None:
        """The chief sends a keyframe to every new connection: a delta before it is refused."""
        self._decoder.reset()

    def weights(self, frame: Frame) -> list[np.ndarray] | None:
        """The global weights frame carries; None for a stale full model (ignore the frame).
        ProtocolError (one line) for a broadcast this worker must not take: it drops the connection."""
        if self._decoder.setting == "none":
            return frame.tensors
        assert frame.decoded is not None
        try:
            return self._decoder.receive(frame.round, frame.decoded)
        except BroadcastError as exc:
            raise ProtocolError(f"refused the broadcast for round {frame.round}: {exc}") from None
