"""federation.compression end to end: a chief and workers as real processes over mutual TLS on
loopback, each compressed setting matching FedAvg over the same compressed deltas computed in one
process (so the wiring, not just the maths, is what is checked), and within 1 accuracy point of `none`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgefed.compression import NONE, Compressor, add_into, parse_compression
from edgefed.config import NodeConfig
from edgefed.contracts.schemas import HISTORY_LINE, STATUS_FILE, load_schema
from edgefed.contracts.status import status_path
from edgefed.federation.checkpoint import load_checkpoint
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.wire import MessageType, encode_tensor_frame, specs_of
from tests.conftest import Processes, free_port

jsonschema = pytest.importorskip("jsonschema")

ROUNDS, STEPS, WORKERS = 10, 10, 2


def reference(compression: str, total: int = WORKERS + 1) -> list[np.ndarray]:
    """What the federation computes, in one process: the chief (task 0) contributes its trained
    weights, each worker its compressed delta from the round's global weights, error feedback kept."""
    setting = parse_compression(compression)
    trainers = [SoftmaxTrainer() for _ in range(total)]
    for index, trainer in enumerate(trainers):
        trainer.use_shard(index, total)
    compressors = [Compressor(setting) for _ in trainers]
    global_weights = SoftmaxTrainer().get_weights()
    for _ in range(ROUNDS):
        sums = [np.zeros(w.shape, np.float64) for w in global_weights]
        samples = 0
        for index, (trainer, compressor) in enumerate(zip(trainers, compressors, strict=True)):
            trainer.set_weights(global_weights)
            trainer.train_steps(STEPS)
            trained, count = trainer.get_weights(), trainer.num_samples
            samples += count
            if index == 0 or setting == NONE:  # the chief, and every node under `none`: whole weights
                for total_, weights in zip(sums, trained, strict=True):
                    total_ += count * weights.astype(np.float64)
                continue
            compressor.rebase(global_weights)  # as the worker does when the global weights arrive
            for total_, base, tensor in zip(sums, global_weights, compressor.compress_trained(trained), strict=True):
                total_ += count * base.astype(np.float64)
                add_into(total_, tensor, float(count))
        global_weights = [(s / samples).astype(np.float32) for s in sums]
    return global_weights


def accuracy(weights: list[np.ndarray]) -> float:
    trainer = SoftmaxTrainer()
    trainer.set_weights(weights)
    return trainer.evaluate()[1]


def upload_bytes(compression: str) -> int:
    """The frame bytes of one worker's UPDATE under compression (the sizes are fixed per setting)."""
    model = SoftmaxTrainer().get_weights()
    trained = [w + 0.01 for w in model]
    tensors = Compressor(parse_compression(compression)).compress_update(trained, model) \
        if compression != "none" else trained
    return sum(len(p) for p in encode_tensor_frame(MessageType.UPDATE, 0, tensors, 1))


@pytest.mark.parametrize("compression", ["fp16", "int8", "topk:0.1", "topk:0.1+int8"])
def test_each_setting_trains_like_fedavg_over_its_compressed_deltas(
    compression: str, processes: Processes, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    port = free_port()
    settings = {"rounds": ROUNDS, "interval_steps": STEPS, "min_workers": WORKERS, "round_timeout": 60.0,
                "compression": compression}
    chief = processes.edgefed("chief", "--config", str(write_config("chief", "chief", port, **settings)),
                              "--exit-when-done", "--progress-jsonl", log_name="chief", stdout=subprocess.PIPE)
    workers = [processes.edgefed("worker", "--config", str(write_config(f"worker{i}", "worker", port, **settings)),
                                 "--exit-when-done", log_name=f"worker{i}") for i in range(1, WORKERS + 1)]
    out, _ = chief.communicate(timeout=120)
    assert chief.returncode == 0, processes.log("chief")
    for index, worker in enumerate(workers, start=1):
        assert worker.wait(timeout=60) == 0, processes.log(f"worker{index}")

    checkpoint = load_checkpoint(tmp_path / "state" / "chief")
    assert checkpoint is not None and checkpoint.round == ROUNDS and checkpoint.finished
    want = reference(compression)
    for got, expected in zip(checkpoint.weights, want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert abs(accuracy(checkpoint.weights) - accuracy(reference("none"))) <= 0.01

    # the bytes as sent: every round received exactly two compressed uploads, far fewer than float32
    rounds = [json.loads(line) for line in out.decode().splitlines() if '"round"' in line]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert all(r["bytes_received"] == WORKERS * upload_bytes(compression) for r in rounds), rounds
    assert upload_bytes(compression) < upload_bytes("none") * 0.6
    # the chief's status file and history say which compression is in use (and stay in their schemas)
    status = json.loads(status_path(tmp_path / "state" / "chief", "chief").read_text())
    jsonschema.Draft202012Validator(load_schema(STATUS_FILE)).validate(status)
    assert status["compression"] == str(parse_compression(compression))
    history = [json.loads(line) for line in (tmp_path / "state" / "chief" / "history.jsonl").read_text().splitlines()]
    for line in history:
        jsonschema.Draft202012Validator(load_schema(HISTORY_LINE)).validate(line)
    assert {line["compression"] for line in history} == {str(parse_compression(compression))}
    assert all(line["bytes_in"] == WORKERS * upload_bytes(compression) for line in history[1:])


def test_a_worker_with_another_compression_is_refused_for_good(
    make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], processes: Processes, tmp_path: Path
) -> None:
    from edgefed.wiring import build_chief

    port = free_port()
    chief = build_chief(make_config("chief", "chief", port, compression="int8"), ledger=False)
    try:
        chief.listen()
        config = write_config("worker1", "worker", port, compression="fp16", reconnect_timeout=600.0)
        worker = processes.edgefed("worker", "--config", str(config), "--exit-when-done", log_name="worker1")
        assert worker.wait(timeout=60) == 3, processes.log("worker1")  # no retrying for reconnect_timeout
        doc = json.loads(status_path(tmp_path / "state" / "worker1", "worker").read_text())
        jsonschema.Draft202012Validator(load_schema(STATUS_FILE)).validate(doc)
        assert doc["state"] == "error" and doc["compression"] == "fp16"
        reason = "the worker compresses updates as fp16, this federation as int8 (federation.compression)"
        assert reason in doc["errors"][-1]["message"]
        log = processes.log("worker1")
        assert log.count("edgefed: gave up:") == 1 and "Traceback" not in log
        refused = json.loads(chief.status.path.read_text())["refused"]
        assert refused[-1]["worker"] == "worker1" and refused[-1]["code"] == "bad-hello"
        assert reason in refused[-1]["message"] and "worker1" not in chief.participants()
    finally:
        chief.close()


def test_the_upload_specs_are_the_models_under_none() -> None:
    """Under `none` the chief's staging buffers and header check are exactly what they were."""
    from edgefed.compression import upload_specs

    model = specs_of(SoftmaxTrainer().get_weights())
    assert upload_specs(model, NONE) == model
    topk = upload_specs(model, parse_compression("topk:0.1"))
    assert [(s.encoding and s.encoding.label, s.count) for s in topk] == [("topk", 64), ("topk", 1)]


def test_a_compressed_demo_is_proven_on_the_ledger(tmp_path: Path) -> None:
    """`edgefed demo --compression int8 --json` with the ledger: both ends signed the same digest of
    every encoded upload (the bytes as sent), and the summary says the setting, bytes and accuracy."""
    import sys

    from tests.conftest import REPO

    def edgefed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "edgefed", *args], capture_output=True, text=True,
                              timeout=300, cwd=REPO)

    demo = edgefed("demo", "--workers", "2", "--rounds", "3", "--compression", "int8", "--state-dir",
                   str(tmp_path), "--json")
    assert demo.returncode == 0, demo.stderr
    summary = json.loads(demo.stdout)
    assert summary["compression"] == "int8" and summary["rounds"] == 3
    assert summary["bytes_sent"] > 0 and 0 < summary["accuracy"] <= 1
    verify = edgefed("ledger", "verify", str(tmp_path), "--pki", str(tmp_path / "pki"), "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["problems"] == [] and report["records"] == 2 * report["proven_transfers"] > 0
    bad = edgefed("demo", "--workers", "1", "--compression", "int4", "--json")
    assert bad.returncode != 0 and "federation.compression 'int4' is not one of" in bad.stderr
    assert "Traceback" not in bad.stderr
