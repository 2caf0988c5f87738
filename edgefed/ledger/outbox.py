"""The local durable outbox: records wait here, on every node, until the backend acknowledged them.

SQLite in WAL mode (STATE_DIR/ledger-outbox.sqlite). The chief or worker process inserts signed records
(through `OutboxSink`, an EventBus sink); the ledger service of the same node reads them in insertion
order, relays them and deletes each one only after the backend acknowledged it. A record the backend
refused for good (bad signature, unknown signer) stays, marked with the reason, so nothing is ever lost
silently. Two processes share the file: SQLite's locking keeps them consistent.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.contracts.events import ModelEvent, RefusalEvent, TransferEvent
from edgefed.ledger.background import lower_thread_priority
from edgefed.ledger.errors import LedgerError
from edgefed.ledger.records import TransferRecord
from edgefed.ledger.storage import connect_wal

log = logging.getLogger(__name__)

OUTBOX_FILE = "ledger-outbox.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    refused TEXT
);
CREATE TABLE IF NOT EXISTS delivered (
    id TEXT PRIMARY KEY,
    delivered_at REAL NOT NULL
);
"""


def outbox_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / OUTBOX_FILE


@dataclass(frozen=True)
class PendingRecord:
    seq: int
    record: TransferRecord
    attempts: int


class Outbox:
    """The outbox table of one node; safe to use from several threads (one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = connect_wal(self.path)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(_SCHEMA)

    @classmethod
    def for_state_dir(cls, state_dir: str | Path) -> Outbox:
        return cls(outbox_path(state_dir))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def put(self, record: TransferRecord) -> bool:
        """Store a signed record; False if a record with this id was already stored (or delivered)."""
        return self.put_many([record]) == 1

    def put_many(self, records: list[TransferRecord]) -> int:
        """Store records in one transaction (one fsync); returns how many were new."""
        stored = 0
        now = time.time()
        with self._transaction() as conn:
            for record in records:
                if conn.execute("SELECT 1 FROM delivered WHERE id = ?", (record.id,)).fetchone():
                    continue
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO outbox (id, record, created_at) VALUES (?, ?, ?)",
                    (record.id, record.to_json(), now),
                )
                stored += cursor.rowcount
        return stored

    def pending(self, limit: int) -> list[PendingRecord]:
        """The oldest records still waiting for delivery (refused ones excluded)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, record, attempts FROM outbox WHERE refused IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [
            PendingRecord(seq, TransferRecord.from_dict(json.loads(text)), attempts) for seq, text, attempts in rows
        ]

    def acknowledge(self, record_ids: list[str]) -> None:
        """The backend holds these records now: forget them (remembering their ids against re-insertion)."""
        if not record_ids:
            return
        now = time.time()
        with self._transaction() as conn:
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(rid,) for rid in record_ids])
            conn.executemany(
                "INSERT OR IGNORE INTO delivered (id, delivered_at) VALUES (?, ?)",
                [(rid, now) for rid in record_ids],
            )

    def refuse(self, record_id: str, reason: str) -> None:
        with self._transaction() as conn:
            conn.execute("UPDATE outbox SET refused = ? WHERE id = ?", (reason, record_id))

    def note_attempt(self, record_ids: list[str]) -> None:
        with self._transaction() as conn:
            conn.executemany("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", [(rid,) for rid in record_ids])

    def backlog(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM outbox WHERE refused IS NULL").fetchone()
        return int(row[0])

    def refused(self) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, refused FROM outbox WHERE refused IS NOT NULL ORDER BY seq"
            ).fetchall()
        return [(str(rid), str(reason)) for rid, reason in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class OutboxSink:
    """An EventBus sink: turns each TransferEvent this node observed into a signed record in the outbox,
    (refused(), a refusal sink) each update this chief refused into a signed refusal record, and
    (model(), a model sink) each global model this chief adopted into a signed model record.

    The training thread only checks the event and queues it (microseconds); a writer thread signs the
    queued events and stores them in one transaction per batch, so an fsync never sits on the training
    path. The price: events queued in the last moments before a hard kill (SIGKILL, power loss) are
    lost; close() (run on every orderly exit, SIGTERM included) writes everything queued.
    """

    def __init__(self, outbox: Outbox, node: str, signing_key: ed25519.Ed25519PrivateKey, process: str) -> None:
        self.outbox = outbox
        self.node = node
        self._key = signing_key
        self.process = process
        self._queue: queue.SimpleQueue[TransferEvent | RefusalEvent | ModelEvent | None] = queue.SimpleQueue()
        self._unwritten = 0  # events queued and not yet stored
        self._written = threading.Condition()
        self._writer = threading.Thread(target=self._write_loop, name=f"ledger-outbox-{node}", daemon=True)
        self._writer.start()

    def __call__(self, event: TransferEvent) -> None:
        self._enqueue(event)

    def refused(self, event: RefusalEvent) -> None:
        """Refused updates are recorded; refused admissions (HELLOs) are not: no update reached the chief."""
        if event.stage == "update":
            self._enqueue(event)

    def model(self, event: ModelEvent) -> None:
        self._enqueue(event)

    def _enqueue(self, event: TransferEvent | RefusalEvent | ModelEvent) -> None:
        if event.observer != self.node:
            # Only a node's own observations are signed with its key; anything else is a wiring mistake.
            raise LedgerError(f"event observed by {event.observer!r} reached the outbox of {self.node!r}")
        with self._written:
            self._unwritten += 1
        self._queue.put(event)

    def _write_loop(self) -> None:
        lower_thread_priority()  # signing and fsync yield to training
        while True:
            first = self._queue.get()
            batch = [first]
            while not self._queue.empty():
                batch.append(self._queue.get())
            events = [event for event in batch if event is not None]
            if events:
                records = [self._record(event).signed(self._key) for event in events]
                try:
                    self.outbox.put_many(records)
                except Exception:
                    log.exception("ledger outbox %s: could not store %d records", self.outbox.path, len(records))
            with self._written:
                self._unwritten -= len(events)
                self._written.notify_all()
            if None in batch:
                return

    def _record(self, event: TransferEvent | RefusalEvent | ModelEvent) -> TransferRecord:
        if isinstance(event, RefusalEvent):
            return TransferRecord.from_refusal(event, self.process)
        if isinstance(event, ModelEvent):
            return TransferRecord.from_model(event, self.process)
        return TransferRecord.from_event(event, self.process)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is in the outbox; False if that took over timeout."""
        with self._written:
            return self._written.wait_for(lambda: self._unwritten == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(timeout)
