"""FedAvg over deltas in one process: N simulated workers, one compressor each, no sockets.

What the federation will do per round once compression is wired in (a later step), reduced to the
arithmetic, so tests and bench/bench_compression.py can measure accuracy against bytes quickly.
Every upload goes through the real codec: encoded to frame bytes, read back by a FrameReader; so
does every broadcast under a `broadcast` setting (federation.broadcast_compression): the workers train
from what they decoded, which is what the chief's GlobalEncoder holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgefed.compression.accumulate import DeltaSum, first_non_finite, update_mismatch
from edgefed.compression.broadcast import GlobalDecoder, GlobalEncoder
from edgefed.compression.feedback import Compressor
from edgefed.compression.settings import CompressionSetting
from edgefed.wire import FrameReader, MessageType, Tensor, encode_tensor_frame, specs_of


class SimTrainer(Protocol):
    """What the simulation needs of a trainer (edgefed.trainers' SoftmaxTrainer fits)."""

    @property
    def num_samples(self) -> int: ...

    def use_shard(self, task_index: int, total: int) -> None: ...

    def get_weights(self) -> list[np.ndarray]: ...

    def set_weights(self, weights: list[np.ndarray]) -> None: ...

    def train_steps(self, steps: int) -> float: ...

    def evaluate(self) -> tuple[float, float]: ...


@dataclass
class SimResult:
    setting: str
    accuracy: list[float] = field(default_factory=list)  # after each round, of the global model
    upload_bytes: list[int] = field(default_factory=list)  # all workers' UPDATE frames, per round
    broadcast: str = "none"
    broadcast_bytes: list[int] = field(default_factory=list)  # one worker's WEIGHTS frame, per round

    @property
    def final_accuracy(self) -> float:
        return self.accuracy[-1]


def simulate_fedavg(
    make_trainer: Callable[[int], SimTrainer],
    setting: CompressionSetting,
    workers: int = 4,
    rounds: int = 30,
    steps: int = 10,
    broadcast: str = "none",
) -> SimResult:
    """rounds of FedAvg: each worker trains `steps` from the global model, sends its compressed delta
    (with error feedback) as an UPDATE frame; the global model moves by the weighted mean delta."""
    trainers = [make_trainer(index) for index in range(workers)]
    for index, trainer in enumerate(trainers):
        trainer.use_shard(index, workers)
    compressors = [Compressor(setting) for _ in trainers]
    encoder, decoder = GlobalEncoder(broadcast), GlobalDecoder(broadcast)
    held = encoder.start(trainers[0].get_weights())
    global_weights = _broadcast(decoder, 0, encoder.full(held))[0]
    model = specs_of(global_weights)
    result = SimResult(str(setting), broadcast=encoder.setting)
    for round_ in range(rounds):
        total = DeltaSum(model)
        sent = 0
        for trainer, compressor in zip(trainers, compressors, strict=True):
            trainer.set_weights(global_weights)
            trainer.train_steps(steps)
            tensors = compressor.compress_update(trainer.get_weights(), global_weights)
            data = b"".join(encode_tensor_frame(MessageType.UPDATE, round_, tensors, trainer.num_samples))
            sent += len(data)
            (frame,) = FrameReader().feed(data)
            assert frame.decoded is not None
            reason = update_mismatch(model, frame.specs, setting)
            if reason is None and first_non_finite(frame.decoded) is not None:
                reason = "non-finite"
            if reason is not None:
                raise AssertionError(f"round {round_}: the simulated chief refused an update: {reason}")
            total.add(frame.decoded, frame.num_samples)
        held = encoder.advance(total.apply(global_weights), round_ + 1)
        global_weights, size = _broadcast(decoder, round_ + 1, encoder.delta_for(round_ + 1) or encoder.full(held))
        if not all(np.array_equal(a, b) for a, b in zip(global_weights, held, strict=True)):
            raise AssertionError(f"round {round_}: the workers decoded another model than the chief's")
        result.broadcast_bytes.append(size)
        trainers[0].set_weights(global_weights)
        result.accuracy.append(trainers[0].evaluate()[1])
        result.upload_bytes.append(sent)
    return result


def _broadcast(decoder: GlobalDecoder, round_: int, tensors: list[Tensor]) -> tuple[list[np.ndarray], int]:
    """What the workers decode from a WEIGHTS frame of tensors, and the frame's size."""
    data = b"".join(encode_tensor_frame(MessageType.WEIGHTS, round_, tensors, 0))
    (frame,) = FrameReader().feed(data)
    assert frame.decoded is not None
    weights = decoder.receive(round_, frame.decoded)
    assert weights is not None
    return [np.array(w, copy=True) for w in weights], len(data)  # the decoder's own arrays change in place
