"""The federation over real TLS sockets: chief and workers as real processes on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgefed.config import NodeConfig
from edgefed.federation.checkpoint import load_checkpoint
from edgefed.federation.chief import ChiefSession
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.wiring import build_chief
from tests.conftest import Processes, free_port, wait_for

HELPERS = Path(__file__).parent / "helpers"


def reference_fedavg(total: int, rounds: int, interval_steps: int) -> list[np.ndarray]:
    """FedAvg computed in one process: the same trainers, shards and weights as the real run."""
    trainers = [SoftmaxTrainer() for _ in range(total)]
    for index, trainer in enumerate(trainers):
        trainer.use_shard(index, total)
    global_weights = SoftmaxTrainer().get_weights()
    for _ in range(rounds):
        updates = []
        for trainer in trainers:
            trainer.set_weights(global_weights)
            trainer.train_steps(interval_steps)
            updates.append((trainer.get_weights(), trainer.num_samples))
        samples = [count for _, count in updates]
        global_weights = [
            np.average([weights[i] for weights, _ in updates], axis=0, weights=samples).astype(np.float32)
            for i in range(len(global_weights))
        ]
    return global_weights


def test_chief_and_four_workers_match_reference_fedavg(
    processes: Processes, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    port, rounds, steps = free_port(), 4, 7
    settings = {"rounds": rounds, "interval_steps": steps, "min_workers": 4, "round_timeout": 60.0}
    chief = processes.edgefed("chief", "--config", str(write_config("chief", "chief", port, **settings)),
                              "--exit-when-done", "--progress-jsonl", log_name="chief", stdout=subprocess.PIPE)
    workers = [
        processes.edgefed("worker", "--config", str(write_config(f"worker{i}", "worker", port, **settings)),
                          "--exit-when-done", log_name=f"worker{i}")
        for i in range(1, 5)
    ]
    out, _ = chief.communicate(timeout=120)
    assert chief.returncode == 0, processes.log("chief")
    for index, worker in enumerate(workers, start=1):
        assert worker.wait(timeout=60) == 0, processes.log(f"worker{index}")
    reports = [json.loads(line) for line in out.decode().splitlines()]
    rounds_seen = [r for r in reports if "round" in r]
    assert [r["round"] for r in rounds_seen] == [1, 2, 3, 4]
    assert all(sorted(r["participants"]) == ["chief", "worker1", "worker2", "worker3", "worker4"] for r in rounds_seen)
    checkpoint = load_checkpoint(tmp_path / "state" / "chief")
    assert checkpoint is not None and checkpoint.round == rounds and checkpoint.finished
    reference = reference_fedavg(5, rounds, steps)
    for got, want in zip(checkpoint.weights, reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # every worker finished on the chief's final weights
    for index in range(1, 5):
        status = json.loads((tmp_path / "state" / f"worker{index}" / "status" / "worker.json").read_text())
        assert status["state"] == "finished" and status["round"] == rounds


def _start_chief(config: NodeConfig) -> tuple[ChiefSession, list[np.ndarray]]:
    chief = build_chief(config, ledger=False)
    chief.listen()
    return chief, SoftmaxTrainer().get_weights()


def test_worker_killed_mid_upload_round_goes_on_and_worker_rejoins(
    processes: Processes, make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], pki_dir: Path
) -> None:
    port = free_port()
    timeout = 60.0
    # wait_time only bounds the wait for the three joins (the chief starts as soon as they are in): 20 s
    # was shorter than three workers' start-up at load 18, and the chief then began with whoever was in.
    chief, weights = _start_chief(make_config("chief", "chief", port, min_workers=3, rounds=50, round_timeout=timeout,
                                              wait_time=120.0))
    try:
        for name in ("worker1", "worker2"):
            processes.edgefed("worker", "--config", str(write_config(name, "worker", port, rounds=50)), log_name=name)
        doomed = processes.python(str(HELPERS / "partial_upload.py"), str(pki_dir), "worker3", str(port),
                                  log_name="doomed", stdout=subprocess.PIPE)
        info = chief.start(weights)
        assert info.total == 4
        assert doomed.stdout is not None
        assert doomed.stdout.readline().strip() == b"joined"

        assert doomed.stdout.readline().strip() == b"sent-half"
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        result = chief.average(weights, 100)
        assert sorted(result.participants) == ["chief", "worker1", "worker2"]
        status = json.loads(chief.status.path.read_text())
        assert any("worker3 left" in e["message"] for e in status["errors"]), status["errors"]
        assert not any("deadline passed" in e["message"] for e in status["errors"])

        processes.edgefed("worker", "--config", str(write_config("worker3", "worker", port, rounds=50)),
                          log_name="worker3")
        wait_for(lambda: "worker3" in chief.participants(), 30, "worker3 to rejoin")
        rejoined = chief.average(result.weights, 100)
        assert sorted(rejoined.participants) == ["chief", "worker1", "worker2", "worker3"]
    finally:
        chief.close()


def test_chief_restart_resumes_from_checkpoint(
    processes: Processes, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    port, rounds = free_port(), 8
    settings = {"rounds": rounds, "interval_steps": 200, "min_workers": 2, "wait_time": 30.0}
    chief_config = str(write_config("chief", "chief", port, **settings))
    workers = [
        processes.edgefed("worker", "--config", str(write_config(f"worker{i}", "worker", port, **settings)),
                          "--exit-when-done", log_name=f"worker{i}")
        for i in (1, 2)
    ]
    first = processes.edgefed("chief", "--config", chief_config, "--exit-when-done", "--progress-jsonl",
                              log_name="chief", stdout=subprocess.PIPE)
    assert first.stdout is not None
    while json.loads(first.stdout.readline()).get("round") != 2:
        pass
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    checkpoint = load_checkpoint(tmp_path / "state" / "chief")
    assert checkpoint is not None and 2 <= checkpoint.round < rounds

    second = processes.edgefed("chief", "--config", chief_config, "--exit-when-done", "--progress-jsonl",
                               log_name="chief", stdout=subprocess.PIPE)
    out, _ = second.communicate(timeout=120)
    assert second.returncode == 0, processes.log("chief")
    resumed = [json.loads(line)["round"] for line in out.decode().splitlines() if '"round"' in line]
    assert resumed == list(range(checkpoint.round + 1, rounds + 1))
    assert "resuming from checkpoint at round" in processes.log("chief")
    for index, worker in enumerate(workers, start=1):
        assert worker.wait(timeout=60) == 0, processes.log(f"worker{index}")
    final = load_checkpoint(tmp_path / "state" / "chief")
    assert final is not None and final.round == rounds and final.finished


def test_demo_reaches_accuracy(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgefed", "demo", "--workers", "3", "--rounds", "5", "--json",
         "--state-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # --json: stdout holds the JSON document only, the table is on stderr
    assert summary["rounds"] == 5 and summary["workers"] == 3
    assert summary["accuracy"] >= 0.85
    assert summary["bytes_sent"] > 0
    lines = [line for line in result.stderr.strip().splitlines() if not line.endswith("workers joined")]
    assert lines[0].split() == ["round", "participants", "loss", "accuracy", "bytes", "seconds"]
    assert len(lines) == 1 + 5
    for name in ("chief", "worker1", "worker2", "worker3"):
        assert (tmp_path / "demo" / name / "status").is_dir()
    assert (tmp_path / "demo" / "chief" / "checkpoint.efed").is_file()


@pytest.mark.parametrize("workers", [0])
def test_demo_rejects_bad_arguments(workers: int) -> None:
    result = subprocess.run([sys.executable, "-m", "edgefed", "demo", "--workers", str(workers)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--workers must be >= 1, got 0" in result.stderr


def test_start_blocks_until_min_workers_or_wait_time(make_config: Callable[..., NodeConfig]) -> None:
    port = free_port()
    chief, weights = _start_chief(make_config("chief", "chief", port, wait_time=0.2, rounds=1))
    try:
        info = chief.start(weights)
        assert info.total == 1 and info.task_index == 0
        alone = chief.average(weights, 10)
        assert alone.participants == ["chief"] and alone.finished
    finally:
        chief.close()


@pytest.mark.parametrize("dp_epsilon", [0.0, 8.0])
def test_raised_rounds_extend_a_finished_training_unless_dp(
    make_config: Callable[..., NodeConfig], tmp_path: Path, dp_epsilon: float
) -> None:
    """An operator who raises federation.rounds after the training finished gets the extra rounds, numbered
    on from the checkpoint; under differential privacy the chief finishes at once instead."""
    first, weights = _start_chief(make_config("chief", "chief", free_port(), wait_time=0.2, rounds=2))
    try:
        first.start(weights)
        rounds = [first.average(weights, 10) for _ in range(2)]
        assert [r.finished for r in rounds] == [False, True]
    finally:
        first.close()
    state = tmp_path / "state" / "chief"
    done = load_checkpoint(state)
    assert done is not None and done.round == 2 and done.finished

    raised = make_config("chief", "chief", free_port(), wait_time=0.2, rounds=4, dp_epsilon=dp_epsilon)
    second, _ = _start_chief(raised)
    try:
        info = second.start(None)
        assert info.round == 2
        if dp_epsilon:
            assert info.finished
        else:
            assert not info.finished
            extra = [second.average(info.weights, 10) for _ in range(2)]
            assert [(r.round, r.finished) for r in extra] == [(3, False), (4, True)]
    finally:
        second.close()
    final = load_checkpoint(state)
    assert final is not None and final.finished and final.round == (2 if dp_epsilon else 4)


def _demo_summary(*args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-m", "edgefed", "demo", "--rounds", "5", "--json", "--no-ledger", *args],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr
    summary: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return summary


def test_demo_with_an_attacker_shows_fedavg_collapse_and_trimmed_mean_holding() -> None:
    attacked = ("--workers", "5", "--attackers", "1", "--attack", "scale")
    robust = _demo_summary(*attacked, "--aggregation", "trimmed-mean")
    assert robust["attackers"] == 1 and robust["aggregation"] == "trimmed-mean"
    assert isinstance(robust["accuracy"], float) and robust["accuracy"] >= 0.85
    naive = _demo_summary(*attacked, "--aggregation", "fedavg")
    assert isinstance(naive["accuracy"], float) and naive["accuracy"] < 0.5, naive


def test_demo_refuses_more_attackers_than_workers() -> None:
    result = subprocess.run([sys.executable, "-m", "edgefed", "demo", "--workers", "2", "--attackers", "3"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--attackers must be between 0 and --workers (2), got 3" in result.stderr
