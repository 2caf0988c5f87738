"""`edgefed-predict --serve` in the Pi inference environment (issue 16, the edgefed-infer unit): a real
process answering JSON lines with the model a worker received, reloading it when it is replaced."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
from tfhelpers import ROOT

MAX_REQUEST_BYTES = 1 << 20  # edgefed.lite_serve's bound


class Server:
    def __init__(self, lite_python: Path, state_dir: Path) -> None:
        self.process = subprocess.Popen(
            [str(lite_python), "-m", "edgefed.commands.predict", "--serve", "--state-dir", str(state_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def ask(self, line: bytes) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, self.stderr()
        return dict(json.loads(answer))

    def stderr(self) -> str:
        self.process.kill()
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")


def receive(model_dir: Path, source: Path, round_number: int) -> None:
    """What model_push does on the worker: the model replaced atomically (a new file), its note beside it."""
    model_dir.mkdir(parents=True, exist_ok=True)
    incoming = model_dir / ".incoming-test"
    shutil.copyfile(source, incoming)
    os.replace(incoming, model_dir / "federated.tflite")
    (model_dir / "federated.json").write_text(json.dumps({"round": round_number, "sha256": "0" * 64}))


def test_serves_the_received_model_and_follows_its_replacement(exported, lite_python: Path, tmp_path: Path) -> None:
    _, result = exported
    x_test = np.load(result.directory / "x_test.npy")
    state = tmp_path / "state"
    server = Server(lite_python, state)
    try:
        request = json.dumps({"input": x_test[:3].tolist()}).encode()
        assert "no model received from the chief yet" in server.ask(request)["error"]

        receive(state / "model", result.float_path, 4)
        first = server.ask(request)
        assert first["model"]["round"] == 4
        assert len(first["classes"]) == len(first["probabilities"]) == 3
        assert first["classes"] == [int(np.argmax(row)) for row in first["probabilities"]]
        assert first["labels"] == [str(c) for c in first["classes"]]  # no manifest beside a received model
        one = server.ask(json.dumps({"input": x_test[0].tolist()}).encode())  # one example, no batch axis
        assert one["classes"] == first["classes"][:1]

        # Bad requests: one clear error line each, and the server goes on.
        assert "not a JSON document" in server.ask(b"{nope")["error"]
        assert "expected an object" in server.ask(b"[1, 2]")["error"]
        assert "list of numbers" in server.ask(b'{"input": "seven"}')["error"]
        assert "does not match the model's input" in server.ask(b'{"input": [[1, 2, 3]]}')["error"]
        assert "NaN or Inf" in server.ask(b'{"input": [NaN]}')["error"]
        assert f"over {MAX_REQUEST_BYTES} bytes" in server.ask(b"x" * (MAX_REQUEST_BYTES + 10))["error"]
        assert "1 to 1024 examples" in server.ask(json.dumps({"input": [x_test[0].tolist()] * 1025}).encode()
                                                  )["error"]

        receive(state / "model", result.float_path, 9)  # the chief pushed the next model
        again = server.ask(request)
        assert again["model"]["round"] == 9
        assert again["classes"] == first["classes"]
    finally:
        stderr = server.stderr()
    assert "serving" in stderr and "tflite_runtime" in stderr, stderr
    assert "Traceback" not in stderr, stderr
