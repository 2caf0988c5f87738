"""A refused update is on the record: real node processes, real ledger services, real mutual TLS.

worker2 attacks (each update scaled x100 away from the global model); the chief screens outliers
(federation.screen_factor), refuses them with the code `outlier`, and the refusal ends up as a signed
record of kind `refusal` on the chief's embedded ledger, in `edgefed ledger show` and in the chief's
status file.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from edgefed.contracts.status import status_path
from edgefed.ledger.chain import ledger_path
from edgefed.ledger.outbox import Outbox, outbox_path
from edgefed.ledger.records import TransferRecord
from edgefed.ledger.verify import verify_ledger
from tests.conftest import REPO, Processes, free_port, wait_for


def edgefed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefed", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False)


def records(path: Path) -> list[TransferRecord]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT payload FROM entries WHERE kind = 'record'").fetchall()
    return [TransferRecord.from_dict(json.loads(payload)) for (payload,) in rows]


def waiting(state_dir: Path) -> int:
    outbox = Outbox(outbox_path(state_dir))
    try:
        return outbox.backlog()
    finally:
        outbox.close()


def test_an_outlier_update_is_refused_signed_on_the_ledger_and_shown(
    processes: Processes, write_config: Any, tmp_path: Path
) -> None:
    port = free_port()
    settings = {"rounds": 4, "interval_steps": 5, "min_workers": 2, "wait_time": 60.0, "screen_factor": 3.0}
    configs = {
        name: write_config(name, role, port, **settings)
        for name, role in (("chief", "chief"), ("worker1", "worker"), ("worker2", "worker"))
    }
    state = {name: tmp_path / "state" / name for name in configs}
    services = {
        name: processes.edgefed("ledger", "serve", "--config", str(path), log_name=f"{name}-ledger")
        for name, path in configs.items()
    }
    chief = processes.edgefed("chief", "--config", str(configs["chief"]), log_name="chief")
    honest = processes.edgefed("worker", "--config", str(configs["worker1"]), "--exit-when-done", log_name="worker1")
    attacker = processes.edgefed("worker", "--config", str(configs["worker2"]), "--attack", "scale",
                                 "--exit-when-done", log_name="worker2")
    assert honest.wait(timeout=180) == 0, processes.log("worker1")
    assert attacker.wait(timeout=60) == 0, processes.log("worker2")
    ledger = ledger_path(state["chief"])

    def refusal_on_ledger() -> bool:
        return (ledger.exists() and all(waiting(state[name]) == 0 for name in configs)
                and any(record.kind == "refusal" for record in records(ledger)))

    wait_for(refusal_on_ledger, 60, "every outbox to drain and a refusal record to reach the ledger")
    for name in configs:
        services[name].send_signal(signal.SIGTERM)
        assert services[name].wait(timeout=60) == 0, processes.log(f"{name}-ledger")
    chief.send_signal(signal.SIGTERM)
    assert chief.wait(timeout=60) == 0, processes.log("chief")

    refusals = [record for record in records(ledger) if record.kind == "refusal"]
    assert refusals and all(
        (r.sender, r.receiver, r.observer, r.code) == ("worker2", "chief", "chief", "outlier") for r in refusals
    ), refusals
    assert all("from the global model" in (r.reason or "") for r in refusals)
    report = verify_ledger(ledger, tmp_path / "pki")
    assert report.ok, report.problems
    verify = edgefed("ledger", "verify", str(state["chief"]), "--pki", str(tmp_path / "pki"))
    assert verify.returncode == 0, verify.stderr + verify.stdout

    show = edgefed("ledger", "show", str(state["chief"]), "--kind", "refusal")
    assert show.returncode == 0, show.stderr
    lines = [line for line in show.stdout.splitlines() if "refused by chief" in line]
    assert len(lines) == len(refusals), show.stdout
    assert all("worker2" in line and "outlier: update is" in line for line in lines), show.stdout

    status = json.loads(status_path(state["chief"], "chief").read_text())
    assert status["refused_total"] >= len(refusals)
    updates = [entry for entry in status["refused"] if entry["stage"] == "update"]
    assert updates and {(entry["worker"], entry["code"]) for entry in updates} == {("worker2", "outlier")}
    assert {entry["round"] for entry in updates} <= {r.round for r in refusals}
