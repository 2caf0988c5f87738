"""Export the averaged model for the edge: `.keras`, float32 `.tflite`, dynamic-range-quantized `.tflite`,
and `manifest.json` describing them (round, sha256 and size of each file, accuracy, input, labels, and
`model_sha256`: the digest of the weights the files were made from, which the chief's `model` records
on the ledger carry, so that `edgefed ledger provenance` can walk from a file back to round 0).

Every file is written atomically, the manifest last: a reader that finds a manifest finds the files
it describes. The .tflite files are converted so that tflite-runtime 2.14 (what the Pi inference
environment runs) can load them; docs/tflite.md explains the one converter setting that takes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edgefed import __version__
from edgefed.fsutil import atomic_write_bytes, atomic_write_json
from edgefed.lite import TFLiteModel
from edgefed.wire.digest import weights_digest

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
KERAS_NAME = "model.keras"
FLOAT_NAME = "model.tflite"
QUANTIZED_NAME = "model_dynamic_range.tflite"
# TF >= 2.16 quantizes dense layers per channel by default, which needs FULLY_CONNECTED op version 12;
# tflite-runtime 2.14 stops at version 11 ("Didn't find op for builtin opcode 'FULLY_CONNECTED'
# version '12'"). Per-tensor scales keep the quantized file loadable on the Pis.
_PER_TENSOR_DENSE_FLAG = "_experimental_disable_per_channel_quantization_for_dense_layers"


class ExportError(RuntimeError):
    """The model could not be converted or written."""


@dataclass(frozen=True)
class ExportedModel:
    directory: Path
    manifest: dict[str, Any]

    @property
    def keras_path(self) -> Path:
        return self.directory / KERAS_NAME

    @property
    def float_path(self) -> Path:
        return self.directory / FLOAT_NAME

    @property
    def quantized_path(self) -> Path:
        return self.directory / QUANTIZED_NAME

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_NAME


def convert_to_tflite(model: keras.Model, quantize: bool = False) -> bytes:
    """The model as a TFLite flatbuffer: float32, or with dynamic-range (int8 weight) quantization."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not hasattr(converter, _PER_TENSOR_DENSE_FLAG):
            raise ExportError(
                f"this TensorFlow ({tf.__version__}) has no {_PER_TENSOR_DENSE_FLAG}; the quantized model "
                "would not load in tflite-runtime 2.14"
            )
        setattr(converter, _PER_TENSOR_DENSE_FLAG, True)
    # The converter saves a temporary SavedModel and prints its signature on stdout: keep stdout clean
    # for commands that emit JSON.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return bytes(converter.convert())
        except Exception as exc:  # the converter raises a zoo of types; all mean the same to the caller
            raise ExportError(f"TFLite conversion failed: {exc}") from exc


def _file_entry(path: Path, data: bytes, accuracy: float | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "file": path.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
    }
    if accuracy is not None:
        entry["accuracy"] = round(accuracy, 6)
    return entry


def _tflite_accuracy(flatbuffer: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of a converted model on (x, y), with the same interpreter `edgefed predict` would use."""
    return float(np.mean(TFLiteModel.from_bytes(flatbuffer).predict(x) == y))


def _keras_bytes(model: keras.Model, directory: Path) -> bytes:
    # Keras picks the format from the suffix, so save under a temporary *.keras name in the target directory.
    fd, tmp_name = tempfile.mkstemp(prefix=".model.", suffix=".keras", dir=directory)
    os.close(fd)
    try:
        model.save(tmp_name)
        return Path(tmp_name).read_bytes()
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def export_model(
    model: keras.Model,
    directory: str | os.PathLike[str],
    *,
    round_number: int,
    labels: Sequence[str],
    test_data: tuple[np.ndarray, np.ndarray] | None = None,
    extra: dict[str, Any] | None = None,
) -> ExportedModel:
    """Write the three model files and the manifest into `directory`; return what was written.

    With `test_data` the manifest records the accuracy of the Keras model and of each .tflite file.
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    input_shape = [int(d) for d in model.inputs[0].shape[1:]]
    accuracies: dict[str, float | None] = {"keras": None, "float": None, "quantized": None}

    model_sha256, model_bytes = weights_digest([np.asarray(w) for w in model.get_weights()])
    keras_data = _keras_bytes(model, target)
    float_data = convert_to_tflite(model)
    quantized_data = convert_to_tflite(model, quantize=True)
    if test_data is not None:
        x_test, y_test = test_data
        scores = model.predict(x_test, batch_size=256, verbose=0)
        accuracies["keras"] = float(np.mean(np.argmax(scores, axis=1) == y_test))
        accuracies["float"] = _tflite_accuracy(float_data, x_test, y_test)
        accuracies["quantized"] = _tflite_accuracy(quantized_data, x_test, y_test)

    files = {
        "keras": _file_entry(target / KERAS_NAME, keras_data, accuracies["keras"]),
        "tflite": _file_entry(target / FLOAT_NAME, float_data, accuracies["float"]),
        "tflite_dynamic_range": _file_entry(target / QUANTIZED_NAME, quantized_data, accuracies["quantized"]),
    }
    files["tflite"]["quantization"] = "none (float32)"
    files["tflite_dynamic_range"]["quantization"] = "dynamic range (int8 weights, float32 input/output)"
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "round": round_number,
        "model_sha256": model_sha256,  # the federation's digest of these weights (edgefed.wire.digest)
        "model_bytes": model_bytes,
        "accuracy": None if accuracies["keras"] is None else round(accuracies["keras"], 6),
        "test_samples": None if test_data is None else len(test_data[1]),
        "input": {"shape": input_shape, "dtype": "float32", "batch_dimension": True},
        "labels": list(labels),
        "files": files,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "producer": {"edgefed": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }
    if extra:
        manifest.update(extra)

    atomic_write_bytes(target / KERAS_NAME, keras_data)
    atomic_write_bytes(target / FLOAT_NAME, float_data)
    atomic_write_bytes(target / QUANTIZED_NAME, quantized_data)
    atomic_write_json(target / MANIFEST_NAME, manifest)
    log.info("exported round %d model to %s (float %d B, quantized %d B)",
             round_number, target, len(float_data), len(quantized_data))
    return ExportedModel(directory=target, manifest=manifest)
