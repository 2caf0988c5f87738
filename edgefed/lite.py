"""On-device inference for the exported .tflite models, with the lightest interpreter available.

Order of preference: `tflite_runtime` (a few MB; what the Raspberry Pi inference environment
installs, NumPy < 2), then `ai_edge_litert` (its successor), then `tf.lite` from a full TensorFlow.
Only NumPy is imported at module load, so this works in an environment without TensorFlow; the
interpreter package is imported when a model is loaded. `TFLiteModel.backend` says which one runs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefed.errors import user_error

BACKENDS = ("tflite_runtime", "ai_edge_litert", "tensorflow")
MANIFEST_NAME = "manifest.json"
# Bound the interpreter's tensors when a large input file is scored.
MAX_BATCH = 1024


@user_error
class InferenceError(ValueError):
    """A model or input file is unusable, or no TFLite interpreter is installed; the message says which."""


@dataclass(frozen=True)
class Backend:
    name: str  # one of BACKENDS
    version: str
    make_interpreter: Callable[..., Any]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def _load_backend(name: str) -> Backend:
    """Import one interpreter package; ImportError when it is not installed."""
    if name == "tflite_runtime":
        module = importlib.import_module("tflite_runtime.interpreter")
        version = getattr(importlib.import_module("tflite_runtime"), "__version__", "unknown")
    elif name == "ai_edge_litert":
        module = importlib.import_module("ai_edge_litert.interpreter")
        version = importlib.metadata.version("ai-edge-litert")
    elif name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        module, version = tf.lite, tf.__version__
    else:
        raise InferenceError(f"unknown interpreter {name!r} (choose from {', '.join(BACKENDS)})")
    return Backend(name=name, version=str(version), make_interpreter=module.Interpreter)


def find_backend(preferred: str | None = None) -> Backend:
    """The interpreter to use: `preferred` if given (it must be installed), else the first one found."""
    candidates = BACKENDS if preferred in (None, "auto") else (str(preferred),)
    missing = []
    for name in candidates:
        try:
            return _load_backend(name)
        except ImportError as exc:
            missing.append(f"{name} ({exc})")
    raise InferenceError(
        "no TFLite interpreter could be imported: " + "; ".join(missing)
        + ". Install tflite-runtime (NumPy < 2) or ai-edge-litert (see docs/tflite.md)"
    )


class TFLiteModel:
    """A .tflite classifier: `scores(x)` gives the output rows, `predict(x)` the argmax class indices."""

    def __init__(
        self,
        *,
        model_path: str | None = None,
        model_content: bytes | None = None,
        backend: str | None = None,
        num_threads: int | None = None,
    ) -> None:
        self.backend = find_backend(backend)
        source = model_path or "model bytes"
        try:
            self._interpreter = self.backend.make_interpreter(
                model_path=model_path, model_content=model_content, num_threads=num_threads
            )
            self._interpreter.allocate_tensors()
        except ValueError as exc:  # the interpreters report unreadable models and unknown ops as ValueError
            raise InferenceError(f"{source}: not a model {self.backend} can run: {exc}") from None
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise InferenceError(
                f"{source}: expected one input and one output tensor, found {len(inputs)} and {len(outputs)}"
            )
        self._input, self._output = inputs[0], outputs[0]
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in self._input["shape"][1:])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.num_outputs = int(self._output["shape"][-1])
        self._batch = int(self._input["shape"][0])

    @classmethod
    def from_file(
        cls, path: str | Path, backend: str | None = None, num_threads: int | None = None
    ) -> TFLiteModel:
        file = Path(path)
        if not file.is_file():
            raise InferenceError(f"{file}: model file not found")
        return cls(model_path=str(file), backend=backend, num_threads=num_threads)

    @classmethod
    def from_bytes(cls, data: bytes, backend: str | None = None) -> TFLiteModel:
        return cls(model_content=data, backend=backend)

    def _as_batch(self, x: np.ndarray) -> np.ndarray:
        array = np.asarray(x)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise InferenceError(f"input must be numeric, got dtype {array.dtype}")
        if array.shape == self.input_shape:  # one example without its batch axis
            array = array[np.newaxis]
        if array.shape[1:] != self.input_shape:
            expected = ", ".join(str(d) for d in ("N", *self.input_shape))
            raise InferenceError(
                f"input of shape {array.shape} does not match the model's input ({expected})"
            )
        return np.ascontiguousarray(array, dtype=self.input_dtype)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
            self._interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self._interpreter.set_tensor(self._input["index"], batch)
        self._interpreter.invoke()
        return np.array(self._interpreter.get_tensor(self._output["index"]))  # copy: the buffer is reused

    def scores(self, x: np.ndarray) -> np.ndarray:
        batch = self._as_batch(x)
        if len(batch) == 0:
            return np.empty((0, self.num_outputs), dtype=np.float32)
        return np.concatenate([self._run(batch[i : i + MAX_BATCH]) for i in range(0, len(batch), MAX_BATCH)])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.scores(x), axis=1)


@dataclass(frozen=True)
class Predictions:
    model: Path
    backend: Backend
    classes: list[int]
    labels: list[str] | None  # class names from the model's manifest, when it describes this file
    manifest_note: str  # how the manifest was (or was not) used

    def to_json(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "interpreter": {"name": self.backend.name, "version": self.backend.version},
            "predictions": self.classes,
            "labels": self.labels,
            "manifest": self.manifest_note,
        }


NPY_MAGIC = b"\x93NUMPY"
SAVE_HINT = "save the input with numpy.save(FILE, array) of numbers"


def load_input(path: str | Path) -> np.ndarray:
    file = Path(path)
    try:
        with file.open("rb") as handle:
            if handle.read(len(NPY_MAGIC)) != NPY_MAGIC:  # else NumPy tries pickle and advises allow_pickle
                raise InferenceError(f"{file}: not an .npy file; {SAVE_HINT}")
            handle.seek(0)
            return np.asarray(np.load(handle, allow_pickle=False))
    except InferenceError:
        raise
    except FileNotFoundError:
        raise InferenceError(f"{file}: input file not found") from None
    except IsADirectoryError:
        raise InferenceError(f"{file}: is a directory; give an .npy file") from None
    except ValueError as exc:  # truncated, or an object array (pickles are refused)
        reason = "it holds Python objects" if "pickle" in str(exc) else str(exc)
        raise InferenceError(f"{file}: not a readable .npy array of numbers ({reason}); {SAVE_HINT}") from None
    except OSError as exc:
        raise InferenceError(f"{file}: cannot read it ({exc.strerror or exc})") from None


def manifest_labels(model_path: Path) -> tuple[list[str] | None, str]:
    """Class names from the manifest beside the model, if that manifest lists this exact file (sha256)."""
    manifest_file = model_path.parent / MANIFEST_NAME
    if not manifest_file.is_file():
        return None, "none found"
    try:
        manifest = json.loads(manifest_file.read_text())
        entries = list(manifest["files"].values())
        labels = [str(label) for label in manifest["labels"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{manifest_file} is not an edgefed manifest ({exc!r}); labels not used"
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    for entry in entries:
        if isinstance(entry, dict) and entry.get("file") == model_path.name:
            if entry.get("sha256") != digest:
                return None, f"{manifest_file} lists {model_path.name} with another sha256; labels not used"
            return labels, f"{manifest_file} (sha256 verified)"
    return None, f"{manifest_file} does not list {model_path.name}; labels not used"


def predict_file(
    model: str | Path, input_file: str | Path, backend: str | None = None, num_threads: int | None = None
) -> Predictions:
    """Classify every example of an .npy file with a .tflite model (the `edgefed predict` command)."""
    model_path = Path(model)
    tflite = TFLiteModel.from_file(model_path, backend=backend, num_threads=num_threads)
    classes = [int(c) for c in tflite.predict(load_input(input_file))]
    labels, note = manifest_labels(model_path)
    if labels is not None and len(labels) != tflite.num_outputs:
        note = f"manifest has {len(labels)} labels for {tflite.num_outputs} outputs; labels not used"
        labels = None
    return Predictions(
        model=model_path, backend=tflite.backend, classes=classes,
        labels=None if labels is None else [labels[c] for c in classes], manifest_note=note,
    )


def available_backends(names: Sequence[str] = BACKENDS) -> list[str]:
    """The interpreter packages importable here (imports each one: slow for TensorFlow)."""
    found = []
    for name in names:
        try:
            _load_backend(name)
        except ImportError:
            continue
        found.append(name)
    return found
