"""The training loop shared by every trainer: train interval_steps, average, repeat."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from edgefed.federation.session import RoundResult, StartInfo
from edgefed.trainers.base import Trainer


class Session(Protocol):
    def start(self, weights: list[np.ndarray] | None, num_samples: int = 0) -> StartInfo: ...

    def average(self, weights: list[np.ndarray], num_samples: int, final: bool | None = None) -> RoundResult: ...


@dataclass(frozen=True)
class RoundReport:
    round: int
    participants: list[str]
    train_loss: float
    loss: float
    accuracy: float
    seconds: float
    finished: bool
    bytes: int
    bytes_sent: int = 0  # of bytes: what this node sent for the round (upload, or the chief's broadcast)
    bytes_received: int = 0
    samples: int | None = None  # the samples behind the average (the chief's report; None on a worker)
    phases: dict[str, float] = field(default_factory=dict)  # the chief's seconds per phase (timeline.py)


def run_federated(
    session: Session,
    trainer: Trainer,
    interval_steps: int,
    on_round: Callable[[RoundReport], None] | None = None,
) -> list[RoundReport]:
    """Join, then alternate interval_steps of local training with one federated average until the
    chief says training is over. Returns a report per round."""
    receive_into = getattr(session, "receive_global_into", None)
    if callable(receive_into):  # a worker: the chief's weights land in the trainer's arrays, no copy sent
        receive_into(_weights_to_send(trainer))
        info = session.start(None, trainer.num_samples)
    else:
        info = session.start(trainer.get_weights(), trainer.num_samples)
    trainer.use_shard(info.task_index, info.total)
    trainer.set_weights(info.weights)
    reports: list[RoundReport] = []
    finished = info.finished
    del info  # the starting weights: the trainer holds its copy (a worker keeps no other)
    while not finished:
        started = time.monotonic()
        train_loss = trainer.train_steps(interval_steps)
        sent = _weights_to_send(trainer)
        if callable(receive_into):  # the global weights may land in them (set_weights' job anyway)
            receive_into(sent)
        result = session.average(sent, trainer.num_samples)
        del sent
        trainer.set_weights(result.weights)
        loss, accuracy = trainer.evaluate()
        report = RoundReport(result.round, result.participants, train_loss, loss, accuracy,
                             time.monotonic() - started, result.finished, result.bytes, result.bytes_sent,
                             result.bytes_received, result.samples, result.phases)
        reports.append(report)
        if on_round is not None:
            on_round(report)
        finished = result.finished
        del result  # before the next round: the global weights received must not outlive set_weights
    return reports


def _weights_to_send(trainer: Trainer) -> list[np.ndarray]:
    """The trained weights for average(), which reads them and, on a worker, may receive the next
    global weights into them: the trainer's own arrays when it offers them (weights_to_send, e.g. the
    numpy trainer; set_weights would overwrite them with those weights anyway), else a copy (get_weights)."""
    own = getattr(trainer, "weights_to_send", None)
    return own() if callable(own) else trainer.get_weights()
