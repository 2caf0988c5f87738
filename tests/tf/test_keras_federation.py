"""FederatedCallback for real: a chief and two workers, each its own process with its own TensorFlow,
averaging over mutual TLS on 127.0.0.1 while model.fit trains on their digits shards."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tfhelpers import ROOT, tf_subprocess_env

from edgefed.demo import free_port, prepare_pki, write_node_config
from edgefed.ledger.outbox import Outbox

pytestmark = pytest.mark.slow

NODE_SCRIPT = Path(__file__).with_name("keras_node.py")
ROUNDS = 15
INTERVAL_STEPS = 20
WORKERS = ["worker1", "worker2"]


def _run_nodes(tmp_path: Path, commands: dict[str, list[str]], timeout: float = 420) -> None:
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in commands}  # noqa: SIM115
    processes = {
        name: subprocess.Popen(command, stdout=logs[name], stderr=subprocess.STDOUT, env=tf_subprocess_env(),
                               cwd=ROOT)
        for name, command in commands.items()
    }
    try:
        codes = {name: process.wait(timeout=timeout) for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for handle in logs.values():
            handle.close()
    failed = {name: code for name, code in codes.items() if code != 0}
    assert not failed, {name: (tmp_path / f"{name}.log").read_text()[-3000:] for name in failed}


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keras-federation")
    prepare_pki(root / "pki", ["chief", *WORKERS])
    port = free_port()
    extra = {"trainer": {"learning_rate": 0.5, "batch_size": 32, "seed": 1}}
    configs = {"chief": write_node_config(root, "chief", "chief", port, ROUNDS, len(WORKERS), INTERVAL_STEPS,
                                          "keras", extra)}
    for name in WORKERS:
        configs[name] = write_node_config(root, name, "worker", port, ROUNDS, len(WORKERS), INTERVAL_STEPS,
                                          "keras", extra)
    commands = {
        name: [sys.executable, str(NODE_SCRIPT), str(config), str(root / name / "out")]
        + ([str(root / "chief" / "model")] if name == "chief" else [])
        for name, config in configs.items()
    }
    _run_nodes(root, commands)
    return root


def _result(root: Path, name: str) -> dict:
    return json.loads((root / name / "out" / "result.json").read_text())


def _weights(root: Path, name: str) -> list[np.ndarray]:
    with np.load(root / name / "out" / "weights.npz") as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def test_every_node_trains_its_own_shard_to_the_last_round(federation: Path) -> None:
    results = {name: _result(federation, name) for name in ["chief", *WORKERS]}
    assert sorted(r["task_index"] for r in results.values()) == [0, 1, 2]
    assert results["chief"]["task_index"] == 0
    assert {r["total"] for r in results.values()} == {3}
    assert sum(r["shard"] for r in results.values()) == 1438  # the whole training split, disjoint shards
    for result in results.values():
        assert result["finished"] and result["round"] == ROUNDS
        assert result["steps"] == ROUNDS * INTERVAL_STEPS
        assert [h["round"] for h in result["history"]] == list(range(1, ROUNDS + 1))


def test_chief_averages_every_participant(federation: Path) -> None:
    history = _result(federation, "chief")["history"]
    for record in history:
        assert sorted(record["participants"]) == ["chief", *WORKERS]


def test_federated_model_reaches_accuracy(federation: Path) -> None:
    accuracy = _result(federation, "chief")["accuracy"]
    assert accuracy >= 0.90, accuracy


def test_workers_end_with_the_chiefs_weights(federation: Path) -> None:
    chief = _weights(federation, "chief")
    for name in WORKERS:
        worker = _weights(federation, name)
        assert len(worker) == len(chief)
        for mine, theirs in zip(worker, chief, strict=True):
            np.testing.assert_array_equal(mine, theirs)


def test_chief_exports_the_final_average(federation: Path) -> None:
    manifest_path = Path(_result(federation, "chief")["exported"])
    manifest = json.loads(manifest_path.read_text())
    assert manifest["round"] == ROUNDS
    assert manifest["node"] == "chief"
    assert manifest["accuracy"] == pytest.approx(_result(federation, "chief")["accuracy"], abs=1e-6)
    for entry in manifest["files"].values():
        assert (manifest_path.parent / entry["file"]).stat().st_size == entry["bytes"]


def test_transfers_are_recorded_in_each_nodes_ledger_outbox(federation: Path) -> None:
    # Each node signs a record per send and per receive: a worker sends ROUNDS updates and receives the
    # starting weights plus ROUNDS averages (no ledger service runs here, so nothing is relayed yet).
    for name in WORKERS:
        outbox = Outbox.for_state_dir(federation / name)
        try:
            assert outbox.backlog() == 2 * ROUNDS + 1
        finally:
            outbox.close()
