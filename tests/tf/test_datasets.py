"""The example trainer's data sets: digits from scikit-learn, or a Fashion-MNIST file already on disk."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from edgefed.config import ConfigError
from edgefed.trainers.data import FASHION_LABELS, DatasetError, load_dataset


def test_digits_split_is_the_same_everywhere_and_shards_are_disjoint() -> None:
    first, second = load_dataset("digits", seed=4), load_dataset("digits", seed=4)
    np.testing.assert_array_equal(first.x_test, second.x_test)
    assert first.input_shape == (64,) and first.max_value == 16.0
    shards = [first.shard(i, 3) for i in range(3)]
    assert sum(len(y) for _, y in shards) == len(first.y_train)
    rows = np.concatenate([x for x, _ in shards])
    assert len({row.tobytes() for row in rows}) == len({row.tobytes() for row in first.x_train})


def test_shard_outside_the_federation_is_refused() -> None:
    with pytest.raises(DatasetError, match=r"task index 3 is outside 0\.\.2"):
        load_dataset("digits").shard(3, 3)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _fake_fashion(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (count, 28, 28)), rng.integers(0, 10, count)


def test_fashion_mnist_from_a_local_idx_directory(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = _fake_fashion(rng, 50), _fake_fashion(rng, 20)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", x_train)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y_train)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x_test)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y_test)
    data = load_dataset(str(tmp_path))
    assert data.name == "fashion-mnist" and data.labels == FASHION_LABELS
    assert data.input_shape == (28, 28) and data.max_value == 255.0
    np.testing.assert_array_equal(data.x_test, x_test.astype(np.float32))
    assert sorted(data.y_train.tolist()) == sorted(y_train.tolist())  # shuffled, nothing lost


def test_fashion_mnist_from_an_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    (x_train, y_train), (x_test, y_test) = _fake_fashion(rng, 30), _fake_fashion(rng, 10)
    archive = tmp_path / "fashion.npz"
    np.savez(archive, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    assert load_dataset(str(archive)).input_shape == (28, 28)


def test_unusable_dataset_specs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected 'digits', a directory"):
        load_dataset(str(tmp_path / "missing.npz"))
    with pytest.raises(DatasetError, match=r"missing Fashion-MNIST files train-images-idx3-ubyte\.gz"):
        load_dataset(str(tmp_path))
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 28, 28)))
    with pytest.raises(DatasetError, match="missing arrays y_train, x_test, y_test"):
        load_dataset(str(partial))
