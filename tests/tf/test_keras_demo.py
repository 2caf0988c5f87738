"""`edgefed demo --trainer keras`: the services' path (Keras trainer + federation driver + ledger), ending
with the chief's export, which the Pi inference environment then runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tfhelpers import MAIN_PYTHON, ROOT, tf_subprocess_env

pytestmark = pytest.mark.slow


def test_keras_demo_trains_exports_and_the_pi_env_predicts(tmp_path: Path, lite_python: Path) -> None:
    state = tmp_path / "demo"
    done = subprocess.run(
        [str(MAIN_PYTHON.parent / "edgefed"), "demo", "--trainer", "keras", "--workers", "2", "--rounds", "4",
         "--state-dir", str(state), "--json"],
        capture_output=True, text=True, timeout=400, env=tf_subprocess_env(), cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rounds"] == 4 and summary["workers"] == 2
    assert summary["accuracy"] >= 0.90

    model_dir = state / "chief" / "model"
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["round"] == 4
    assert manifest["node"] == "chief" and manifest["dataset"] == "digits"
    assert manifest["accuracy"] == pytest.approx(summary["accuracy"], abs=1e-4)

    from edgefed.trainers.data import load_dataset  # sklearn only; the split the nodes used

    data = load_dataset("digits", seed=0)
    inputs = tmp_path / "x_test.npy"
    np.save(inputs, data.x_test)
    on_pi = subprocess.run(
        [str(lite_python), "-m", "edgefed.commands.predict", "--model", str(model_dir / "model_dynamic_range.tflite"),
         "--input", str(inputs), "--json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=True,
    )
    result = json.loads(on_pi.stdout)
    assert result["interpreter"]["name"] == "tflite_runtime"
    accuracy = float(np.mean(np.array(result["predictions"]) == data.y_test))
    assert accuracy == pytest.approx(manifest["files"]["tflite_dynamic_range"]["accuracy"], abs=1e-6)
