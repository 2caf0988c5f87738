"""The example Keras trainer: a small classifier on the digits data set (or a local Fashion-MNIST).

It follows the framework-neutral Trainer protocol (edgefed/trainers/base.py): weights are a list of
NumPy arrays, `train_steps(n)` runs n minibatch steps on this node's shard, `evaluate()` scores the
shared test split. The model takes raw pixel values and scales them itself, so the exported .tflite
files accept exactly what the data set holds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
import numpy as np

from edgefed.config import TrainerSection
from edgefed.tf.export import ExportedModel, export_model
from edgefed.trainers.data import DIGITS, Dataset, DatasetError, load_dataset

HIDDEN_UNITS = 64


def build_classifier(
    input_shape: Sequence[int], num_classes: int, max_value: float, learning_rate: float, seed: int = 0
) -> keras.Model:
    """Rescale to [0, 1] -> flatten -> one hidden ReLU layer -> softmax; plain SGD (FedAvg's setting)."""
    model = keras.Sequential(
        [
            keras.Input(shape=tuple(input_shape), dtype="float32", name="pixels"),
            keras.layers.Rescaling(1.0 / max_value),
            keras.layers.Flatten(),
            keras.layers.Dense(
                HIDDEN_UNITS, activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
            ),
            keras.layers.Dense(
                num_classes, activation="softmax",
                kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 1),
            ),
        ],
        name="edgefed_classifier",
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class KerasClassifierTrainer:
    """Trains `model` on shard `task_index` of `total`; call `use_shard` once the chief assigned one."""

    def __init__(
        self,
        dataset: Dataset | None = None,
        *,
        learning_rate: float = 0.1,
        batch_size: int = 32,
        seed: int = 0,
        task_index: int = 0,
        total: int = 1,
    ) -> None:
        self.dataset = dataset if dataset is not None else load_dataset(DIGITS, seed)
        self.batch_size = batch_size
        self.model = build_classifier(
            self.dataset.input_shape, len(self.dataset.labels), self.dataset.max_value, learning_rate, seed
        )
        self._rng = np.random.default_rng(seed)
        self._order = np.empty(0, dtype=np.int64)
        self._cursor = 0
        self.use_shard(task_index, total)

    # -- shard -------------------------------------------------------------------------------------
    def use_shard(self, task_index: int, total: int) -> None:
        self.task_index, self.total = task_index, total
        self.x, self.y = self.dataset.shard(task_index, total)
        # A different minibatch order per node, still reproducible.
        self._rng = np.random.default_rng([int(self._rng.integers(1 << 31)), task_index])
        self._order, self._cursor = self._rng.permutation(len(self.x)), 0

    @property
    def num_samples(self) -> int:
        return len(self.x)

    # -- Trainer protocol --------------------------------------------------------------------------
    def get_weights(self) -> list[np.ndarray]:
        return [np.asarray(w) for w in self.model.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        self.model.set_weights(list(weights))

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cursor + self.batch_size > len(self._order):
            self._order, self._cursor = self._rng.permutation(len(self.x)), 0
        picked = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return self.x[picked], self.y[picked]

    def train_steps(self, steps: int) -> float:
        """Run `steps` minibatch SGD steps; the mean training loss over them."""
        losses = []
        for _ in range(steps):
            x_batch, y_batch = self.next_batch()
            result = self.model.train_on_batch(x_batch, y_batch, return_dict=True)
            losses.append(float(result["loss"]))
        return float(np.mean(losses)) if losses else float("nan")

    def evaluate(self) -> tuple[float, float]:
        """(loss, accuracy) on the test split, the same on every node."""
        loss, accuracy = self.model.evaluate(
            self.dataset.x_test, self.dataset.y_test, batch_size=256, verbose=0, return_dict=False
        )
        return float(loss), float(accuracy)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class indices (argmax of the softmax scores)."""
        return np.argmax(self.model.predict(x, batch_size=256, verbose=0), axis=1)

    def export(self, directory: str | os.PathLike[str], round_number: int, node: str = "") -> ExportedModel:
        """Write .keras, float and dynamic-range .tflite and manifest.json (with test accuracies)."""
        return export_model(
            self.model, directory, round_number=round_number, labels=self.dataset.labels,
            test_data=(self.dataset.x_test, self.dataset.y_test),
            extra={"node": node, "dataset": self.dataset.name} if node else {"dataset": self.dataset.name},
        )


def trainer_for_section(section: TrainerSection) -> KerasClassifierTrainer:
    """The Keras trainer `edgefed chief|worker` runs for [trainer] kind = "keras"."""
    try:
        dataset = load_dataset(section.dataset, section.seed)
    except DatasetError as exc:
        raise DatasetError(f"trainer.dataset: {exc}") from None
    return KerasClassifierTrainer(
        dataset, learning_rate=section.learning_rate, batch_size=section.batch_size, seed=section.seed
    )
