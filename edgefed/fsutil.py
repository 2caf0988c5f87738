"""Crash-safe file writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike[str], mode: int = 0o644, durable: bool = True
) -> Iterator[IO[bytes]]:
    """Yield a file in the target's directory; on success rename it over the target.

    durable also fsyncs the file and its directory, so the new content survives a power cut; advisory
    files (status) skip that to spare SD cards.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    if durable:
        _fsync_dir(target.parent)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, mode: int = 0o644, durable: bool = True
) -> None:
    with atomic_writer(path, mode, durable) as handle:
        handle.write(data)


def atomic_write_json(
    path: str | os.PathLike[str], document: Any, mode: int = 0o644, durable: bool = True
) -> None:
    atomic_write_bytes(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode(), mode, durable)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
