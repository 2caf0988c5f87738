"""The trainer interface the federation driver runs."""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Trainer(Protocol):
    @property
    def num_samples(self) -> int:
        """Training samples in this participant's shard (the weight of its update)."""
        ...

    def use_shard(self, task_index: int, total: int) -> None:
        """Train on shard task_index of total (the chief is task 0)."""
        ...

    def get_weights(self) -> list[np.ndarray]: ...

    def set_weights(self, weights: list[np.ndarray]) -> None: ...

    def train_steps(self, steps: int) -> float:
        """Run steps local mini-batch steps; return the mean training loss."""
        ...

    def evaluate(self) -> tuple[float, float]:
        """(loss, accuracy) on the held-out test split."""
        ...
