"""SQLite connections for the ledger's two files (the outbox and the embedded chain).

Writers share each file across processes (the node process and its ledger service; on the chief, the
federation process and the ledger service), so they use WAL mode and wait for a lock instead of
failing. Readers (`edgefed ledger verify|show`) open the file read-only: they never create a table or
switch the journal mode of a file they were only asked to look at.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edgefed.ledger.errors import LedgerError

BUSY_TIMEOUT_S = 30.0


def connect_wal(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in WAL mode that waits for a lock instead of failing (another process may write)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"{path}: cannot open as an SQLite database: {exc}") from None
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection (SQLite's ``mode=ro``): the file is never created or written through it.

    SQLite reads lazily, so a file that is not a database is only noticed by the first query.
    """
    uri = f"{path.resolve().as_uri()}?mode=ro"  # as_uri() escapes '?', '#' and '%' in the path
    try:
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"{path}: cannot open for reading: {exc}") from None


def table_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """The column names of TABLE in order ([] when there is no such table)."""
    return [str(row[0]) for row in conn.execute("SELECT name FROM pragma_table_info(?) ORDER BY cid", (table,))]
