"""Trust changes on a live federation: real node processes, real ledger services, mutual TLS on loopback.

- a worker revoked mid-training is cut off, refused by name at its next handshake and stops; the
  others finish every round; its records stay on the ledger and `edgefed ledger show --pki` marks them;
- the chief's certificate rotated mid-training serves the next handshakes (a late joiner joins with
  it) while no round is lost, and the ledger verifies.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from edgefed import pki
from edgefed.ledger.chain import ledger_path
from edgefed.ledger.outbox import Outbox, outbox_path
from edgefed.ledger.verify import verify_ledger
from edgefed.transport import client_context, connect_tls
from tests.conftest import REPO, Processes, free_port, wait_for, wait_for_drain

# Rounds long enough (2000 numpy steps each, 12 rounds) that a change lands while training runs.
SETTINGS = {"rounds": 12, "interval_steps": 2000, "wait_time": 60.0, "round_timeout": 60.0}


class Progress:
    """The chief's --progress-jsonl lines, read on a thread as they come."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self.lines.append(json.loads(line))

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if "round" in line]

    def reached(self, round_number: int) -> bool:
        return any(line["round"] >= round_number for line in self.rounds)


def edgefed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefed", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, check=False)


def start(processes: Processes, write_config: Any, names: list[str], port: int, **settings: Any) -> dict[str, Path]:
    configs = {name: write_config(name, "chief" if name == "chief" else "worker", port, **settings) for name in names}
    for name, path in configs.items():
        processes.edgefed("ledger", "serve", "--config", str(path), log_name=f"{name}-ledger")
    return configs


def backlog(state_dir: Path) -> int:
    outbox = Outbox(outbox_path(state_dir))
    try:
        return outbox.backlog()
    finally:
        outbox.close()


def stop_ledgers_and_chief(processes: Processes, chief: subprocess.Popen[bytes], delivering: list[Path]) -> None:
    """Once the delivering nodes' outboxes are empty (the chief keeps serving them after the last round),
    stop the chief and the ledger services."""
    wait_for_drain(lambda: sum(backlog(path) for path in delivering), 60, "the ledger outboxes' drain")
    chief.send_signal(signal.SIGTERM)
    assert chief.wait(timeout=60) == 0, processes.log("chief")
    for process in processes.started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


def test_a_worker_revoked_mid_training_is_refused_and_training_completes(
    processes: Processes, write_config: Any, tmp_path: Path, pki_dir: Path
) -> None:
    port = free_port()
    workers = ["worker1", "worker2", "worker3"]
    configs = start(processes, write_config, ["chief", *workers], port, min_workers=3, **SETTINGS)
    chief = processes.edgefed("chief", "--config", str(configs["chief"]), "--progress-jsonl",
                              log_name="chief", stdout=subprocess.PIPE)
    assert chief.stdout is not None
    progress = Progress(chief.stdout)
    running = {name: processes.edgefed("worker", "--config", str(configs[name]), "--exit-when-done", log_name=name)
               for name in workers}
    wait_for(lambda: progress.reached(1), 240, "round 1 with worker3 in (eight processes start first)")
    assert "worker3" in progress.rounds[-1]["participants"]

    # worker3's certificate is rotated first and it stays connected with the old one: revoking the name
    # (the CRL lists the new serial) must still close its connection and refuse it (the trust lab found
    # a rotated-then-revoked worker training on)
    assert edgefed("pki", "issue", "worker3", "--force", "--pki", str(pki_dir)).returncode == 0
    assert edgefed("pki", "revoke", "worker3", "--pki", str(pki_dir)).returncode == 0
    chief.send_signal(signal.SIGHUP)  # what `systemctl reload` sends; the watcher would find it too
    assert running["worker3"].wait(timeout=60) != 0, "a revoked worker must stop, not keep retrying"
    assert "not-allowed" in processes.log("worker3") and "revoked" in processes.log("worker3")

    for name in ("worker1", "worker2"):
        assert running[name].wait(timeout=180) == 0, processes.log(name)
    stop_ledgers_and_chief(processes, chief, [tmp_path / "state" / name for name in ("chief", "worker1", "worker2")])
    assert "worker3's certificate" in processes.log("chief") and "is revoked" in processes.log("chief")
    rounds = progress.rounds
    assert [r["round"] for r in rounds] == list(range(1, SETTINGS["rounds"] + 1)), "no round may be lost"
    assert "worker3" not in rounds[-1]["participants"]
    assert {"worker1", "worker2"} <= set(rounds[-1]["participants"])

    state = tmp_path / "state" / "chief"
    show = edgefed("ledger", "show", str(state), "--node", "worker3", "--json", "--pki", str(pki_dir))
    assert show.returncode == 0, show.stderr
    shown = [json.loads(line) for line in show.stdout.splitlines()]
    assert shown, "worker3's records from before its revocation stay on the ledger"
    assert all(entry["revoked_identity"] == ["worker3"] for entry in shown)
    table = edgefed("ledger", "show", str(state), "--pki", str(pki_dir))
    assert "worker3 *" in table.stdout and "now-revoked identity: worker3" in table.stdout
    # worker3's records still waiting in its outbox can no longer be delivered: only its transfers may
    # lack their other half; everything else proves out
    report = verify_ledger(ledger_path(state), pki_dir)
    assert all("worker3" in f"{p.where} {p.message}" for p in report.problems), report.problems


def test_the_chief_certificate_rotated_mid_training_loses_no_round(
    processes: Processes, write_config: Any, tmp_path: Path, pki_dir: Path
) -> None:
    port = free_port()
    configs = start(processes, write_config, ["chief", "worker1", "worker2", "worker3"], port, min_workers=2,
                    **SETTINGS)
    chief = processes.edgefed("chief", "--config", str(configs["chief"]), "--progress-jsonl",
                              log_name="chief", stdout=subprocess.PIPE)
    assert chief.stdout is not None
    progress = Progress(chief.stdout)
    running = [processes.edgefed("worker", "--config", str(configs[name]), "--exit-when-done", log_name=name)
               for name in ("worker1", "worker2")]
    wait_for(lambda: progress.reached(1), 240, "round 1 (eight processes start first)")
    old_serial = pki.NodeCredentials(pki_dir, "chief").certificate().serial_number
    pki.issue_node(pki_dir, "chief", ["127.0.0.1", "localhost"], force=True, keep_ledger_key=True)
    new_serial = pki.NodeCredentials(pki_dir, "chief").certificate().serial_number
    context = client_context(pki.NodeCredentials.load(pki_dir, "mallory"))

    def chief_presents_the_new_certificate() -> bool:
        probe = connect_tls("127.0.0.1", port, context)
        try:
            return probe.peer_serial == new_serial
        finally:
            probe.close()

    wait_for(chief_presents_the_new_certificate, 30, "the chief to serve its renewed certificate")
    assert new_serial != old_serial and not progress.reached(SETTINGS["rounds"]), "rotated after training ended"
    late = processes.edgefed("worker", "--config", str(configs["worker3"]), "--exit-when-done", log_name="worker3")
    for index, worker in enumerate([*running, late], start=1):
        assert worker.wait(timeout=180) == 0, processes.log(f"worker{index}")
    stop_ledgers_and_chief(processes, chief, [tmp_path / "state" / name for name in configs])
    rounds = progress.rounds
    assert [r["round"] for r in rounds] == list(range(1, SETTINGS["rounds"] + 1)), "no round may be lost"
    assert all({"worker1", "worker2"} <= set(r["participants"]) for r in rounds), rounds
    # The late joiner's handshake is with the renewed certificate; whether it still gets a round to train
    # depends on how fast the others finish (it may join the finished federation and get the final weights).
    assert "worker3 joined" in processes.log("chief"), "the late joiner joined the chief with the new certificate"
    report = verify_ledger(ledger_path(tmp_path / "state" / "chief"), pki_dir)
    assert report.ok, report.problems
