"""Atomic checkpoints of the global weights and the round they belong to.

A checkpoint is one WEIGHTS frame of the wire format written to a file: the arrays go to disk without
a copy and come back with readinto() straight into their arrays, and the codec's checks (magic,
version, limits, exact payload length) guard against a damaged file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefed.errors import user_error
from edgefed.fsutil import atomic_writer
from edgefed.wire import Flags, FrameReader, Limits, MessageType, ProtocolError, encode_tensor_frame

CHECKPOINT_NAME = "checkpoint.efed"


@user_error
class CheckpointError(Exception):
    """A checkpoint file exists but cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Checkpoint:
    round: int
    weights: list[np.ndarray]
    finished: bool = False


def checkpoint_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / CHECKPOINT_NAME


def save_checkpoint(state_dir: str | Path, checkpoint: Checkpoint) -> Path:
    path = checkpoint_path(state_dir)
    flags = Flags.FINAL if checkpoint.finished else Flags.NONE
    parts = encode_tensor_frame(MessageType.WEIGHTS, checkpoint.round, checkpoint.weights, 0, flags)
    with atomic_writer(path, mode=0o600) as handle:
        for part in parts:
            handle.write(part)
    return path


def load_checkpoint(state_dir: str | Path, limits: Limits | None = None) -> Checkpoint | None:
    path = checkpoint_path(state_dir)
    if not path.exists():
        return None
    reader = FrameReader(limits, hash_payloads=False)
    try:
        with path.open("rb") as handle:
            while True:
                count = handle.readinto(reader.buffer())
                if not count:
                    raise CheckpointError(f"{path} is truncated")
                frame = reader.advance(count)
                if frame is not None:
                    break
            if handle.read(1):
                raise CheckpointError(f"{path} has bytes after its checkpoint")
    except (OSError, ProtocolError) as exc:
        raise CheckpointError(f"{path} is not a usable checkpoint: {exc}") from exc
    if frame.type is not MessageType.WEIGHTS or frame.tensors is None:
        raise CheckpointError(f"{path} is not a usable checkpoint: it holds a {frame.type.name} frame")
    return Checkpoint(frame.round, frame.tensors, bool(frame.flags & Flags.FINAL))
