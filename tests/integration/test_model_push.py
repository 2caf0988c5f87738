"""The exported model reaches the workers (issue 16): an in-process chief sends model files over the
federation connection to a real worker process, which checks size and digest and keeps the last good one."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgefed.config import NodeConfig
from edgefed.federation.checkpoint import load_checkpoint
from edgefed.federation.chief import ChiefSession
from edgefed.federation.model_push import CHUNK_BYTES, model_frames
from edgefed.trainers.data import DIGITS, load_dataset
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.wire import FileDone, FileOffer, MessageType, encode_message, encode_raw_frame
from edgefed.wire.digest import weights_digest
from edgefed.wiring import build_chief
from tests.conftest import Processes, free_port, wait_for


def _train_one_round(make_config: Callable[..., NodeConfig], processes: Processes, write_config: Callable[..., Path],
                     port: int, **worker: object) -> tuple[ChiefSession, object]:
    chief = build_chief(make_config("chief", "chief", port, rounds=1, wait_time=300.0,
                                   expected_workers=["worker1"]), ledger=False)
    chief.listen()
    process = processes.edgefed(
        "worker", "--config", str(write_config("worker1", "worker", port, rounds=1, push_model=True, **worker)),
        "--exit-when-done", log_name="worker1",
    )
    weights = SoftmaxTrainer().get_weights()
    chief.start(weights)
    assert chief.average(weights, 100).finished
    return chief, process


def test_worker_keeps_the_model_whose_digest_matches(
    processes: Processes, make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    port = free_port()
    chief, worker = _train_one_round(make_config, processes, write_config, port)
    try:
        good = os.urandom(2 * CHUNK_BYTES + 123)  # three chunks
        forged = bytearray(good)
        forged[CHUNK_BYTES + 5] ^= 0xFF
        # An offer whose bytes do not hash to its sha256: refused, nothing kept; then the good one.
        bad = [encode_message(FileOffer("model.tflite", len(good), hashlib.sha256(good).hexdigest()), 1),
               *encode_raw_frame(MessageType.FILE_CHUNK, 1, bytes(forged)), encode_message(FileDone(), 1)]
        wait_for(lambda: chief.participants() == ["worker1"], 120, "worker1 to be connected")
        assert chief.push_to_workers(bad) > 0
        assert chief.push_to_workers(model_frames(good, 1)) > len(good)
        assert worker.wait(timeout=60) == 0, processes.log("worker1")
    finally:
        chief.close()
    received = tmp_path / "state" / "worker1" / "model"
    assert (received / "federated.tflite").read_bytes() == good
    info = json.loads((received / "federated.json").read_text())
    assert info == {"sha256": hashlib.sha256(good).hexdigest(), "size": len(good), "round": 1, "chief": "chief",
                    "name": "model.tflite"}
    assert "model from chief refused" in processes.log("worker1")
    assert not list(received.glob(".incoming-*"))  # the refused transfer left nothing behind


def test_an_offer_over_the_limit_is_refused_before_its_data(
    processes: Processes, make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], tmp_path: Path
) -> None:
    port = free_port()
    chief, worker = _train_one_round(make_config, processes, write_config, port, max_model_bytes=1000)
    try:
        wait_for(lambda: chief.participants() == ["worker1"], 120, "worker1 to be connected")
        chief.push_to_workers(model_frames(os.urandom(5000), 1))
        assert worker.wait(timeout=60) == 0, processes.log("worker1")  # training was done: a clean exit
    finally:
        chief.close()
    assert "federation.max_model_bytes is 1000" in processes.log("worker1")
    assert not (tmp_path / "state" / "worker1" / "model" / "federated.tflite").exists()


def test_no_model_within_model_wait_ends_the_worker_cleanly(
    processes: Processes, make_config: Callable[..., NodeConfig], write_config: Callable[..., Path]
) -> None:
    port = free_port()
    chief, worker = _train_one_round(make_config, processes, write_config, port, model_wait=0.5)
    try:
        assert worker.wait(timeout=60) == 0, processes.log("worker1")
    finally:
        chief.close()
    assert "no model from the chief within 0.5s" in processes.log("worker1")


def test_a_numpy_chief_pushes_its_model_and_every_worker_predicts_with_it(
    processes: Processes, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """No TensorFlow anywhere: the chief writes the softmax model as .tflite at the end of training and
    sends it; each worker keeps it (digest checked) and `edgefed predict` classifies the test digits."""
    port, settings = free_port(), {"rounds": 6, "interval_steps": 10, "min_workers": 2, "push_model": True}
    chief = processes.edgefed("chief", "--config", str(write_config("chief", "chief", port, **settings)),
                              "--exit-when-done", "--progress-jsonl", log_name="chief", stdout=subprocess.PIPE)
    workers = [processes.edgefed("worker", "--config", str(write_config(name, "worker", port, **settings)),
                                 "--exit-when-done", log_name=name) for name in ("worker1", "worker2")]
    out, _ = chief.communicate(timeout=120)
    assert chief.returncode == 0, processes.log("chief")
    for name, worker in zip(("worker1", "worker2"), workers, strict=True):
        assert worker.wait(timeout=60) == 0, processes.log(name)
    final = [json.loads(line) for line in out.decode().splitlines() if '"round"' in line][-1]
    assert final["finished"] and final["round"] == 6

    exported = tmp_path / "state" / "chief" / "model"
    manifest = json.loads((exported / "manifest.json").read_text())
    sent = (exported / "model.tflite").read_bytes()
    assert manifest["files"]["tflite"]["sha256"] == hashlib.sha256(sent).hexdigest()
    assert manifest["round"] == 6 and manifest["accuracy"] == round(final["accuracy"], 6)
    checkpoint = load_checkpoint(tmp_path / "state" / "chief")  # the final global weights
    assert checkpoint is not None and checkpoint.finished
    assert manifest["model_sha256"] == weights_digest(checkpoint.weights)[0]  # what ledger provenance follows
    digits = load_dataset(DIGITS, 0)
    inputs = tmp_path / "x_test.npy"
    np.save(inputs, digits.x_test.reshape(len(digits.x_test), -1))  # raw pixel values, as the manifest says
    for name in ("worker1", "worker2"):
        kept = tmp_path / "state" / name / "model"
        info = json.loads((kept / "federated.json").read_text())
        assert (kept / "federated.tflite").read_bytes() == sent
        assert (info["sha256"], info["round"], info["chief"]) == (hashlib.sha256(sent).hexdigest(), 6, "chief")
    # the copies are the same bytes: one `edgefed predict` on a worker's own copy (its default model)
    worker_state = tmp_path / "state" / "worker2"
    done = subprocess.run([sys.executable, "-m", "edgefed", "predict", "--state-dir", str(worker_state),
                           "--input", str(inputs), "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    accuracy = float(np.mean(np.array(json.loads(done.stdout)["predictions"]) == digits.y_test))
    assert accuracy > 0.8 and abs(accuracy - final["accuracy"]) < 0.01, (accuracy, final["accuracy"])
