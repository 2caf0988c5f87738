"""The numpy softmax trainer's model as a .tflite file written without TensorFlow (edgefed.lite_export):
real interpreters (ai-edge-litert here, tflite-runtime 2.14 in .venv-lite) give the trainer's own scores."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tfhelpers import ROOT, tf_subprocess_env

from edgefed.lite import TFLiteModel, manifest_labels
from edgefed.lite_export.softmax import export_softmax
from edgefed.lite_export.writer import LiteWriteError, dense_softmax_tflite, tflite_schema
from edgefed.trainers.data import DIGITS, load_dataset
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.wire.digest import weights_digest


def softmax_scores(trainer: SoftmaxTrainer) -> np.ndarray:
    """The trainer's forward pass on its (scaled) test split, as evaluate() computes it."""
    kernel, bias = trainer.get_weights()
    logits = trainer.data.x_test @ kernel + bias
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # -> tuple[SoftmaxTrainer, ExportedSoftmax, Path]
    trainer = SoftmaxTrainer(seed=3)
    trainer.train_steps(200)
    directory = tmp_path_factory.mktemp("softmax-export")
    result = export_softmax(trainer, directory, round_number=4, node="chief")
    raw = load_dataset(DIGITS, 3).x_test  # what the data set holds: the file folds the scaling in
    np.save(directory / "x_test.npy", raw.reshape(len(raw), -1))
    return trainer, result, directory / "x_test.npy"


def test_the_file_scores_as_the_trainer_does(exported) -> None:
    trainer, result, inputs = exported
    model = TFLiteModel.from_file(result.float_path)
    scores = model.scores(np.load(inputs))
    want = softmax_scores(trainer)
    np.testing.assert_allclose(scores, want, atol=1e-5)
    assert np.array_equal(scores.argmax(axis=1), want.argmax(axis=1))
    assert round(float(np.mean(scores.argmax(axis=1) == trainer.data.y_test)), 6) == result.manifest["accuracy"]


def test_the_manifest_describes_the_file(exported) -> None:
    trainer, result, _ = exported
    manifest = json.loads(result.manifest_path.read_text())
    data = result.float_path.read_bytes()
    assert manifest["files"] == {"tflite": {"file": "model.tflite", "bytes": len(data), "quantization":
                                            "none (float32)", "sha256": hashlib.sha256(data).hexdigest()}}
    assert (manifest["model_sha256"], manifest["model_bytes"]) == weights_digest(trainer.get_weights())
    assert manifest["input"] == {"shape": [64], "dtype": "float32", "batch_dimension": True}
    assert (manifest["round"], manifest["node"], manifest["trainer"]) == (4, "chief", "numpy")
    labels, note = manifest_labels(result.float_path)
    assert labels == [str(d) for d in range(10)] and "sha256 verified" in note


def test_the_file_reads_back_with_the_published_schema(exported) -> None:
    """Parsed with LiteRT's own generated schema code: the ops, versions and tensors written, data aligned."""
    from ai_edge_litert import schema_py_generated as schema

    _, result, _ = exported
    data = result.float_path.read_bytes()
    model = schema.Model.GetRootAsModel(data, 0)
    facts = tflite_schema()
    assert schema.Model.ModelBufferHasIdentifier(data, 0) and model.Version() == facts["schema_version"]
    codes = [(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).Version())
             for i in range(model.OperatorCodesLength())]
    assert codes == [(schema.BuiltinOperator.FULLY_CONNECTED, 1), (schema.BuiltinOperator.SOFTMAX, 1)]
    graph = model.Subgraphs(0)
    shapes = {graph.Tensors(i).Name().decode(): graph.Tensors(i).ShapeAsNumpy().tolist()
              for i in range(graph.TensorsLength())}
    assert shapes == {"input": [1, 64], "dense/weights": [10, 64], "dense/bias": [10], "logits": [1, 10],
                      "probabilities": [1, 10]}
    softmax = schema.SoftmaxOptions()
    options = graph.Operators(1).BuiltinOptions()
    softmax.Init(options.Bytes, options.Pos)
    assert softmax.Beta() == 1.0
    for index in (1, 2):  # the constants start on the 16-byte boundary the schema asks for
        buffer = model.Buffers(index)
        start = buffer._tab.Vector(buffer._tab.Offset(4))  # Buffer.data: vtable entry 4 is slot 0
        assert start % facts["buffer_alignment"] == 0 and buffer.DataLength() > 0


def test_tflite_runtime_on_the_pi_gives_the_same_classes(exported, lite_python: Path) -> None:
    trainer, result, inputs = exported
    done = subprocess.run([str(lite_python), "-m", "edgefed.commands.predict", "--model", str(result.float_path),
                           "--input", str(inputs), "--json"], capture_output=True, text=True, timeout=120,
                          check=False, env=tf_subprocess_env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["interpreter"] == {"name": "tflite_runtime", "version": "2.14.0"}
    assert got["predictions"] == softmax_scores(trainer).argmax(axis=1).tolist()
    assert "sha256 verified" in got["manifest"]


@pytest.mark.parametrize(("kernel", "bias", "message"), [
    (np.zeros((64, 10)), np.zeros(10, np.float32), "kernel must be float32, got float64"),
    (np.zeros((64, 10), np.float32), [0.0] * 10, "bias must be a NumPy array, got list"),
    (np.zeros((64, 10), np.float32), np.zeros(9, np.float32), r"kernel \(64, 10\) and bias \(9,\) do not make"),
    (np.zeros(64, np.float32), np.zeros(10, np.float32), r"kernel \(64,\) and bias \(10,\) do not make"),
    (np.zeros((0, 10), np.float32), np.zeros(10, np.float32), r"kernel \(0, 10\)"),
    (np.full((64, 10), np.nan, np.float32), np.zeros(10, np.float32), "hold NaN or Inf"),
    (np.zeros((64, 10), np.float32), np.full(10, np.inf, np.float32), "hold NaN or Inf"),
])
def test_unusable_weights_get_one_line(kernel: object, bias: object, message: str) -> None:
    with pytest.raises(LiteWriteError, match=message) as caught:
        dense_softmax_tflite(kernel, bias)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_the_writer_imports_without_tensorflow() -> None:
    probe = ("import sys; import edgefed.lite_export.softmax, edgefed.node; "
             "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                          check=True, cwd=ROOT)
    assert done.stdout.strip() == "False"


def test_a_numpy_chief_that_must_push_refuses_to_start_without_flatbuffers(tmp_path: Path) -> None:
    probe = (
        "import sys; sys.modules['flatbuffers'] = None  # as if it were not installed\n"
        "from edgefed.config import config_from_dict; from edgefed.node import run_node\n"
        f"node = {{'name': 'chief', 'role': 'chief', 'pki_dir': {str(tmp_path)!r}, 'state_dir': {str(tmp_path)!r}}}\n"
        "try:\n    run_node(config_from_dict({'node': node, 'federation': {'push_model': True}}))\n"
        "except ValueError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                          cwd=ROOT)
    assert done.stdout.startswith("UsageError federation.push_model: the numpy model's .tflite writer cannot load")
    assert not list(tmp_path.iterdir())  # refused before anything was opened or written
