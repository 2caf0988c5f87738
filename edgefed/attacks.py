"""Simulated hostile workers, for the demo and the poisoning benchmark (`edgefed worker --attack KIND`).

An attacking worker trains like any other, then sends a poisoned update instead of its own. With g the
global weights it was given and d = (its trained weights - g) its honest step:

- sign-flip: g - 4 d          (the honest step, reversed and boosted)
- scale:     g + 100 d        (the honest direction, a hundred times too far)
- huge:      3e38 everywhere  (finite float32, near its largest value)
- noise:     g + N(0, 1)      (random weights around the model)
- little:    g + d - 1.5 |d|  ("a little is enough": every coordinate nudged the same way, small enough
                               to hide among honest updates)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy only when an attack runs: the CLI reads ATTACKS at start
    import numpy as np

    from edgefed.trainers.base import Trainer

ATTACKS = ("sign-flip", "scale", "huge", "noise", "little")


def poison(kind: str, trained: list[np.ndarray], start: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """The update an attacker of this kind sends instead of trained (start: the global weights)."""
    import numpy as np

    out = []
    for mine, base in zip(trained, start, strict=True):
        step = mine.astype(np.float64) - base
        if kind == "sign-flip":
            bad = base - 4 * step
        elif kind == "scale":
            bad = base + 100 * step
        elif kind == "huge":
            bad = np.full(mine.shape, 3e38)
        elif kind == "noise":
            bad = base + rng.standard_normal(mine.shape)
        elif kind == "little":
            bad = base + step - 1.5 * np.abs(step)
        else:
            raise ValueError(f"unknown attack {kind!r} (known: {', '.join(ATTACKS)})")
        out.append(bad.astype(mine.dtype))
    return out


class AttackingTrainer:
    """A Trainer whose get_weights() after training returns a poisoned update."""

    def __init__(self, inner: Trainer, kind: str, seed: int = 0) -> None:
        if kind not in ATTACKS:
            raise ValueError(f"unknown attack {kind!r} (known: {', '.join(ATTACKS)})")
        import numpy as np

        self.inner = inner
        self.kind = kind
        self._rng = np.random.default_rng(seed)
        self._start: list[np.ndarray] | None = None

    @property
    def num_samples(self) -> int:
        return self.inner.num_samples

    def use_shard(self, task_index: int, total: int) -> None:
        self.inner.use_shard(task_index, total)

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self._start = [w.copy() for w in weights]
        self.inner.set_weights(weights)

    def get_weights(self) -> list[np.ndarray]:
        trained = self.inner.get_weights()
        if self._start is None:  # before the first global weights: nothing to poison yet
            return trained
        return poison(self.kind, trained, self._start, self._rng)

    def train_steps(self, steps: int) -> float:
        return self.inner.train_steps(steps)

    def evaluate(self) -> tuple[float, float]:
        return self.inner.evaluate()
