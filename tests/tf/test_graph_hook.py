"""FederatedHook in graph mode (tf.compat.v1, eager disabled, MonitoredSession): a chief and one worker,
each in its own process, built from the seed's constructor parameters, averaging over mutual TLS."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tfhelpers import ROOT, tf_subprocess_env

from edgefed.demo import free_port, prepare_pki

pytestmark = pytest.mark.slow

NODE_SCRIPT = Path(__file__).with_name("graph_node.py")
ROUNDS, INTERVAL_STEPS = 3, 5  # as in graph_node.py


@pytest.fixture(scope="module")
def graph_federation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("graph-federation")
    pki_dir = root / "pki"
    prepare_pki(pki_dir, ["chief", "worker1"])
    port = str(free_port())
    nodes = {"chief": "chief", "worker1": "worker"}
    logs = {name: open(root / f"{name}.log", "w") for name in nodes}  # noqa: SIM115
    processes = {
        name: subprocess.Popen(
            [sys.executable, str(NODE_SCRIPT), role, name, port, str(pki_dir), str(root / name),
             str(root / name / "out")],
            stdout=logs[name], stderr=subprocess.STDOUT, env=tf_subprocess_env(), cwd=ROOT,
        )
        for name, role in nodes.items()
    }
    try:
        codes = {name: process.wait(timeout=300) for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        for handle in logs.values():
            handle.close()
    assert codes == {"chief": 0, "worker1": 0}, {n: (root / f"{n}.log").read_text()[-3000:] for n in nodes}
    return root


def _result(root: Path, name: str) -> dict:
    return json.loads((root / name / "out" / "result.json").read_text())


def _weights(root: Path, name: str) -> list[np.ndarray]:
    with np.load(root / name / "out" / "weights.npz") as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def test_seed_parameters_become_the_configuration(graph_federation: Path) -> None:
    chief, worker = _result(graph_federation, "chief"), _result(graph_federation, "worker1")
    assert chief["config"]["role"] == "chief" and worker["config"]["role"] == "worker"
    assert chief["config"]["min_workers"] == 1  # len(list_of_workers)
    assert chief["config"]["pki_dir"] == str(graph_federation / "pki")  # private_key -> the PKI directory
    assert chief["config"]["ledger_backend"] == "embedded" and chief["config"]["ledger_domain"] == "edgefed"


def test_graph_mode_rounds_average_both_nodes(graph_federation: Path) -> None:
    chief, worker = _result(graph_federation, "chief"), _result(graph_federation, "worker1")
    for result in (chief, worker):
        assert result["executing_eagerly"] is False
        assert result["total"] == 2
        assert result["finished"] and result["round"] == ROUNDS
        assert result["steps"] == ROUNDS * INTERVAL_STEPS  # the extra session.run of a variable is no step
        assert [h["step"] for h in result["history"]] == [INTERVAL_STEPS * r for r in range(1, ROUNDS + 1)]
    assert (chief["task_index"], worker["task_index"]) == (0, 1)
    assert all(sorted(h["participants"]) == ["chief", "worker1"] for h in chief["history"])


def test_worker_starts_from_and_ends_with_the_chiefs_weights(graph_federation: Path) -> None:
    np.testing.assert_array_equal(
        np.load(graph_federation / "worker1" / "out" / "initial_kernel.npy"),
        np.load(graph_federation / "chief" / "out" / "initial_kernel.npy"),
    )
    chief, worker = _weights(graph_federation, "chief"), _weights(graph_federation, "worker1")
    assert [w.shape for w in chief] == [(64, 10), (10,)]
    for mine, theirs in zip(worker, chief, strict=True):
        np.testing.assert_array_equal(mine, theirs)
