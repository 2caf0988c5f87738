"""File transfer state on disk, kept apart from the sockets.

The receiver writes into ``DIR/.NAME.part`` and remembers what it is receiving in
``DIR/.NAME.part.json`` (name, size, sha256). When the same file is offered again after an
interruption, the receiver answers with the length it already holds and the sender continues
from there; the sha256 of the whole file is checked before the part file is renamed to NAME.
Memory stays constant: chunks go straight to disk and into a running hash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefed.fsutil import atomic_write_json
from edgefed.p2p.errors import TransferFailed, TransferRefused
from edgefed.p2p.names import destination, part_info_path, part_path, printable
from edgefed.wire import ProtocolError

log = logging.getLogger("edgefed.p2p")

HASH_BLOCK = 1 << 20
# Called after each completed transfer with the dict built by transfer_record (see docs/p2p.md).
TransferCallback = Callable[[dict[str, Any]], None]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def hash_file(path: Path, length: int | None = None) -> Any:
    """A sha256 object fed with the file (or its first length bytes), read in fixed-size blocks."""
    digest = hashlib.sha256()
    view = memoryview(bytearray(HASH_BLOCK))
    remaining = length
    with path.open("rb", buffering=0) as handle:
        while remaining is None or remaining > 0:
            want = HASH_BLOCK if remaining is None else min(HASH_BLOCK, remaining)
            count = handle.readinto(view[:want])
            if not count:
                if remaining:
                    raise TransferFailed(f"{path} ended {remaining} bytes early")
                break
            digest.update(view[:count])
            if remaining is not None:
                remaining -= count
    return digest


def file_sha256(path: Path) -> str:
    return str(hash_file(path).hexdigest())


@dataclass(frozen=True)
class FileOffer:
    """What a sender proposes: a plain file name, the exact size and the sha256 of the content."""

    name: str
    size: int
    sha256: str

    def to_body(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> FileOffer:
        name, size, sha256 = body.get("name"), body.get("size"), body.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"FILE_OFFER size must be a non-negative integer, got {size!r}")
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise ProtocolError("FILE_OFFER sha256 must be 64 lowercase hex characters")
        if not isinstance(name, str):
            raise ProtocolError(f"FILE_OFFER name must be a string, got {type(name).__name__}")
        return cls(name, size, sha256)


def transfer_record(
    sender: str, receiver: str, offer: FileOffer, direction: str, resumed_from: int, seconds: float = 0.0
) -> dict[str, Any]:
    """The record handed to on_file_transfer (and, when plugged in, to the ledger)."""
    return {
        "sender": sender,
        "receiver": receiver,
        "name": offer.name,
        "size": offer.size,
        "sha256": offer.sha256,
        "direction": direction,
        "resumed_from": resumed_from,
        "seconds": round(seconds, 6),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }


def notify_transfer(callback: TransferCallback | None, record: dict[str, Any]) -> None:
    """Hand a transfer record to the optional callback; its failure never undoes the transfer."""
    if callback is None:
        return
    try:
        callback(record)
    except Exception:
        log.exception("on_file_transfer callback failed for %s", record.get("name"))


class IncomingFile:
    """One file being received into directory, resuming a matching .part file if there is one.

    Raises TransferRefused when the offer cannot be taken (bad name, too large, no space, a
    different file of that name already there) and DuplicateFile when this exact file is.
    """

    def __init__(self, directory: Path, offer: FileOffer, max_size: int) -> None:
        self.offer = offer
        self.final = destination(directory, offer.name)
        shown = printable(offer.name)
        if offer.size > max_size:
            raise TransferRefused(
                f"refused {shown!r}: {offer.size} bytes is over this receiver's limit of {max_size} bytes"
            )
        if os.path.lexists(self.final):
            same_size = self.final.is_file() and self.final.stat().st_size == offer.size
            if same_size and file_sha256(self.final) == offer.sha256:
                raise DuplicateFile(self.final)
            raise TransferRefused(f"refused {shown!r}: a different file of that name already exists")
        self.part = part_path(self.final)
        self.info = part_info_path(self.final)
        self.offset = self._resume_offset()
        free = shutil.disk_usage(directory).free
        if offer.size - self.offset > free:
            raise TransferRefused(
                f"refused {shown!r}: needs {offer.size - self.offset} bytes, only {free} free on the receiver"
            )
        self._hasher: Any = hashlib.sha256()
        if self.offset:
            # Re-hash what is already on disk so the end-to-end check covers the whole file.
            self._hasher = hash_file(self.part, self.offset)
        else:
            atomic_write_json(self.info, self.offer.to_body(), mode=0o600)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.part, flags | (0 if self.offset else os.O_TRUNC), 0o600)
        os.ftruncate(fd, self.offset)
        os.lseek(fd, self.offset, os.SEEK_SET)
        self._handle = os.fdopen(fd, "wb")
        self.received = self.offset

    def _resume_offset(self) -> int:
        """Bytes of this very file (same name, size and sha256) kept from an interrupted transfer."""
        if not self.part.is_file() or self.part.is_symlink():
            return 0
        try:
            known = json.loads(self.info.read_text())
        except (OSError, ValueError):
            known = None
        held = self.part.stat().st_size
        if known == self.offer.to_body() and held <= self.offer.size:
            return held
        log.info("discarding stale %s (it belongs to another offer)", self.part)
        return 0

    def write(self, chunk: bytes) -> None:
        if self.received + len(chunk) > self.offer.size:
            raise ProtocolError(
                f"FILE_CHUNK goes past the offered size of {printable(self.offer.name)!r} "
                f"({self.received + len(chunk)} > {self.offer.size} bytes)"
            )
        self._handle.write(chunk)
        self._hasher.update(chunk)
        self.received += len(chunk)

    def finish(self) -> Path:
        """Check size and sha256, then publish the file atomically; a bad file is deleted."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        shown = printable(self.offer.name)
        if self.received != self.offer.size:
            self.discard()
            raise TransferFailed(f"{shown!r} ended at {self.received} of {self.offer.size} bytes")
        digest = self._hasher.hexdigest()
        if digest != self.offer.sha256:
            self.discard()
            raise TransferFailed(f"{shown!r} arrived with sha256 {digest}, expected {self.offer.sha256}")
        os.replace(self.part, self.final)
        self.info.unlink(missing_ok=True)
        _fsync_directory(self.final.parent)
        return self.final

    def suspend(self) -> None:
        """The link broke: keep the .part file and its description for a later resume."""
        with contextlib.suppress(OSError):
            self._handle.flush()
            self._handle.close()

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()
        self.part.unlink(missing_ok=True)
        self.info.unlink(missing_ok=True)


class DuplicateFile(Exception):
    """The offered file is already in the directory, byte for byte."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is already here")
        self.path = path


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
