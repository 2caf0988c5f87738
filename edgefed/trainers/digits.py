"""scikit-learn's bundled digits data set (8x8 images, 10 classes), split and sharded without downloads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEST_FRACTION = 0.25


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(seed: int = 0) -> Split:
    """Features scaled to [0, 1]; the same split on every node for a given seed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * (1 - TEST_FRACTION))
    train, test = order[:cut], order[cut:]
    return Split(x[train], y[train], x[test], y[test])


def shard(x: np.ndarray, y: np.ndarray, task_index: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows task_index, task_index + total, ... : disjoint shards that together cover the set."""
    if not 0 <= task_index < total:
        raise ValueError(f"task index {task_index} is outside 0..{total - 1}")
    return x[task_index::total], y[task_index::total]
