"""The embedded ledger: an append-only, hash-chained, signed log in SQLite (STATE_DIR/ledger.sqlite).

Every entry stores its height, its kind (``key``: a node's ledger public key was registered; ``record``:
a signed transfer record), its payload (canonical JSON), the hash of the previous entry and its own
hash over all of that; the chief signs each entry hash with its ledger key. The chain's first entry
registers the chief's own key. A record is appended only if it carries a valid signature of a
registered key, so the chain holds nothing its observer did not sign.

Several writers share the file (the chief's federation process appends workers' pushes, the chief's
ledger service appends the chief's own records): each append runs inside ``BEGIN IMMEDIATE``, which
serialises them across processes, so heights and links never fork. Readers (`edgefed ledger verify`,
`show`) open it through ChainReader, read-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.ledger.errors import LedgerError
from edgefed.ledger.records import TransferRecord, canonical_json
from edgefed.ledger.storage import connect_readonly, connect_wal, table_columns
from edgefed.pki import public_key_hex

log = logging.getLogger(__name__)

LEDGER_FILE = "ledger.sqlite"
ENTRY_COLUMNS = (
    "height", "kind", "entry_id", "payload", "prev_hash", "hash", "appended_at", "appended_by", "signature"
)
GENESIS_PREV = "0" * 64
ENTRY_CONTEXT = b"edgefed-ledger-entry-v1\n"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    height INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    entry_id TEXT NOT NULL UNIQUE,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    appended_at REAL NOT NULL,
    appended_by TEXT NOT NULL,
    signature TEXT NOT NULL
);
"""

# Resolves a node name to its ledger public key when the chain has not registered one yet (the PKI dir).
KeyLookup = Callable[[str], ed25519.Ed25519PublicKey | None]


def ledger_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / LEDGER_FILE


def resolve_ledger_path(path: str | Path) -> Path:
    """PATH may be the database itself or a state directory holding one."""
    candidate = Path(path)
    if candidate.is_dir():
        directory = candidate
        candidate = ledger_path(directory)
        # `edgefed demo --state-dir DIR` keeps one state directory per node: the chief's holds the ledger.
        nested = sorted(directory.glob(f"*/{LEDGER_FILE}"))
        if not candidate.is_file() and len(nested) == 1:
            candidate = nested[0]
    if not candidate.is_file():
        raise LedgerError(f"{candidate}: no ledger database here (the chief keeps STATE_DIR/{LEDGER_FILE})")
    return candidate


def _not_a_ledger(path: Path, why: str) -> str:
    return (
        f"{path}: not an edgefed ledger ({why}); it was left unchanged."
        f" Give the chief's STATE_DIR/{LEDGER_FILE} or its state directory"
    )


@dataclass(frozen=True)
class Entry:
    height: int
    kind: str
    entry_id: str
    payload: str
    prev_hash: str
    hash: str
    appended_at: float
    appended_by: str
    signature: str

    def payload_document(self) -> dict[str, Any]:
        try:
            document = json.loads(self.payload)
        except json.JSONDecodeError as exc:
            raise LedgerError(f"entry {self.height}: payload is not valid JSON ({exc})") from None
        if not isinstance(document, dict):
            raise LedgerError(f"entry {self.height}: payload is not a JSON object")
        return document

    def record(self) -> TransferRecord:
        if self.kind != "record":
            raise LedgerError(f"entry {self.height} is a {self.kind} entry, not a record")
        try:
            return TransferRecord.from_dict(self.payload_document())
        except LedgerError as exc:
            raise LedgerError(f"entry {self.height}: {exc}") from None


def entry_hash(
    *, height: int, kind: str, entry_id: str, payload: str, prev_hash: str, appended_at: float, appended_by: str
) -> str:
    document = {
        "height": height,
        "kind": kind,
        "id": entry_id,
        "payload": payload,
        "prev": prev_hash,
        "at": appended_at,
        "by": appended_by,
    }
    return hashlib.sha256(canonical_json(document)).hexdigest()


@dataclass
class AppendResult:
    """What happened to each record of one append batch (sent back in LEDGER_ACK)."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    height: int = 0

    def acknowledged(self) -> list[str]:
        return self.accepted + self.duplicates


class ChainReader:
    """Reads a chain; never writes to its file (what `edgefed ledger verify|show` use)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path) -> ChainReader:
        """The ledger at PATH (a database or a state directory holding one), opened read-only.

        Refuses, with the reason, a file that is not an edgefed ledger (an empty file, another program's
        database) without changing it.
        """
        found = resolve_ledger_path(path)
        conn = connect_readonly(found)
        try:
            columns = table_columns(conn, "entries")
        except sqlite3.DatabaseError as exc:  # "file is not a database", or no permission to read it
            conn.close()
            raise LedgerError(_not_a_ledger(found, f"SQLite cannot read it: {exc}")) from None
        if tuple(columns) != ENTRY_COLUMNS:
            conn.close()
            if found.stat().st_size == 0:
                raise LedgerError(_not_a_ledger(found, "an empty file"))
            if columns:
                raise LedgerError(_not_a_ledger(found, "its 'entries' table is not the ledger's"))
            raise LedgerError(_not_a_ledger(found, "an SQLite database without the ledger's 'entries' table"))
        return cls(found, conn)

    @staticmethod
    def _last(conn: sqlite3.Connection) -> tuple[int, str] | None:
        row = conn.execute("SELECT height, hash FROM entries ORDER BY height DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else None

    def height(self) -> int:
        with self._lock:
            last = self._last(self._conn)
        return last[0] if last else 0

    def entries(self) -> Iterator[Entry]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT height, kind, entry_id, payload, prev_hash, hash, appended_at, appended_by, signature"
                " FROM entries ORDER BY height"
            ).fetchall()
        for row in rows:
            yield Entry(*row)

    def records(self) -> list[TransferRecord]:
        return [entry.record() for entry in self.entries() if entry.kind == "record"]

    def count_records(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT COUNT(*) FROM entries WHERE kind = 'record'").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class EmbeddedLedger(ChainReader):
    """The chain opened for appending (created if missing); appends are serialised across threads (lock)
    and processes (SQLite)."""

    def __init__(
        self,
        path: str | Path,
        owner: str,
        signing_key: ed25519.Ed25519PrivateKey | None = None,
        key_lookup: KeyLookup | None = None,
    ) -> None:
        super().__init__(Path(path), connect_wal(Path(path)))
        self.owner = owner
        self._key = signing_key
        self._key_lookup = key_lookup
        self._tip: tuple[int, str] | None = None  # (height, hash) of the last entry, inside a transaction
        self._verifiers: dict[str, ed25519.Ed25519PublicKey] = {}
        try:
            self._conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise LedgerError(f"{self.path}: not a ledger database: {exc}") from None
        if signing_key is not None:
            with self._transaction() as conn:
                if self._last(conn) is None:
                    self._append(
                        conn,
                        "key",
                        f"key-{owner}",
                        {"node": owner, "public_key": public_key_hex(signing_key)},
                    )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._tip = None
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            finally:
                self._tip = None
            self._conn.execute("COMMIT")

    def _append(self, conn: sqlite3.Connection, kind: str, entry_id: str, document: dict[str, Any]) -> int:
        if self._key is None:
            raise LedgerError(f"{self.path}: opened without the owner's signing key, cannot append")
        # The tip is read once per transaction (BEGIN IMMEDIATE: nobody else appends meanwhile).
        if self._tip is None:
            self._tip = self._last(conn) or (0, GENESIS_PREV)
        height, prev = self._tip[0] + 1, self._tip[1]
        payload = canonical_json(document).decode()
        at = time.time()
        digest = entry_hash(
            height=height,
            kind=kind,
            entry_id=entry_id,
            payload=payload,
            prev_hash=prev,
            appended_at=at,
            appended_by=self.owner,
        )
        signature = self._key.sign(ENTRY_CONTEXT + bytes.fromhex(digest)).hex()
        conn.execute(
            "INSERT INTO entries (height, kind, entry_id, payload, prev_hash, hash, appended_at, appended_by,"
            " signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (height, kind, entry_id, payload, prev, digest, at, self.owner, signature),
        )
        self._tip = (height, digest)
        return height

    def _registered_keys(self, conn: sqlite3.Connection) -> dict[str, str]:
        keys: dict[str, str] = {}
        for (payload,) in conn.execute("SELECT payload FROM entries WHERE kind = 'key' ORDER BY height"):
            document = json.loads(payload)
            keys[document["node"]] = document["public_key"]
        return keys

    def _key_for(self, conn: sqlite3.Connection, keys: dict[str, str], node: str) -> str | None:
        """The registered key of NODE, registering it from the key lookup (the PKI) the first time."""
        if node in keys:
            return keys[node]
        found = self._key_lookup(node) if self._key_lookup else None
        if found is None:
            return None
        keys[node] = public_key_hex(found)
        self._append(conn, "key", f"key-{node}-{keys[node][:16]}", {"node": node, "public_key": keys[node]})
        log.info("ledger: registered the ledger key of %s", node)
        return keys[node]

    def append(self, records: Sequence[TransferRecord], pushed_by: str | None = None) -> AppendResult:
        """Append records whose signatures check out; refuse the others with a reason naming the problem.

        pushed_by is the authenticated peer that delivered them: a node may only deliver its own records.
        """
        result = AppendResult()
        with self._transaction() as conn:
            keys = self._registered_keys(conn)
            for record in records:
                reason = self._refusal(conn, keys, record, pushed_by)
                if reason is None:
                    self._append(conn, "record", record.id, record.to_dict())
                    result.accepted.append(record.id)
                elif reason == "duplicate":
                    result.duplicates.append(record.id)
                else:
                    result.refused.append((record.id, reason))
            last = self._last(conn)
            result.height = last[0] if last else 0
        for record_id, reason in result.refused:
            log.warning("ledger: refused record %s: %s", record_id, reason)
        return result

    def _refusal(
        self, conn: sqlite3.Connection, keys: dict[str, str], record: TransferRecord, pushed_by: str | None
    ) -> str | None:
        """None if the record may be appended, "duplicate" if it already is, else why it is refused."""
        try:
            if pushed_by is not None and record.observer != pushed_by:
                raise LedgerError(f"{pushed_by} may only deliver its own records, this one is {record.observer}'s")
            record.check_fields()
            existing = conn.execute("SELECT payload FROM entries WHERE entry_id = ?", (record.id,)).fetchone()
            if existing is not None:
                if existing[0] == record.to_json():
                    return "duplicate"
                raise LedgerError(f"a different record with id {record.id} is already on the ledger")
            public_hex = self._key_for(conn, keys, record.observer)
            if public_hex is None:
                raise LedgerError(f"unknown signer {record.observer!r}: no ledger key registered for it")
            verifier = self._verifiers.get(public_hex)
            if verifier is None:
                verifier = self._verifiers[public_hex] = ed25519.Ed25519PublicKey.from_public_bytes(
                    bytes.fromhex(public_hex)
                )
            record.verify(verifier)
        except LedgerError as exc:
            return str(exc)
        return None


def check_entry_signature(entry: Entry, public_hex: str) -> bool:
    try:
        key = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))
        key.verify(bytes.fromhex(entry.signature), ENTRY_CONTEXT + bytes.fromhex(entry.hash))
    except (ValueError, InvalidSignature):
        return False
    return True
