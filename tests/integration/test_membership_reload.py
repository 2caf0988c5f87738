"""A membership reload on a live chief (real processes, mutual TLS on loopback): the playbooks rewrite
federation.expected_workers when a worker leaves the inventory and reload the chief (SIGHUP) instead of
restarting it. The chief stops waiting for the removed worker at once, and no round is lost."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Processes, free_port, wait_for

SETTINGS = {"rounds": 4, "interval_steps": 50, "wait_time": 600.0, "round_timeout": 60.0}


def _status(tmp_path: Path) -> dict[str, object]:
    try:
        loaded: dict[str, object] = json.loads((tmp_path / "state" / "chief" / "status" / "chief.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or being replaced
        return {}
    return loaded


def _rewrite_unseen(path: Path, old: str, new: str) -> None:
    """Replace old by new in place, padded to the same size and with the old mtime: only SIGHUP tells."""
    before = path.stat()
    text = path.read_text()
    assert old in text
    changed = text.replace(old, new) + "#" * (len(old) - len(new) - 1) + "\n"
    assert len(changed) == len(text)
    path.write_text(changed)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_a_chief_whose_expected_set_shrinks_on_sighup_stops_waiting_and_loses_no_round(
    processes: Processes, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    port = free_port()
    config = write_config("chief", "chief", port, expected_workers=["worker1", "worker2", "worker3"], **SETTINGS)
    chief = processes.edgefed("chief", "--config", str(config), "--exit-when-done", "--progress-jsonl",
                              log_name="chief", stdout=subprocess.PIPE)
    workers = [processes.edgefed("worker", "--config", str(write_config(name, "worker", port, **SETTINGS)),
                                 "--exit-when-done", log_name=name) for name in ("worker1", "worker2")]
    for name in ("worker1", "worker2"):
        wait_for(lambda n=name: f"{n} joined (task index" in processes.log("chief"), 120, f"{name} to join")
    assert _status(tmp_path).get("state") == "waiting"  # for worker3, up to wait_time (600 s)

    # worker3 leaves the inventory: the file changes where no stat sees it, so only the SIGHUP reloads it
    listed = re.search(r'expected_workers = \[.*\]', config.read_text())
    assert listed is not None
    _rewrite_unseen(config, listed.group(0), 'expected_workers = ["worker1", "worker2"]')
    chief.send_signal(signal.SIGHUP)
    wait_for(lambda: "expected workers now ['worker1', 'worker2']" in processes.log("chief"), 30,
             "the chief to reload its expected workers")

    out, _ = chief.communicate(timeout=300)  # every round, well before the 600 s wait_time
    assert chief.returncode == 0, processes.log("chief")
    rounds = [report for report in map(json.loads, out.decode().splitlines()) if "round" in report]
    assert [r["round"] for r in rounds] == list(range(1, SETTINGS["rounds"] + 1)), "no round may be lost"
    assert all(sorted(r["participants"]) == ["chief", "worker1", "worker2"] for r in rounds), rounds
    for name, worker in zip(("worker1", "worker2"), workers, strict=True):
        assert worker.wait(timeout=60) == 0, processes.log(name)
    assert "removed ['worker3']" in processes.log("chief")
    assert "Traceback" not in processes.log("chief")
