"""The model on the Pi (issue 16): the exported .tflite travels to a real worker process over the
federation connection, and `edgefed predict` in the Pi inference environment runs the copy it kept."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tfhelpers import MAIN_PYTHON

from edgefed.config import NodeConfig
from edgefed.federation.model_push import model_frames
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.wiring import build_chief
from tests.conftest import Processes, free_port, wait_for


def test_worker_predicts_with_the_model_it_received(
    exported, lite_python: Path, processes: Processes, make_config: Callable[..., NodeConfig],
    write_config: Callable[..., Path], tmp_path: Path,
) -> None:
    _, result = exported
    port = free_port()
    chief = build_chief(make_config("chief", "chief", port, rounds=1, wait_time=300.0,
                                   expected_workers=["worker1"]), ledger=False)
    chief.listen()
    worker = processes.edgefed(
        "worker", "--config", str(write_config("worker1", "worker", port, rounds=1, push_model=True)),
        "--exit-when-done", log_name="worker1",
    )
    try:
        weights = SoftmaxTrainer().get_weights()
        chief.start(weights)
        final = chief.average(weights, 100)
        wait_for(lambda: chief.participants() == ["worker1"], 120, "worker1 to be connected")
        chief.push_to_workers(model_frames(result.float_path.read_bytes(), final.round))
        assert worker.wait(timeout=60) == 0, processes.log("worker1")
    finally:
        chief.close()

    state = tmp_path / "state" / "worker1"
    inputs = str(result.directory / "x_test.npy")
    on_pi = subprocess.run([str(lite_python.parent / "edgefed"), "predict", "--state-dir", str(state),
                            "--input", inputs, "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert on_pi.returncode == 0, on_pi.stderr
    original = subprocess.run([str(MAIN_PYTHON.parent / "edgefed"), "predict", "--model", str(result.float_path),
                               "--input", inputs, "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert original.returncode == 0, original.stderr
    got, want = json.loads(on_pi.stdout), json.loads(original.stdout)
    assert got["interpreter"]["name"] == "tflite_runtime"
    assert got["predictions"] == want["predictions"]
