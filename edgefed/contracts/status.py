"""The machine-readable status file each component keeps for `edgefed status`.

Written atomically to STATE_DIR/status/COMPONENT.json (component: chief, worker or ledger); the
shape is documented in docs/status.md.

update() and error() write before they return. update_soon() (a worker's new round) writes at once
only if the file is at least STATUS_WRITE_INTERVAL old; otherwise a timer writes the document that
much after the last write: rounds faster than that share one rewrite, so a worker's next upload does
not wait for a rename the file system may turn into a writeback (0.3 ms on an idle disk, ~3 ms on a
busy one, more on an SD card). A newer document on disk is never replaced by an older one.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from edgefed.contracts.events import RefusalEvent, TransferEvent
from edgefed.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

MAX_ERRORS = 10
MAX_REFUSED = 10  # the most recent refusals kept in the file; refused_total counts them all
MAX_REFUSAL_MESSAGE_CHARS = 300
TRANSFER_WRITE_INTERVAL = 0.5  # seconds: transfers alone rewrite the file at most this often
STATUS_WRITE_INTERVAL = 0.5  # seconds: update_soon() rewrites the file at most this often, and this late


def status_path(state_dir: str | Path, component: str) -> Path:
    return Path(state_dir) / "status" / f"{component}.json"


class StatusFile:
    """A small JSON document rewritten atomically whenever something worth reporting changes."""

    def __init__(self, state_dir: str | Path, component: str, node: str, **fields: Any) -> None:
        self.path = status_path(state_dir, component)
        self._lock = threading.Lock()  # guards the document and the fields below
        self._file_lock = threading.Lock()  # one write to the file at a time; taken after _lock, never before
        self._last_write = 0.0
        self._version = 0  # of the document: bumped at each serialization
        self._on_disk = 0  # the version the file holds
        self._timer: threading.Timer | None = None  # update_soon()'s trailing write, while one is due
        self._doc: dict[str, Any] = {
            "component": component,
            "node": node,
            "pid": os.getpid(),
            "started_at": time.time(),
            "state": "starting",
            "errors": [],
            **fields,
        }
        self._write()

    def update(self, **fields: Any) -> None:
        with self._lock:
            self._doc.update(fields)
            self._write()

    def update_soon(self, **fields: Any) -> None:
        """update(), written now if the file is STATUS_WRITE_INTERVAL old, else at most that late (the
        module's docstring); snapshot() shows the fields at once."""
        with self._lock:
            self._doc.update(fields)
            due = self._last_write + STATUS_WRITE_INTERVAL - time.monotonic()
            if due <= 0:
                self._write()
            elif self._timer is None:
                self._timer = threading.Timer(due, self._write_due)
                self._timer.daemon = True  # close() or the final update() writes the last document anyway
                self._timer.start()

    def error(self, message: str) -> None:
        with self._lock:
            errors = self._doc["errors"]
            errors.append({"at": time.time(), "message": message})
            del errors[:-MAX_ERRORS]
            self._write()

    def refused(self, event: RefusalEvent) -> None:
        """Record a refusal by the chief (an EventBus refusal sink): the last MAX_REFUSED, and a count."""
        message = event.message if len(event.message) <= MAX_REFUSAL_MESSAGE_CHARS else (
            event.message[: MAX_REFUSAL_MESSAGE_CHARS - 3] + "...")
        with self._lock:
            refused = self._doc.setdefault("refused", [])
            refused.append({"at": event.timestamp, "worker": event.worker, "round": event.round,
                            "stage": event.stage, "code": event.code, "message": message})
            del refused[:-MAX_REFUSED]
            self._doc["refused_total"] = self._doc.get("refused_total", 0) + 1
            self._write()

    def transfer(self, event: TransferEvent) -> None:
        """Record the latest transfer; written now only if the file is older than the write interval
        (the next update() or transfer writes it otherwise), so a busy round costs few writes."""
        peer = event.receiver if event.direction == "send" else event.sender
        with self._lock:
            self._doc["last_transfer"] = {
                "round": event.round,
                "peer": peer,
                "direction": event.direction,
                "bytes": event.bytes,
                "at": event.timestamp,
            }
            if time.monotonic() - self._last_write >= TRANSFER_WRITE_INTERVAL:
                self._write()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._doc)

    def flush(self) -> None:
        """Write the document now if the file does not hold it as it is (update_soon's pending write)."""
        with self._lock:
            if self._timer is not None:
                self._write()

    def _serialize(self) -> tuple[int, bytes]:
        """(version, bytes) of the document as it is now; called with _lock held."""
        self._last_write = time.monotonic()
        self._doc["updated_at"] = time.time()
        self._version += 1
        if self._timer is not None:  # this write carries what the timer would have written
            self._timer.cancel()
            self._timer = None
        return self._version, (json.dumps(self._doc, indent=2, sort_keys=True) + "\n").encode()

    def _store(self, version: int, data: bytes) -> None:
        with self._file_lock:
            if version <= self._on_disk:  # a newer document was written meanwhile
                return
            atomic_write_bytes(self.path, data, durable=False)
            self._on_disk = version

    def _write(self) -> None:
        """Write now (_lock held: the caller's change is on disk when it returns)."""
        self._store(*self._serialize())

    def _write_due(self) -> None:
        """The timer's write: the document is serialized under the lock and written outside it, so an
        update() or transfer() meanwhile does not wait for the disk."""
        with self._lock:
            if self._timer is None or threading.current_thread() is not self._timer:
                return  # a write since took it along
            self._timer = None
            version, data = self._serialize()
        try:
            self._store(version, data)
        except OSError as exc:  # nobody waits for this write: the operator sees it in the log
            log.error("cannot write the status file %s: %s", self.path, exc)
