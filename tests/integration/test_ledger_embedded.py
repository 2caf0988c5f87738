"""The embedded ledger end to end: real node processes, real ledger services, real mutual TLS."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgefed.config import NodeConfig
from edgefed.contracts.events import TransferEvent
from edgefed.contracts.status import status_path
from edgefed.ledger.chain import ledger_path
from edgefed.ledger.hooks import NodeLedgerHooks
from edgefed.ledger.outbox import Outbox, outbox_path
from edgefed.ledger.push import RemoteChainBackend
from edgefed.ledger.records import TransferRecord
from edgefed.ledger.service import LedgerService
from edgefed.ledger.verify import verify_ledger
from edgefed.pki import NodeCredentials
from edgefed.transport import TlsTransport
from edgefed.wiring import build_chief
from tests.conftest import REPO, Processes, free_port, wait_for


def edgefed(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgefed", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def delivered_ids(state_dir: Path) -> set[str]:
    """The ids a node's ledger service saw acknowledged (the outbox remembers them)."""
    with sqlite3.connect(outbox_path(state_dir)) as db:
        return {row[0] for row in db.execute("SELECT id FROM delivered")}


def waiting(state_dir: Path) -> int:
    with sqlite3.connect(outbox_path(state_dir)) as db:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def ledger_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT entry_id FROM entries WHERE kind = 'record'")]


# -- the demo -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    run = edgefed("demo", "--workers", "2", "--rounds", "3", "--state-dir", str(root), "--json")
    assert run.returncode == 0, run.stderr + run.stdout
    return root


def test_demo_ledger_verifies_with_both_records_for_every_transfer(demo_dir: Path) -> None:
    run = edgefed("ledger", "verify", str(demo_dir), "--pki", str(demo_dir / "pki"), "--json")
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["problems"] == []
    assert report["signers"] == ["chief", "worker1", "worker2"]
    assert report["records"] == 2 * report["proven_transfers"] > 0
    # Everything each node emitted reached the ledger, exactly once.
    emitted = set().union(*(delivered_ids(demo_dir / node) for node in ("chief", "worker1", "worker2")))
    on_ledger = ledger_ids(ledger_path(demo_dir / "chief"))
    assert sorted(on_ledger) == sorted(emitted)
    assert all(waiting(demo_dir / node) == 0 for node in ("chief", "worker1", "worker2"))


def test_show_lists_and_filters_the_records(demo_dir: Path) -> None:
    everything = edgefed("ledger", "show", str(demo_dir), "--json")
    assert everything.returncode == 0, everything.stderr
    records = [json.loads(line) for line in everything.stdout.splitlines()]
    assert len(records) == len(ledger_ids(ledger_path(demo_dir / "chief")))
    second_round = edgefed("ledger", "show", str(demo_dir), "--json", "--round", "2", "--node", "worker2")
    subset = [json.loads(line) for line in second_round.stdout.splitlines()]
    assert subset and all(r["round"] == 2 and "worker2" in (r["sender"], r["receiver"]) for r in subset)
    assert len(subset) < len(records)
    table = edgefed("ledger", "show", str(demo_dir), "--round", "1")
    assert "transfer records" in table.stdout and "worker1" in table.stdout


def test_one_changed_byte_in_the_file_is_named_by_verify(demo_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ledger.sqlite"
    with sqlite3.connect(ledger_path(demo_dir / "chief")) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    with sqlite3.connect(copy) as db:
        db.execute("PRAGMA journal_mode=DELETE")
        height, record_id = db.execute(
            "SELECT height, entry_id FROM entries WHERE kind = 'record' ORDER BY height LIMIT 1 OFFSET 5"
        ).fetchone()
    data = bytearray(copy.read_bytes())
    needle = f'"id":"{record_id}"'.encode()
    assert data.count(needle) == 1
    position = data.index(needle) + len(b'"id":"')
    data[position] = ord("0") if data[position] != ord("0") else ord("1")
    copy.write_bytes(bytes(data))

    run = edgefed("ledger", "verify", str(copy))
    assert run.returncode == 1
    assert f"ledger BROKEN: entry {height}:" in run.stderr


# -- the service stopped for part of a run --------------------------------------------------------
def test_records_emitted_while_the_service_was_down_arrive_once_after_restart(
    processes: Processes, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    port = free_port()
    settings = {"rounds": 4, "interval_steps": 5, "min_workers": 2, "wait_time": 60.0}
    configs = {
        name: write_config(name, role, port, **settings)
        for name, role in (("chief", "chief"), ("worker1", "worker"), ("worker2", "worker"))
    }
    state = {name: tmp_path / "state" / name for name in configs}

    def service(name: str) -> subprocess.Popen[bytes]:
        return processes.edgefed("ledger", "serve", "--config", str(configs[name]), log_name=f"{name}-ledger")

    services = {name: service(name) for name in configs}
    chief = processes.edgefed("chief", "--config", str(configs["chief"]), log_name="chief")
    worker1 = processes.edgefed("worker", "--config", str(configs["worker1"]), "--exit-when-done", log_name="worker1")

    def running(name: str) -> bool:
        path = status_path(state[name], "ledger")
        return path.exists() and json.loads(path.read_text()).get("state") in ("running", "waiting")

    wait_for(lambda: running("worker1"), 60, "worker1's ledger service to start")
    services["worker1"].kill()  # abruptly: no drain, whatever it was doing is cut off
    services["worker1"].wait(timeout=10)

    # Training happens only now (the chief waits for two workers), with worker1's service down.
    worker2 = processes.edgefed("worker", "--config", str(configs["worker2"]), "--exit-when-done", log_name="worker2")
    assert worker1.wait(timeout=120) == 0, processes.log("worker1")
    assert worker2.wait(timeout=60) == 0, processes.log("worker2")
    stranded = waiting(state["worker1"])
    assert stranded > 0, "worker1's records should be waiting in its outbox while its service is down"

    services["worker1"] = service("worker1")
    ledger = ledger_path(state["chief"])

    def complete() -> bool:
        return all(waiting(state[name]) == 0 for name in configs) and verify_ledger(ledger).ok

    wait_for(complete, 60, "every outbox to drain into a ledger that verifies")
    for name in ("worker1", "worker2", "chief"):
        services[name].send_signal(signal.SIGTERM)
        assert services[name].wait(timeout=60) == 0, processes.log(f"{name}-ledger")
    chief.send_signal(signal.SIGTERM)
    assert chief.wait(timeout=60) == 0, processes.log("chief")

    report = verify_ledger(ledger, tmp_path / "pki")
    assert report.ok, report.problems
    on_ledger = ledger_ids(ledger)
    emitted = [rid for name in configs for rid in delivered_ids(state[name])]
    assert len(on_ledger) == len(set(on_ledger)) == len(emitted) == len(set(emitted))
    assert set(on_ledger) == set(emitted)
    from_worker1 = [r for r in verify_records(ledger) if r.observer == "worker1"]
    assert len(from_worker1) >= stranded


def verify_records(path: Path) -> list[TransferRecord]:
    with sqlite3.connect(path) as db:
        return [
            TransferRecord.from_dict(json.loads(p))
            for (p,) in db.execute("SELECT payload FROM entries WHERE kind = 'record'")
        ]


# -- refusals over the real federation listener ---------------------------------------------------
@pytest.fixture
def chief_listener(make_config: Callable[..., NodeConfig]) -> Iterator[tuple[NodeConfig, int]]:
    port = free_port()
    config = make_config("chief", "chief", port)
    hooks = NodeLedgerHooks.for_config(config)
    session = build_chief(config, ledger=False, extra_handlers=hooks.extra_handlers)
    session.listen()
    yield config, port
    hooks.close()
    session.close()


def record_of(config: NodeConfig, name: str, round_: int, **changes: object) -> TransferRecord:
    event = TransferEvent(round_, "chief", name, name, "receive", 3, 4096, f"{round_:064x}", 0.01, "weights")
    key = NodeCredentials(Path(config.node.pki_dir), name).ledger_signing_key()
    record = TransferRecord.from_event(event, "edgefed").signed(key)
    if not changes:
        return record
    document = {**record.to_dict(), **changes}
    del document["id"]
    return TransferRecord(**document)


def remote(config: NodeConfig, name: str, port: int) -> RemoteChainBackend:
    return RemoteChainBackend(TlsTransport(NodeCredentials.load(config.node.pki_dir, name)), "127.0.0.1", port)


def test_chief_refuses_bad_signatures_foreign_records_and_unknown_keys(
    chief_listener: tuple[NodeConfig, int], pki_dir: Path
) -> None:
    config, port = chief_listener
    worker1 = remote(config, "worker1", port)
    good = record_of(config, "worker1", 1)
    forged = record_of(config, "worker1", 2, bytes=1)  # signed fields changed after signing
    foreign = record_of(config, "worker2", 3)  # worker2's record, pushed by worker1
    delivery = worker1.deliver([good, forged, foreign])
    assert delivery.acknowledged == [good.id]
    reasons = dict(delivery.refused)
    assert reasons[forged.id] == f"record {forged.id}: bad signature (not worker1's ledger key over these fields)"
    assert reasons[foreign.id] == "worker1 may only deliver its own records, this one is worker2's"
    assert worker1.deliver([good]).acknowledged == [good.id]  # a retry is acknowledged, not appended
    worker1.close()

    (pki_dir / "nodes" / "mallory" / "ledger.pub").unlink()  # the chief has no ledger key for mallory
    mallory = remote(config, "mallory", port)
    unknown = record_of(config, "mallory", 1)
    assert mallory.deliver([unknown]).refused == [
        (unknown.id, "unknown signer 'mallory': no ledger key registered for it")
    ]
    mallory.close()
    ledger = ledger_path(config.node.state_dir)
    assert ledger_ids(ledger) == [good.id]


def test_the_service_keeps_refused_records_and_reports_them(
    chief_listener: tuple[NodeConfig, int], make_config: Callable[..., NodeConfig]
) -> None:
    config, port = chief_listener
    worker_config = make_config("worker1", "worker", port)
    outbox = Outbox.for_state_dir(worker_config.node.state_dir)
    good, forged = record_of(config, "worker1", 1), record_of(config, "worker1", 2, sha256="f" * 64)
    outbox.put(good)
    outbox.put(forged)
    from edgefed.contracts.status import StatusFile

    status = StatusFile(worker_config.node.state_dir, "ledger", "worker1")
    service = LedgerService(outbox, remote(config, "worker1", port), status=status)
    assert service.drain(30) is True
    assert outbox.backlog() == 0
    assert [rid for rid, _ in outbox.refused()] == [forged.id]
    document = json.loads(status.path.read_text())
    assert document["backend"] == "embedded" and document["outbox_backlog"] == 0
    assert document["height"] >= 2 and document["last_delivery_at"] is not None
    assert any(forged.id in error["message"] and "bad signature" in error["message"] for error in document["errors"])
    service.close()


def test_an_unreachable_chief_loses_nothing(make_config: Callable[..., NodeConfig]) -> None:
    port = free_port()  # nobody listens here
    config = make_config("worker1", "worker", port)
    outbox = Outbox.for_state_dir(config.node.state_dir)
    outbox.put(record_of(config, "worker1", 1))
    service = LedgerService(outbox, remote(config, "worker1", port), max_retry_delay=0.2)
    assert service.drain(1.0) is False
    assert service.stats.failures >= 1
    assert outbox.backlog() == 1
    service.close()
