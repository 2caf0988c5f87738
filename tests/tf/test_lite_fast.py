"""edgefed.lite without TensorFlow: it imports alone, and bad input gets an error that names the problem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tfhelpers import ROOT

from edgefed.lite import InferenceError, find_backend, load_input, manifest_labels, predict_file


def test_inference_path_imports_without_tensorflow() -> None:
    probe = (
        "import sys, json; import edgefed.lite, edgefed.commands.predict; "
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'cryptography') if m in sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          check=True, cwd=ROOT)
    assert json.loads(done.stdout) == []


def test_cli_and_core_import_without_tensorflow() -> None:
    probe = (
        "import sys; from edgefed.cli import build_parser; build_parser(); "
        "import edgefed.node, edgefed.demo, edgefed.federation.driver, edgefed.tf, edgefed.tf.seed_params; "
        "print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          check=True, cwd=ROOT)
    assert done.stdout.strip() == "False"


def test_missing_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match=r"nothing\.tflite: model file not found"):
        predict_file(tmp_path / "nothing.tflite", tmp_path / "x.npy")


def test_garbage_model_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "garbage.tflite"
    model.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(InferenceError, match=r"garbage\.tflite: not a model"):
        predict_file(model, tmp_path / "x.npy")


def test_pickled_input_is_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "objects.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InferenceError, match=r"objects\.npy: not a readable \.npy array of numbers"):
        load_input(pickled)


def test_unknown_interpreter_is_named() -> None:
    with pytest.raises(InferenceError, match="unknown interpreter 'onnx'"):
        find_backend("onnx")


def test_manifest_for_another_file_is_not_trusted(tmp_path: Path) -> None:
    model = tmp_path / "model.tflite"
    model.write_bytes(b"model bytes")
    (tmp_path / "manifest.json").write_text(json.dumps({
        "labels": ["a", "b"],
        "files": {"tflite": {"file": "model.tflite", "sha256": "0" * 64}},
    }))
    labels, note = manifest_labels(model)
    assert labels is None
    assert "another sha256" in note
