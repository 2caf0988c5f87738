"""The machine-readable status file each component keeps for `edgefed status`.

Written atomically to STATE_DIR/status/COMPONENT.json (component: chief, worker or ledger); the
shape is documented in docs/status.md.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from edgefed.contracts.events import RefusalEvent, TransferEvent
from edgefed.fsutil import atomic_write_json

MAX_ERRORS = 10
MAX_REFUSED = 10  # the most recent refusals kept in the file; refused_total counts them all
MAX_REFUSAL_MESSAGE_CHARS = 300
TRANSFER_WRITE_INTERVAL = 0.5  # seconds: transfers alone rewrite the file at most this often


def status_path(state_dir: str | Path, component: str) -> Path:
    return Path(state_dir) / "status" / f"{component}.json"


class StatusFile:
    """A small JSON document rewritten atomically whenever something worth reporting changes."""

    def __init__(self, state_dir: str | Path, component: str, node: str, **fields: Any) -> None:
        self.path = status_path(state_dir, component)
        self._lock = threading.Lock()
        self._last_write = 0.0
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

    def _write(self) -> None:
        self._last_write = time.monotonic()
        self._doc["updated_at"] = time.time()
        atomic_write_json(self.path, self._doc, durable=False)
