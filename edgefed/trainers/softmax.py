"""A small numpy softmax-regression trainer: light enough for a Pi, no TensorFlow."""

from __future__ import annotations

import numpy as np

from edgefed.trainers.data import DIGITS, Dataset, load_dataset

NUM_CLASSES = 10


def _softmax_loss(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs = exp / exp.sum(axis=1, keepdims=True)
    loss = float(-np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean())
    return loss, probs


class SoftmaxTrainer:
    """Mini-batch SGD on W (features x classes) and b (classes)."""

    def __init__(
        self, learning_rate: float = 0.5, batch_size: int = 32, seed: int = 0, data: Dataset | None = None
    ) -> None:
        source = data or load_dataset(DIGITS, seed)
        # The features are the raw values times this (Dataset.flattened); the exported model folds it in.
        self.input_scale = 1.0 / source.max_value
        self.data = source.flattened()
        features = self.data.x_train.shape[1]
        init = np.random.default_rng(seed)
        self.weights = [
            (init.standard_normal((features, NUM_CLASSES)) * 0.01).astype(np.float32),
            np.zeros(NUM_CLASSES, np.float32),
        ]
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self._rng = np.random.default_rng(seed + 1)
        self._x, self._y = self.data.x_train, self.data.y_train

    @property
    def num_samples(self) -> int:
        return len(self._y)

    def use_shard(self, task_index: int, total: int) -> None:
        self._x, self._y = self.data.shard(task_index, total)
        self._rng = np.random.default_rng(1000 + task_index)

    def get_weights(self) -> list[np.ndarray]:
        return [w.copy() for w in self.weights]

    def weights_to_send(self) -> list[np.ndarray]:
        """The trainer's own arrays, not copies, for a caller that only reads them before the next
        train_steps or set_weights (the driver's upload), or writes into them the weights it then
        passes to set_weights (a worker receiving the global weights): model copies fewer on a worker."""
        return list(self.weights)

    def set_weights(self, weights: list[np.ndarray]) -> None:
        if [w.shape for w in weights] != [w.shape for w in self.weights]:
            raise ValueError(f"weights of shapes {[w.shape for w in weights]} do not fit this model")
        # copied into the trainer's arrays: no second model is allocated while the given one is alive
        for mine, theirs in zip(self.weights, weights, strict=True):
            np.copyto(mine, theirs, casting="unsafe")

    def train_steps(self, steps: int) -> float:
        w, b = self.weights
        losses = []
        for _ in range(steps):
            batch = self._rng.choice(len(self._y), size=min(self.batch_size, len(self._y)), replace=False)
            x, y = self._x[batch], self._y[batch]
            loss, probs = _softmax_loss(x @ w + b, y)
            probs[np.arange(len(y)), y] -= 1.0
            grad = probs / len(y)
            w -= self.learning_rate * (x.T @ grad)
            b -= self.learning_rate * grad.sum(axis=0)
            losses.append(loss)
        return float(np.mean(losses)) if losses else 0.0

    def evaluate(self) -> tuple[float, float]:
        w, b = self.weights
        logits = self.data.x_test @ w + b
        loss, probs = _softmax_loss(logits, self.data.y_test)
        accuracy = float((probs.argmax(axis=1) == self.data.y_test).mean())
        return loss, accuracy
