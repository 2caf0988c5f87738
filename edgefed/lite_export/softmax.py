"""Export the numpy softmax trainer's model for the edge: `model.tflite` and `manifest.json`, no TensorFlow.

The same directory layout and manifest form as the Keras export (edgefed/tf/export.py), so `edgefed
predict`, `edgefed-predict --serve` and federation.push_model treat both alike. The file takes the raw
feature values the data set holds (the trainer's [0, 1] scaling is folded into the weights), flattened:
input [batch, features]. The manifest's `accuracy` is the trainer's own on the test split; the chief
has no interpreter to run the file with, so the file's entry carries none.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np

from edgefed import __version__
from edgefed.fsutil import atomic_write_bytes, atomic_write_json
from edgefed.lite_export.writer import dense_softmax_tflite
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.wire.digest import weights_digest

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"  # the names and version of edgefed/tf/export.py (not imported: TensorFlow)
MANIFEST_VERSION = 1
FLOAT_NAME = "model.tflite"


@dataclass(frozen=True)
class ExportedSoftmax:
    directory: Path
    manifest: dict[str, Any]

    @property
    def float_path(self) -> Path:
        return self.directory / FLOAT_NAME

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST_NAME


def export_softmax(
    trainer: SoftmaxTrainer, directory: str | os.PathLike[str], *, round_number: int, node: str = ""
) -> ExportedSoftmax:
    """Write model.tflite, then manifest.json, atomically into `directory`; return what was written."""
    target = Path(directory)
    kernel, bias = trainer.get_weights()
    model_sha256, model_bytes = weights_digest([kernel, bias])  # the digest the federation gives these weights
    data = dense_softmax_tflite(kernel * np.float32(trainer.input_scale), bias)
    _, accuracy = trainer.evaluate()
    manifest: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "round": round_number,
        "model_sha256": model_sha256,
        "model_bytes": model_bytes,
        "accuracy": round(accuracy, 6),
        "test_samples": len(trainer.data.y_test),
        "input": {"shape": [int(kernel.shape[0])], "dtype": "float32", "batch_dimension": True},
        "labels": list(trainer.data.labels),
        "files": {"tflite": {"file": FLOAT_NAME, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                             "quantization": "none (float32)"}},
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "producer": {"edgefed": __version__, "flatbuffers": str(getattr(flatbuffers, "__version__", "unknown"))},
        "trainer": "numpy",
        "dataset": trainer.data.name,
    }
    if node:
        manifest["node"] = node
    atomic_write_bytes(target / FLOAT_NAME, data)
    atomic_write_json(target / MANIFEST_NAME, manifest)
    log.info("exported round %d model to %s (%d B, without TensorFlow)", round_number, target, len(data))
    return ExportedSoftmax(directory=target, manifest=manifest)
