"""Atomic checkpoints of the global weights and the round they belong to."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefed.errors import user_error
from edgefed.fsutil import atomic_writer

CHECKPOINT_NAME = "checkpoint.npz"


@user_error
class CheckpointError(Exception):
    """A checkpoint file exists but cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Checkpoint:
    round: int
    weights: list[np.ndarray]
    finished: bool = False


def save_checkpoint(state_dir: str | Path, checkpoint: Checkpoint) -> Path:
    path = Path(state_dir) / CHECKPOINT_NAME
    meta = json.dumps({"round": checkpoint.round, "finished": checkpoint.finished, "tensors": len(checkpoint.weights)})
    arrays = {f"t{i:05d}": w for i, w in enumerate(checkpoint.weights)}
    with atomic_writer(path, mode=0o600) as handle:
        np.savez(handle, __meta__=np.frombuffer(meta.encode(), dtype=np.uint8), **arrays)  # type: ignore[arg-type]
    return path


def load_checkpoint(state_dir: str | Path) -> Checkpoint | None:
    path = Path(state_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["__meta__"]).decode())
            weights = [data[f"t{i:05d}"] for i in range(int(meta["tensors"]))]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is not a usable checkpoint: {exc}") from exc
    return Checkpoint(int(meta["round"]), weights, bool(meta.get("finished", False)))
