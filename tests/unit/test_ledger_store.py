"""The outbox and the embedded chain on real SQLite files: idempotence, refusals, tamper detection."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed import pki
from edgefed.contracts.events import TransferEvent
from edgefed.ledger.backends import pki_key_lookup
from edgefed.ledger.chain import EmbeddedLedger
from edgefed.ledger.errors import LedgerError
from edgefed.ledger.outbox import Outbox, OutboxSink
from edgefed.ledger.records import TransferRecord
from edgefed.ledger.verify import verify_ledger

REPO = Path(__file__).resolve().parents[2]


def keys(pki_dir: Path, name: str) -> ed25519.Ed25519PrivateKey:
    return pki.NodeCredentials(pki_dir, name).ledger_signing_key()


def transfer(round_: int, worker: str = "worker1") -> tuple[TransferEvent, TransferEvent]:
    digest = hashlib.sha256(f"{round_}-{worker}".encode()).hexdigest()
    common = dict(
        round=round_,
        sender="chief",
        receiver=worker,
        participants=3,
        bytes=1000 + round_,
        sha256=digest,
        kind="weights",
    )
    send = TransferEvent(observer="chief", direction="send", seconds=0.01, timestamp=100.0 + round_, **common)  # type: ignore[arg-type]
    receive = TransferEvent(observer=worker, direction="receive", seconds=0.02, timestamp=100.5 + round_, **common)  # type: ignore[arg-type]
    return send, receive


@pytest.fixture
def chain(pki_dir: Path, tmp_path: Path) -> EmbeddedLedger:
    ledger = EmbeddedLedger(tmp_path / "ledger.sqlite", "chief", keys(pki_dir, "chief"), pki_key_lookup(pki_dir))
    yield ledger
    ledger.close()


def signed(pki_dir: Path, ev: TransferEvent) -> TransferRecord:
    return TransferRecord.from_event(ev, "edgefed").signed(keys(pki_dir, ev.observer))


def fill(chain: EmbeddedLedger, pki_dir: Path, rounds: int) -> None:
    for round_ in range(rounds):
        send, receive = transfer(round_)
        assert chain.append([signed(pki_dir, send)], pushed_by="chief").accepted
        assert chain.append([signed(pki_dir, receive)], pushed_by="worker1").accepted


# -- outbox ---------------------------------------------------------------------------------------
def test_outbox_keeps_records_until_acknowledged_across_reopen(pki_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "ledger-outbox.sqlite"
    outbox = Outbox(path)
    sink = OutboxSink(outbox, "chief", keys(pki_dir, "chief"), "edgefed")
    for round_ in range(3):
        sink(transfer(round_)[0])
    sink.close()  # the writer thread stores what was queued
    outbox.close()

    reopened = Outbox(path)  # another process (the ledger service) opening the same file
    assert reopened.backlog() == 3
    pending = reopened.pending(10)
    assert [item.record.round for item in pending] == [0, 1, 2]
    reopened.acknowledge([pending[0].record.id])
    assert reopened.backlog() == 2
    assert [item.record.round for item in reopened.pending(10)] == [1, 2]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_outbox_never_stores_a_record_twice(pki_dir: Path, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    record = signed(pki_dir, transfer(0)[0])
    assert outbox.put(record) is True
    assert outbox.put(record) is False
    outbox.acknowledge([record.id])
    assert outbox.put(record) is False  # already delivered: a re-emitted event is not relayed again
    assert outbox.backlog() == 0


def test_refused_records_stay_with_their_reason(pki_dir: Path, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    record = signed(pki_dir, transfer(0)[0])
    outbox.put(record)
    outbox.refuse(record.id, "bad signature")
    assert outbox.backlog() == 0
    assert outbox.refused() == [(record.id, "bad signature")]


def test_sink_refuses_events_observed_by_another_node(pki_dir: Path, tmp_path: Path) -> None:
    sink = OutboxSink(Outbox(tmp_path / "outbox.sqlite"), "chief", keys(pki_dir, "chief"), "edgefed")
    with pytest.raises(LedgerError, match="observed by 'worker1' reached the outbox of 'chief'"):
        sink(transfer(0)[1])


# -- chain ----------------------------------------------------------------------------------------
def test_chain_accepts_signed_records_and_verifies(chain: EmbeddedLedger, pki_dir: Path, tmp_path: Path) -> None:
    fill(chain, pki_dir, 3)
    report = verify_ledger(tmp_path, pki_dir)
    assert report.ok, report.problems
    assert (report.records, report.proven_transfers, report.signers) == (6, 3, ["chief", "worker1"])


def test_a_second_delivery_is_a_duplicate_not_a_new_entry(chain: EmbeddedLedger, pki_dir: Path) -> None:
    record = signed(pki_dir, transfer(0)[0])
    first = chain.append([record], pushed_by="chief")
    again = chain.append([record], pushed_by="chief")
    assert (first.accepted, again.accepted, again.duplicates) == ([record.id], [], [record.id])
    assert chain.count_records() == 1


def test_bad_signature_is_refused_with_a_clear_reason(chain: EmbeddedLedger, pki_dir: Path) -> None:
    record = signed(pki_dir, transfer(0)[0])
    document = record.to_dict()
    del document["id"]
    document["bytes"] += 1
    forged = TransferRecord(**document)
    result = chain.append([forged], pushed_by="chief")
    assert result.accepted == []
    assert result.refused == [
        (forged.id, f"record {forged.id}: bad signature (not chief's ledger key over these fields)")
    ]
    assert chain.count_records() == 0


def test_unknown_signer_is_refused(pki_dir: Path, tmp_path: Path) -> None:
    stranger = ed25519.Ed25519PrivateKey.generate()
    ev = transfer(0, worker="stranger")[1]
    record = TransferRecord.from_event(ev, "edgefed").signed(stranger)
    ledger = EmbeddedLedger(tmp_path / "l.sqlite", "chief", keys(pki_dir, "chief"), pki_key_lookup(pki_dir))
    result = ledger.append([record], pushed_by="stranger")
    assert result.refused == [(record.id, "unknown signer 'stranger': no ledger key registered for it")]


def test_a_node_may_only_deliver_its_own_records(chain: EmbeddedLedger, pki_dir: Path) -> None:
    record = signed(pki_dir, transfer(0)[1])  # worker1's receive record
    result = chain.append([record], pushed_by="worker2")
    assert result.refused == [(record.id, "worker2 may only deliver its own records, this one is worker1's")]


def test_verify_names_the_entry_whose_byte_changed(chain: EmbeddedLedger, pki_dir: Path, tmp_path: Path) -> None:
    fill(chain, pki_dir, 3)
    chain.close()
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    height, payload = db.execute(
        "SELECT height, payload FROM entries WHERE kind='record' ORDER BY height LIMIT 1 OFFSET 2"
    ).fetchone()
    position = payload.index('"bytes":') + len('"bytes":')
    changed = payload[:position] + str((int(payload[position]) + 1) % 10) + payload[position + 1 :]
    db.execute("UPDATE entries SET payload = ? WHERE height = ?", (changed, height))
    db.commit()
    db.close()
    report = verify_ledger(path)
    assert not report.ok
    assert report.problems[0].where == f"entry {height}"
    assert "does not match its hash" in report.problems[0].message


def test_verify_notices_a_removed_entry(chain: EmbeddedLedger, pki_dir: Path, tmp_path: Path) -> None:
    fill(chain, pki_dir, 3)
    chain.close()
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("DELETE FROM entries WHERE height = 4")
    db.commit()
    db.close()
    report = verify_ledger(tmp_path)
    assert report.problems[0].where == "entry 5"
    assert "entries are missing" in report.problems[0].message


def test_verify_checks_keys_against_the_pki(chain: EmbeddedLedger, pki_dir: Path, tmp_path: Path) -> None:
    fill(chain, pki_dir, 1)
    pki.issue_node(pki_dir, "worker1", force=True)  # worker1 got a new ledger key since
    report = verify_ledger(tmp_path, pki_dir)
    assert any("worker1's registered key differs" in p.message for p in report.problems)


def test_missing_ledger_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="no ledger database here"):
        verify_ledger(tmp_path)


def test_two_processes_appending_at_once_keep_one_unbroken_chain(pki_dir: Path, tmp_path: Path) -> None:
    """The chief's federation process and its ledger service both append: BEGIN IMMEDIATE serialises them."""
    script = textwrap.dedent(
        """
        import hashlib, sys
        from pathlib import Path
        from edgefed import pki
        from edgefed.contracts.events import TransferEvent
        from edgefed.ledger.chain import EmbeddedLedger
        from edgefed.ledger.backends import pki_key_lookup
        from edgefed.ledger.records import TransferRecord
        pki_dir, path, worker = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
        chief_key = pki.NodeCredentials(pki_dir, "chief").ledger_signing_key()
        own_key = pki.NodeCredentials(pki_dir, worker).ledger_signing_key()
        ledger = EmbeddedLedger(path, "chief", chief_key, pki_key_lookup(pki_dir))
        for i in range(150):
            digest = hashlib.sha256(f"{worker}{i}".encode()).hexdigest()
            event = TransferEvent(i, "chief", worker, worker, "receive", 3, 10, digest, 0.0, "weights", 1.0 + i)
            result = ledger.append([TransferRecord.from_event(event, "edgefed").signed(own_key)], pushed_by=worker)
            assert result.accepted, result.refused
        """
    )
    path = tmp_path / "ledger.sqlite"
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(pki_dir), str(path), worker], cwd=REPO)
        for worker in ("worker1", "worker2")
    ]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    report = verify_ledger(path)
    # Only one-sided receive records here: the chain itself must be intact and complete.
    assert report.records == 300
    assert all("no matching send record" in p.message for p in report.problems)
    heights = [row[0] for row in sqlite3.connect(path).execute("SELECT height FROM entries ORDER BY height")]
    assert heights == list(range(1, len(heights) + 1))
    kinds = json.dumps(sorted(row[0] for row in sqlite3.connect(path).execute("SELECT DISTINCT kind FROM entries")))
    assert kinds == '["key", "record"]'
