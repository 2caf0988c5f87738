"""Export of a trained Keras model to .keras + float .tflite + dynamic-range .tflite, and inference on it
with every interpreter: ai_edge_litert and tf.lite in the main environment, tflite-runtime in the real
NumPy<2 environment a Pi inference service gets (.venv-lite)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from tfhelpers import MAIN_PYTHON, ROOT, tf_subprocess_env

from edgefed.lite import TFLiteModel

pytestmark = pytest.mark.slow


def _keras_classes(trainer, x: np.ndarray) -> np.ndarray:
    return np.argmax(trainer.model.predict(x, batch_size=256, verbose=0), axis=1)


def _predict_json(command: list[str], model: Path, inputs: Path) -> dict:
    done = subprocess.run(
        [*command, "--model", str(model), "--input", str(inputs), "--json"],
        capture_output=True, text=True, timeout=120, env=tf_subprocess_env(), cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_float_tflite_agrees_with_keras(exported) -> None:
    trainer, result = exported
    x_test = trainer.dataset.x_test
    keras_classes = _keras_classes(trainer, x_test)
    tflite_classes = TFLiteModel.from_file(result.float_path).predict(x_test)
    agreement = float(np.mean(keras_classes == tflite_classes))
    assert agreement >= 0.99, f"float .tflite agrees with Keras on {agreement:.2%} of {len(x_test)} examples"


def test_quantized_tflite_is_smaller_and_as_accurate(exported) -> None:
    trainer, result = exported
    x_test, y_test = trainer.dataset.x_test, trainer.dataset.y_test
    float_accuracy = float(np.mean(TFLiteModel.from_file(result.float_path).predict(x_test) == y_test))
    quantized = TFLiteModel.from_file(result.quantized_path)
    quantized_accuracy = float(np.mean(quantized.predict(x_test) == y_test))
    assert result.quantized_path.stat().st_size < result.float_path.stat().st_size
    assert abs(float_accuracy - quantized_accuracy) <= 0.02, (float_accuracy, quantized_accuracy)


def test_manifest_describes_the_files(exported) -> None:
    trainer, result = exported
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest == result.manifest
    assert manifest["round"] == 7
    assert manifest["labels"] == [str(d) for d in range(10)]
    assert manifest["input"]["shape"] == [64]
    assert {entry["file"] for entry in manifest["files"].values()} == {
        "model.keras", "model.tflite", "model_dynamic_range.tflite",
    }
    for entry in manifest["files"].values():
        data = (result.directory / entry["file"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
    y_test = trainer.dataset.y_test
    keras_accuracy = float(np.mean(_keras_classes(trainer, trainer.dataset.x_test) == y_test))
    assert manifest["accuracy"] == pytest.approx(keras_accuracy, abs=1e-6)
    assert manifest["test_samples"] == len(y_test)


def test_keras_file_reloads_to_the_same_model(exported) -> None:
    import keras

    trainer, result = exported
    reloaded = keras.models.load_model(result.keras_path)
    x_test = trainer.dataset.x_test
    np.testing.assert_allclose(
        reloaded.predict(x_test, verbose=0), trainer.model.predict(x_test, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_every_main_env_interpreter_gives_the_same_predictions(exported) -> None:
    trainer, result = exported
    x_test = trainer.dataset.x_test
    litert = TFLiteModel.from_file(result.float_path, backend="ai_edge_litert")
    tf_lite = TFLiteModel.from_file(result.float_path, backend="tensorflow")
    assert (litert.backend.name, tf_lite.backend.name) == ("ai_edge_litert", "tensorflow")
    np.testing.assert_array_equal(litert.predict(x_test), tf_lite.predict(x_test))
    # Scoring in chunks (MAX_BATCH) and one example at a time agree with one batch.
    np.testing.assert_allclose(litert.scores(x_test[0]), litert.scores(x_test[:1]))


def test_lite_env_is_what_a_pi_gets(lite_python: Path) -> None:
    probe = (
        "import importlib.util, json, numpy, tflite_runtime; "
        "print(json.dumps({'numpy': numpy.__version__, 'tflite_runtime': tflite_runtime.__version__, "
        "'tensorflow': importlib.util.find_spec('tensorflow') is not None, "
        "'ai_edge_litert': importlib.util.find_spec('ai_edge_litert') is not None}))"
    )
    done = subprocess.run(
        [str(lite_python), "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    facts = json.loads(done.stdout)
    assert int(facts["numpy"].split(".")[0]) < 2
    assert facts["tflite_runtime"] == "2.14.0"
    assert not facts["tensorflow"] and not facts["ai_edge_litert"]


@pytest.mark.parametrize("variant", ["float", "quantized"])
def test_predict_in_lite_env_matches_main_env(exported, lite_python: Path, variant: str) -> None:
    trainer, result = exported
    model = result.float_path if variant == "float" else result.quantized_path
    inputs = result.directory / "x_test.npy"
    # The Pi environment's `edgefed predict` (the CLI loads without cryptography), its short
    # command and its module entry point.
    on_pi = _predict_json([str(lite_python.parent / "edgefed"), "predict"], model, inputs)
    on_pi_short = _predict_json([str(lite_python.parent / "edgefed-predict")], model, inputs)
    on_pi_module = _predict_json([str(lite_python), "-m", "edgefed.commands.predict"], model, inputs)
    # The main environment's `edgefed predict`.
    here = _predict_json([str(MAIN_PYTHON.parent / "edgefed"), "predict"], model, inputs)
    assert on_pi["interpreter"] == {"name": "tflite_runtime", "version": "2.14.0"}
    assert here["interpreter"]["name"] == "ai_edge_litert"
    assert on_pi["predictions"] == on_pi_short["predictions"] == on_pi_module["predictions"] == here["predictions"]
    assert len(on_pi["predictions"]) == len(trainer.dataset.y_test)
    # The manifest beside the model names the classes, checked against the file's sha256.
    assert on_pi["labels"] == [str(c) for c in on_pi["predictions"]]
    assert "sha256 verified" in on_pi["manifest"]


def test_predict_in_lite_env_explains_bad_input(exported, lite_python: Path, tmp_path: Path) -> None:
    _, result = exported
    wrong_shape = tmp_path / "wrong.npy"
    np.save(wrong_shape, np.zeros((3, 65), dtype=np.float32))
    done = subprocess.run(
        [str(lite_python), "-m", "edgefed.commands.predict", "--model", str(result.float_path),
         "--input", str(wrong_shape)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert done.returncode == 2
    assert "input of shape (3, 65) does not match the model's input (N, 64)" in done.stderr
