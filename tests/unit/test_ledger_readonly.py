"""`edgefed ledger verify|show` only read: a file that is not an edgefed ledger is refused in one line
(exit 2) and left exactly as it was; a real ledger's file is not written either."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgefed import pki
from edgefed.contracts.events import TransferEvent
from edgefed.ledger.backends import pki_key_lookup
from edgefed.ledger.chain import EmbeddedLedger
from edgefed.ledger.records import TransferRecord

REPO = Path(__file__).resolve().parents[2]
PAST_NS = 1_500_000_000 * 10**9  # an mtime any write would replace with the current time


def edgefed(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefed", *map(str, args)], capture_output=True, text=True, timeout=60, cwd=REPO
    )


@dataclass(frozen=True)
class Snapshot:
    """Everything verify could change: the file's bytes and mtime, and which files sit next to it."""

    data: bytes
    mtime_ns: int
    neighbours: list[str]

    @classmethod
    def of(cls, path: Path) -> Snapshot:
        return cls(path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir()))


def empty_file(path: Path) -> None:
    path.touch()


def another_programs_database(path: Path) -> None:
    with sqlite3.connect(path) as db:  # rollback journal, as most programs leave it
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        db.execute("INSERT INTO notes (text) VALUES ('keep me')")
    db.close()


def unrelated_entries_table(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE entries (day TEXT, amount REAL)")
        db.execute("INSERT INTO entries VALUES ('2026-11-28', 12.5)")
    db.close()


def text_file(path: Path) -> None:
    path.write_text("height,kind\n1,key\n" * 200)


NOT_LEDGERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "empty file": (empty_file, "an empty file"),
    "another program's SQLite database": (
        another_programs_database, "an SQLite database without the ledger's 'entries' table"
    ),
    "an 'entries' table of another program": (unrelated_entries_table, "its 'entries' table is not the ledger's"),
    "a text file": (text_file, "SQLite cannot read it: file is not a database"),
}


@pytest.mark.parametrize("case", NOT_LEDGERS)
@pytest.mark.parametrize("command", ["verify", "show"])
def test_a_file_that_is_not_a_ledger_is_refused_in_one_line_and_left_unchanged(
    case: str, command: str, tmp_path: Path
) -> None:
    make, reason = NOT_LEDGERS[case]
    path = tmp_path / "ledger.sqlite"
    make(path)
    os.utime(path, ns=(PAST_NS, PAST_NS))
    before = Snapshot.of(path)

    run = edgefed("ledger", command, path)

    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == ""
    assert run.stderr.splitlines() == [
        f"edgefed: error: {path}: not an edgefed ledger ({reason}); it was left unchanged."
        " Give the chief's STATE_DIR/ledger.sqlite or its state directory"
    ]
    assert Snapshot.of(path) == before


def test_a_state_directory_holding_an_empty_ledger_file_is_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    path.touch()
    os.utime(path, ns=(PAST_NS, PAST_NS))
    before = Snapshot.of(path)
    run = edgefed("ledger", "verify", tmp_path)
    assert run.returncode == 2
    assert run.stderr.startswith(f"edgefed: error: {path}: not an edgefed ledger (an empty file)")
    assert Snapshot.of(path) == before


def test_verifying_a_real_ledger_does_not_write_its_file(pki_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    chief_key = pki.NodeCredentials(pki_dir, "chief").ledger_signing_key()
    ledger = EmbeddedLedger(path, "chief", chief_key, pki_key_lookup(pki_dir))
    digest = hashlib.sha256(b"weights of round 1").hexdigest()
    for observer, direction in (("chief", "send"), ("worker1", "receive")):
        event = TransferEvent(1, "chief", "worker1", observer, direction, 2, 5328, digest, 0.01, "weights")
        record = TransferRecord.from_event(event, "edgefed").signed(
            pki.NodeCredentials(pki_dir, observer).ledger_signing_key()
        )
        assert ledger.append([record], pushed_by=observer).accepted == [record.id]
    ledger.close()  # the last connection checkpoints the WAL into the file
    os.utime(path, ns=(PAST_NS, PAST_NS))
    data = path.read_bytes()

    run = edgefed("ledger", "verify", path, "--pki", pki_dir)

    assert run.returncode == 0, run.stdout + run.stderr
    assert "ledger OK: 4 entries, 2 records, 1 transfers proven by both sides" in run.stdout
    assert path.read_bytes() == data
    assert path.stat().st_mtime_ns == PAST_NS
