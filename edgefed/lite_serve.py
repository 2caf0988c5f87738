"""`edgefed-predict --serve`: answer classification requests with the worker's last good model.

One JSON object per line in (`{"input": [...]}`: one example, or a list of examples), one per line out:
`{"classes": [...], "labels": [...], "probabilities": [[...]], "model": {...}}`, or `{"error": "..."}`
for a request that cannot be answered (the next line is read as usual). Requests are bounded: a line
over MAX_REQUEST_BYTES is refused without being parsed, and so is a batch over lite.MAX_BATCH examples.

It reads standard input and writes standard output, so it opens no socket: the edgefed-infer units
(roles/edgefed_service) let systemd own the Unix socket and start one of these per connection
(socket activation, Accept=yes). Before every request the model file is looked at again; when
model_push has replaced it (a new file, atomically) the new model is loaded, so a long connection
follows the federation too. Like edgefed.commands.predict this imports nothing but edgefed.lite.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import IO, Any

import numpy as np

from edgefed.lite import MAX_BATCH, InferenceError, TFLiteModel, manifest_labels

MAX_REQUEST_BYTES = 1 << 20  # a digits example is ~400 bytes of JSON; a full batch of them fits
INFO_NAME = "federated.json"  # model_push's MODEL_INFO beside the received model (round, sha256)


class ServedModel:
    """The model file, reloaded when it is replaced (another inode, size or mtime)."""

    def __init__(self, path: Path, backend: str | None, num_threads: int | None) -> None:
        self.path = path
        self._backend, self._threads = backend, num_threads
        self._identity: tuple[int, int, int] | None = None
        self.model: TFLiteModel | None = None
        self.labels: list[str] | None = None
        self.info: dict[str, Any] = {}

    def current(self) -> TFLiteModel:
        try:
            stat = self.path.stat()
        except OSError:
            if self.model is not None:
                return self.model  # gone for a moment: the last good one keeps serving
            raise InferenceError(f"{self.path}: no model received from the chief yet") from None
        identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if identity != self._identity or self.model is None:
            self._load(identity)
        assert self.model is not None
        return self.model

    def _load(self, identity: tuple[int, int, int]) -> None:
        try:
            model = TFLiteModel.from_file(self.path, backend=self._backend, num_threads=self._threads)
        except InferenceError:
            if self.model is None:
                raise
            print(f"edgefed-predict: {self.path} could not be loaded; serving the previous model",
                  file=sys.stderr, flush=True)
            self._identity = identity  # not retried until it changes again
            return
        labels, _ = manifest_labels(self.path)
        self.model, self._identity = model, identity
        self.labels = labels if labels is not None and len(labels) == model.num_outputs else None
        self.info = _model_info(self.path)
        print(f"edgefed-predict: serving {self.path} ({model.backend}; round {self.info.get('round', '?')})",
              file=sys.stderr, flush=True)


def _model_info(path: Path) -> dict[str, Any]:
    """Round and sha256 of a received model, from model_push's note beside it (when it is there)."""
    try:
        info = json.loads((path.parent / INFO_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(info, dict):
        return {}
    return {key: info[key] for key in ("round", "sha256") if isinstance(info.get(key), int | str)}


def answer(served: ServedModel, line: bytes) -> dict[str, Any]:
    """One request line -> one response document (an error document for any bad request)."""
    try:
        request = json.loads(line)
    except ValueError as exc:
        return {"error": f"not a JSON document: {exc}"}
    if not isinstance(request, dict) or "input" not in request:
        return {"error": 'expected an object {"input": [...]} (one example, or a list of examples)'}
    try:
        array = np.asarray(request["input"], dtype=np.float64)
    except (ValueError, TypeError):
        return {"error": "input must be a (nested) list of numbers of one shape"}
    if not np.all(np.isfinite(array)):
        return {"error": "input holds NaN or Inf"}
    try:
        model = served.current()
        batch = array if array.shape != model.input_shape else array[np.newaxis]
        if batch.ndim == 0 or not 1 <= len(batch) <= MAX_BATCH:
            return {"error": f"a request carries 1 to {MAX_BATCH} examples"}
        scores = model.scores(batch)
    except InferenceError as exc:
        return {"error": str(exc)}
    classes = [int(c) for c in np.argmax(scores, axis=1)]
    labels = served.labels
    return {
        "classes": classes,
        "labels": [labels[c] if labels else str(c) for c in classes],
        "probabilities": [[_number(v) for v in row] for row in scores.tolist()],
        "model": served.info,
    }


def _number(value: float) -> float | None:
    return round(value, 6) if math.isfinite(value) else None


def _read_line(stream: IO[bytes]) -> tuple[bytes, bool] | None:
    """The next line (without its newline) and whether it fit; None at end of input. An oversized
    line is read to its end in bounded pieces and dropped."""
    line = stream.readline(MAX_REQUEST_BYTES + 1)
    if not line:
        return None
    if len(line) <= MAX_REQUEST_BYTES or line.endswith(b"\n"):
        return line.rstrip(b"\r\n"), True
    while line and not line.endswith(b"\n"):
        line = stream.readline(MAX_REQUEST_BYTES)
    return b"", False


def serve(model_path: Path, backend: str | None = None, num_threads: int | None = None,
          stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> int:
    """Answer every request line of stdin until it ends."""
    source = stdin or sys.stdin.buffer
    sink = stdout or sys.stdout.buffer
    served = ServedModel(model_path, backend, num_threads)
    while (read := _read_line(source)) is not None:
        line, fits = read
        if not line.strip() and fits:
            continue
        response = answer(served, line) if fits else {"error": f"request over {MAX_REQUEST_BYTES} bytes"}
        sink.write(json.dumps(response, separators=(",", ":")).encode() + b"\n")
        sink.flush()
    return 0

