"""p2p file transfers recorded on the ledger: real `edgefed p2p` and `edgefed ledger` processes on 127.0.0.1.

worker1 sends a file to worker2, both with --ledger-config; each node's `edgefed ledger serve` relays its
signed file record to the chief's embedded ledger, which runs (as in test_ledger_embedded.py) as a real
ChiefSession listener with the ledger's LEDGER_PUSH handler, in this process. Certificates are issued by
edgefed.pki in temporary directories (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgefed.cli import main
from edgefed.config import NodeConfig
from edgefed.ledger.chain import ledger_path
from edgefed.ledger.files import file_transfer_record
from edgefed.ledger.hooks import NodeLedgerHooks
from edgefed.ledger.outbox import outbox_path
from edgefed.ledger.push import RemoteChainBackend
from edgefed.ledger.records import TransferRecord
from edgefed.p2p import Receiver, Sender
from edgefed.pki import NodeCredentials
from edgefed.transport import TlsTransport
from edgefed.wiring import build_chief
from tests.conftest import REPO, Processes, free_port, wait_for


def edgefed(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "edgefed", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
    )


def outbox_records(state_dir: Path) -> list[TransferRecord]:
    path = outbox_path(state_dir)
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return [TransferRecord.from_dict(json.loads(text)) for (text,) in db.execute("SELECT record FROM outbox")]


@pytest.fixture
def chief_ledger(make_config: Callable[..., NodeConfig]) -> Iterator[tuple[NodeConfig, int]]:
    """The chief's federation listener with its embedded ledger (what workers' ledger services push to)."""
    port = free_port()
    config = make_config("chief", "chief", port)
    hooks = NodeLedgerHooks.for_config(config)
    session = build_chief(config, ledger=False, extra_handlers=hooks.extra_handlers)
    session.listen()
    yield config, port
    hooks.close()
    session.close()


def test_a_file_sent_with_recording_on_both_sides_is_proven_by_the_ledger(
    chief_ledger: tuple[NodeConfig, int],
    write_config: Callable[..., Path],
    processes: Processes,
    pki_dir: Path,
    tmp_path: Path,
) -> None:
    chief, port = chief_ledger
    configs = {name: write_config(name, "worker", port) for name in ("worker1", "worker2")}
    state = {name: tmp_path / "state" / name for name in configs}
    source = tmp_path / "outgoing" / "results.csv"
    source.parent.mkdir()
    source.write_bytes(os.urandom(1 << 20))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    inbox = tmp_path / "inbox"

    listen = f"127.0.0.1:{free_port()}"
    receiver = processes.edgefed(
        "p2p", "receive", "--listen", listen, "--dir", str(inbox), "--for", "2m", "--no-progress",
        "--ledger-config", str(configs["worker2"]), log_name="receiver",
    )
    sent = edgefed("p2p", "send", source, "--peer", listen, "--no-progress", "--ledger-config", configs["worker1"])
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "received: results.csv" in sent.stdout and "ledger: send record" in sent.stdout

    wait_for(lambda: len(outbox_records(state["worker2"])) == 1, 30, "worker2's file record in its outbox")
    receiver.send_signal(signal.SIGINT)
    assert receiver.wait(timeout=30) == 130, processes.log("receiver")
    assert "ledger: receive record" in processes.log("receiver")
    assert (inbox / "results.csv").read_bytes() == source.read_bytes()

    # Nothing reached the ledger yet: the records wait in each node's outbox for its ledger service.
    (sent_record,), (received_record,) = outbox_records(state["worker1"]), outbox_records(state["worker2"])
    assert (sent_record.direction, received_record.direction) == ("send", "receive")
    for config in configs.values():
        relay = edgefed("ledger", "serve", "--config", config, "--drain", "30", "--nice", "0")
        assert relay.returncode == 0, relay.stdout + relay.stderr
        assert "delivered 1, refused 0, waiting 0" in relay.stdout

    ledger = ledger_path(chief.node.state_dir)
    verified = edgefed("ledger", "verify", ledger.parent, "--pki", pki_dir)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "2 records, 1 transfers proven by both sides; signers: chief, worker1, worker2" in verified.stdout

    shown = edgefed("ledger", "show", ledger, "--kind", "file", "--json")
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    assert sorted(r["id"] for r in records) == sorted([sent_record.id, received_record.id])
    for record in records:
        assert (record["kind"], record["name"], record["bytes"], record["sha256"]) == (
            "file", "results.csv", 1 << 20, digest
        )
        assert (record["sender"], record["receiver"]) == ("worker1", "worker2")
    table = edgefed("ledger", "show", ledger)
    assert "results.csv" in table.stdout and "send (worker1)" in table.stdout and "receive (worker2)" in table.stdout

    # One changed letter in the stored name of the receiver's record: verify names that entry and fails.
    copy = tmp_path / "tampered.sqlite"
    with sqlite3.connect(ledger) as original, sqlite3.connect(copy) as target:
        original.backup(target)
    with sqlite3.connect(copy) as db:
        db.execute("PRAGMA journal_mode=DELETE")
        (height,) = db.execute("SELECT height FROM entries WHERE entry_id = ?", (received_record.id,)).fetchone()
        changed = db.execute(
            "UPDATE entries SET payload = replace(payload, '\"name\":\"results.csv\"', '\"name\":\"results.csx\"')"
            " WHERE height = ?",
            (height,),
        ).rowcount
    assert changed == 1
    broken = edgefed("ledger", "verify", copy, "--json")
    assert broken.returncode == 1
    report = json.loads(broken.stdout)
    assert report["proven_transfers"] == 0
    assert report["problems"][0]["where"] == f"entry {height}"
    assert "does not match its hash" in report["problems"][0]["message"]
    assert any("file 'results.csv' worker1->worker2" in p["message"] and "no matching receive" in p["message"]
               for p in report["problems"])


def test_a_file_record_renamed_after_signing_is_refused_by_the_chief(
    chief_ledger: tuple[NodeConfig, int], pki_dir: Path
) -> None:
    _, port = chief_ledger
    transfer = {
        "sender": "worker1", "receiver": "worker2", "name": "report.pdf", "size": 10, "sha256": "ab" * 32,
        "direction": "send", "resumed_from": 0, "seconds": 0.01, "at": "2026-11-21T06:00:00+00:00",
    }
    key = NodeCredentials(pki_dir, "worker1").ledger_signing_key()
    good = file_transfer_record(transfer, "edgefed", "worker1").signed(key)
    document = {**good.to_dict(), "name": "invoice.pdf"}
    del document["id"]
    renamed = TransferRecord(**document)  # the original signature, another name
    backend = RemoteChainBackend(TlsTransport(NodeCredentials.load(pki_dir, "worker1")), "127.0.0.1", port)
    try:
        delivery = backend.deliver([good, renamed])
    finally:
        backend.close()
    assert delivery.acknowledged == [good.id]
    assert delivery.refused == [
        (renamed.id, f"record {renamed.id}: bad signature (not worker1's ledger key over these fields)")
    ]


def test_a_transfer_whose_result_was_lost_is_recorded_by_both_sides(pki_dir: Path, tmp_path: Path) -> None:
    """The link breaks after the receiver published (and recorded) the file, before the sender heard so.

    The sender's retry is answered "already received": since its own FILE_DONE delivered that file,
    it records the transfer too, so the ledger gets both sides (a lone receive record would not prove it).
    """
    source = tmp_path / "weights.npz"
    source.write_bytes(os.urandom(300_000))
    inbox = tmp_path / "inbox"
    received: list[dict[str, object]] = []
    sent: list[dict[str, object]] = []
    sender: Sender | None = None

    def publish_then_lose_the_link(record: dict[str, object]) -> None:
        received.append(record)
        first.stop()  # the receiver says goodbye and closes the link before its FILE_RESULT goes out
        assert sender is not None
        wait_for(lambda: not sender.connected.is_set(), 30, "the sender to notice the broken link")

    first = Receiver("127.0.0.1", 0, pki_dir=pki_dir, name="worker2", directory=inbox,
                     on_file_transfer=publish_then_lose_the_link)
    sender = Sender("127.0.0.1", first.port, pki_dir=pki_dir, name="worker1", on_file_transfer=sent.append,
                    retry_for=30)
    first.start()
    sender.start()
    second: Receiver | None = None
    try:
        future = sender.send_file(source)
        first.join(30)
        assert not first.is_alive()
        second = Receiver("127.0.0.1", first.port, pki_dir=pki_dir, name="worker2", directory=inbox,
                          on_file_transfer=received.append)
        second.start()
        record = future.result(timeout=60)
    finally:
        sender.stop()
        sender.join(10)
        first.stop()
        if second is not None:
            second.stop()
            second.join(10)
    assert (inbox / "weights.npz").read_bytes() == source.read_bytes()
    assert record["outcome"] == "received"
    assert sent == [record]
    assert len(received) == 1  # the second receiver had nothing to receive
    assert {key: received[0][key] for key in ("name", "size", "sha256")} == {
        key: record[key] for key in ("name", "size", "sha256")
    }


def test_ledger_config_is_checked_against_the_other_options(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config("worker1", "worker", free_port())
    payload = tmp_path / "a.bin"
    payload.write_bytes(b"x")
    common = ["p2p", "send", str(payload), "--peer", "127.0.0.1:9", "--ledger-config", str(config)]
    assert main([*common, "--insecure-plaintext"]) == 2
    assert "--ledger-config cannot be combined with --insecure-plaintext" in capsys.readouterr().err
    assert main([*common, "--name", "worker2"]) == 2
    assert "--name worker2 is not node.name 'worker1'" in capsys.readouterr().err
