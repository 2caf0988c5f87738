"""Join timing with real chief and worker processes on 127.0.0.1 (issue 16).

A fleet's workers join in whatever order their installs finish: the chief waits for the expected ones
(federation.expected_workers), each trains its own fixed shard whatever the order, and a worker that
joins after others have left still gets a shard that exists.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Processes, free_port, wait_for

EXPECTED = ["worker1", "worker2", "worker3"]


def _status(tmp_path: Path, name: str, component: str) -> dict[str, object]:
    path = tmp_path / "state" / name / "status" / f"{component}.json"
    try:
        loaded: dict[str, object] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or being replaced
        return {}
    return loaded


def _participants(tmp_path: Path) -> list[str]:
    participants = _status(tmp_path, "chief", "chief").get("participants")
    return participants if isinstance(participants, list) else []


@pytest.mark.parametrize("order", list(itertools.permutations(EXPECTED)), ids="-".join)
def test_every_join_order_trains_every_round_with_fixed_shards(
    order: tuple[str, ...], processes: Processes, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    port, rounds = free_port(), 2
    # min_workers=1 would start at the first join; the expected list makes the chief wait for all three.
    settings = {"rounds": rounds, "min_workers": 1, "wait_time": 300.0}
    chief = processes.edgefed(
        "chief", "--config", str(write_config("chief", "chief", port, expected_workers=EXPECTED, **settings)),
        "--exit-when-done", "--progress-jsonl", log_name="chief", stdout=subprocess.PIPE,
    )
    workers = {}
    for joined, name in enumerate(order, start=1):
        workers[name] = processes.edgefed(
            "worker", "--config", str(write_config(name, "worker", port, **settings)), "--exit-when-done",
            log_name=name,
        )
        # The chief's log keeps the join; its participants do not stay (after the last join the two rounds
        # can end, and the workers leave, between two polls on a loaded machine).
        wait_for(lambda n=name: f"{n} joined (task index" in processes.log("chief"), 120,
                 f"{name} to join (order {order})")
        assert _status(tmp_path, "chief", "chief").get("state") == "waiting" or joined == len(order)

    out, _ = chief.communicate(timeout=120)
    assert chief.returncode == 0, processes.log("chief")
    reports = [json.loads(line) for line in out.decode().splitlines()]
    rounds_seen = [r for r in reports if "round" in r]
    assert [r["round"] for r in rounds_seen] == list(range(1, rounds + 1))
    for report in rounds_seen:
        assert sorted(report["participants"]) == ["chief", *EXPECTED]
    for index, name in enumerate(EXPECTED, start=1):
        assert workers[name].wait(timeout=60) == 0, processes.log(name)
        status = _status(tmp_path, name, "worker")
        assert status["task_index"] == index  # its place in expected_workers, not in the join order
        assert status["state"] == "finished" and status["round"] == rounds
        assert "Traceback" not in processes.log(name)


@pytest.mark.parametrize("first", ["worker1", "worker2"])
def test_a_worker_joining_after_the_others_left_gets_a_valid_shard(
    first: str, processes: Processes, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """The crash of issue 16: min_workers=1, one worker trains every round and leaves, the other joins
    the finished federation as task 2 while it is the only one connected."""
    port = free_port()
    settings = {"rounds": 2, "min_workers": 1, "wait_time": 30.0}
    chief = processes.edgefed("chief", "--config", str(write_config("chief", "chief", port, **settings)),
                              log_name="chief")
    second = "worker2" if first == "worker1" else "worker1"
    early = processes.edgefed("worker", "--config", str(write_config(first, "worker", port, **settings)),
                              "--exit-when-done", log_name=first)
    assert early.wait(timeout=60) == 0, processes.log(first)
    wait_for(lambda: _participants(tmp_path) == [], 120, f"{first} to leave the chief")

    late = processes.edgefed("worker", "--config", str(write_config(second, "worker", port, **settings)),
                             "--exit-when-done", log_name=second)
    assert late.wait(timeout=60) == 0, processes.log(second)
    assert "Traceback" not in processes.log(second)
    status = _status(tmp_path, second, "worker")
    assert status["task_index"] == 2 and status["state"] == "finished"
    assert chief.poll() is None, processes.log("chief")  # it keeps serving after the last round
