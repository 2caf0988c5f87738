"""The trainers' data: scikit-learn's bundled digits, or a local Fashion-MNIST file (one loader for all).

Nothing is downloaded. Every node loads the same data with the same seed, so the test split is the
same everywhere and each node trains on its own shard of the training split (by task index), the
way the seed's demos hand a worker its part of the data set.

This module needs NumPy (and scikit-learn for digits) but not TensorFlow: the numpy softmax trainer
and the Keras trainer both load through it, so every trainer sees the same split.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefed.config import ConfigError

DIGITS = "digits"
FASHION_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
TEST_FRACTION = 0.2


class DatasetError(ConfigError):
    """A data set name or file is unusable; the message says which and why."""


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # float32, raw pixel values; the model scales them itself
    y_train: np.ndarray  # int64 class indices
    x_test: np.ndarray
    y_test: np.ndarray
    labels: tuple[str, ...]
    max_value: float  # largest raw input value (16 for digits, 255 for Fashion-MNIST)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    def shard(self, task_index: int, total: int) -> tuple[np.ndarray, np.ndarray]:
        """The training examples of participant `task_index` out of `total` (disjoint, near-equal)."""
        if total < 1 or not 0 <= task_index < total:
            raise DatasetError(f"task index {task_index} is outside 0..{total - 1}")
        return self.x_train[task_index::total], self.y_train[task_index::total]

    def flattened(self) -> Dataset:
        """The same split with each example as one row of features scaled to [0, 1] (linear models)."""
        scale = np.float32(1.0 / self.max_value)
        return Dataset(
            name=self.name,
            x_train=self.x_train.reshape(len(self.x_train), -1) * scale, y_train=self.y_train,
            x_test=self.x_test.reshape(len(self.x_test), -1) * scale, y_test=self.y_test,
            labels=self.labels, max_value=1.0,
        )


def load_dataset(spec: str = DIGITS, seed: int = 0) -> Dataset:
    """`digits` (scikit-learn's bundled 8x8 digits), or a path to Fashion-MNIST: a directory holding
    the four original idx .gz files (as Keras caches them), or an .npz with x_train/y_train/x_test/y_test.
    """
    if spec == DIGITS:
        return _load_digits(seed)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_fashion_idx(path, seed)
    if path.suffix == ".npz" and path.is_file():
        return _load_npz(path, seed)
    raise DatasetError(
        f"dataset {spec!r}: expected 'digits', a directory of Fashion-MNIST idx .gz files or an .npz file"
    )


def _load_digits(seed: int) -> Dataset:
    try:
        from sklearn.datasets import load_digits  # optional: only digits needs it
    except ImportError:
        raise DatasetError("dataset 'digits' needs scikit-learn (pip install 'edgefed[demo]')") from None
    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = round(len(x) * TEST_FRACTION)
    return Dataset(
        name=DIGITS,
        x_train=x[n_test:], y_train=y[n_test:], x_test=x[:n_test], y_test=y[:n_test],
        labels=tuple(str(d) for d in range(10)), max_value=16.0,
    )


def _shuffled_train(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(x))
    return x[order], y[order]


def _fashion(name: str, arrays: dict[str, np.ndarray], seed: int) -> Dataset:
    for key in ("x_train", "x_test"):
        if arrays[key].ndim != 3:
            raise DatasetError(f"{name}: {key} must hold 2-D images, got shape {arrays[key].shape}")
    x_train, y_train = _shuffled_train(arrays["x_train"], arrays["y_train"], seed)
    return Dataset(
        name="fashion-mnist",
        x_train=x_train.astype(np.float32), y_train=y_train.astype(np.int64),
        x_test=arrays["x_test"].astype(np.float32), y_test=arrays["y_test"].astype(np.int64),
        labels=FASHION_LABELS, max_value=255.0,
    )


def _load_npz(path: Path, seed: int) -> Dataset:
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in _FASHION_FILES if key not in archive]
        if missing:
            raise DatasetError(f"{path}: missing arrays {', '.join(missing)}")
        arrays = {key: np.asarray(archive[key]) for key in _FASHION_FILES}
    return _fashion(str(path), arrays, seed)


def _read_idx(path: Path) -> np.ndarray:
    # idx format: 2 zero bytes, a dtype code (0x08 = uint8), the number of dimensions, then big-endian sizes.
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DatasetError(f"{path}: not an idx file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: {body.size} values for shape {shape}")
    return body.reshape(shape)


def _load_fashion_idx(directory: Path, seed: int) -> Dataset:
    missing = [name for name in _FASHION_FILES.values() if not (directory / name).is_file()]
    if missing:
        raise DatasetError(f"{directory}: missing Fashion-MNIST files {', '.join(missing)}")
    arrays = {key: _read_idx(directory / name) for key, name in _FASHION_FILES.items()}
    return _fashion(str(directory), arrays, seed)
