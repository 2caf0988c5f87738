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
    phases: dict[str, float] = field(default_factory=dict)  # the chief's seconds per phase (timeline.py)


def run_federated(
    session: Session,
    trainer: Trainer,
    interval_steps: int,
    on_round: Callable[[RoundReport], None] | None = None,
) -> list[RoundReport]:
    """Join, then alternate interval_steps of local training with one federated average until the
    chief says training is over. Returns a report per round."""
    info = session.start(trainer.get_weights(), trainer.num_samples)
    trainer.use_shard(info.task_index, info.total)
    trainer.set_weights(info.weights)
    reports: list[RoundReport] = []
    finished = info.finished
    while not finished:
        started = time.monotonic()
        train_loss = trainer.train_steps(interval_steps)
        result = session.average(trainer.get_weights(), trainer.num_samples)
        trainer.set_weights(result.weights)
        loss, accuracy = trainer.evaluate()
        report = RoundReport(result.round, result.participants, train_loss, loss, accuracy,
                             time.monotonic() - started, result.finished, result.bytes, result.phases)
        reports.append(report)
        if on_round is not None:
            on_round(report)
        finished = result.finished
    return reports
