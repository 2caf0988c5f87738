"""federation.broadcast_compression end to end: a chief and workers as real processes (or a chief in
this process, driven round by round) over mutual TLS on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefed.compression import encode_int8
from edgefed.config import NodeConfig
from edgefed.contracts.events import EventBus, TransferEvent
from edgefed.contracts.schemas import HISTORY_LINE, STATUS_FILE, load_schema
from edgefed.contracts.status import status_path
from edgefed.federation.session import limits_for
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.transport import TransportError
from edgefed.wire import Bye, MessageType, ReasonCode, Welcome, encode_message, encode_tensor_frame
from tests.conftest import Processes, free_port
from tests.integration.test_compression_federation import accuracy, reference

jsonschema = pytest.importorskip("jsonschema")

ROUNDS, STEPS, WORKERS = 10, 10, 2


def records(output: bytes) -> dict[int, dict[str, Any]]:
    """A node's --progress-jsonl lines by round (a round reported twice, after a rejoin: the last)."""
    lines = [json.loads(line) for line in output.decode().splitlines() if line.startswith("{")]
    return {line["round"]: line for line in lines if "round" in line}


Records = dict[int, dict[str, Any]]


def run_federation(setting: str, processes: Processes, write_config: Callable[..., Path]) -> tuple[
        Records, list[Records]]:
    port = free_port()
    settings = {"rounds": ROUNDS, "interval_steps": STEPS, "min_workers": WORKERS, "round_timeout": 60.0,
                "broadcast_compression": setting}
    chief = processes.edgefed("chief", "--config", str(write_config("chief", "chief", port, **settings)),
                              "--exit-when-done", "--progress-jsonl", log_name=f"chief-{setting}",
                              stdout=subprocess.PIPE)
    workers = [processes.edgefed("worker", "--config", str(write_config(f"worker{i}", "worker", port, **settings)),
                                 "--exit-when-done", "--progress-jsonl", log_name=f"worker{i}-{setting}",
                                 stdout=subprocess.PIPE) for i in range(1, WORKERS + 1)]
    out, _ = chief.communicate(timeout=120)
    assert chief.returncode == 0, processes.log(f"chief-{setting}")
    outs = []
    for index, worker in enumerate(workers, start=1):
        worker_out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0, processes.log(f"worker{index}-{setting}")
        outs.append(records(worker_out))
    return records(out), outs


@pytest.mark.parametrize("setting", ["fp16", "int8"])
def test_broadcasts_shrink_and_the_workers_train_on_exactly_the_chiefs_model(
    setting: str, processes: Processes, write_config: Callable[..., Path], tmp_path: Path
) -> None:
    """Against `none`: its float32 WEIGHTS frame, and its final accuracy from the same FedAvg computed
    in one process (tests/integration/test_compression_federation.py checks that the federation under
    `none` computes exactly that)."""
    chief, workers = run_federation(setting, processes, write_config)
    assert sorted(chief) == list(range(1, ROUNDS + 1))
    per_worker = set()
    for worker in workers:
        assert sorted(worker) == list(range(1, ROUNDS + 1))
        for round_number, line in worker.items():
            # every worker evaluates the model it holds on the chief's test set: the same model, the same loss
            assert line["loss"] == pytest.approx(chief[round_number]["loss"], rel=1e-9, abs=1e-12)
            per_worker.add(line["bytes_received"])
    assert len(per_worker) == 1  # every round, every worker: one frame of the same size (no keyframe)
    (received,) = per_worker
    assert all(line["bytes_sent"] == WORKERS * received for line in chief.values())
    none = sum(len(p) for p in encode_tensor_frame(MessageType.WEIGHTS, 1, SoftmaxTrainer().get_weights(), 0))
    # a 650-parameter model: the frame header weighs; docs/benchmarks.md has the large-model ratios
    assert none / received >= (1.9 if setting == "fp16" else 3.5), (none, received)
    assert abs(chief[ROUNDS]["accuracy"] - accuracy(reference("none"))) <= 0.01
    status = json.loads(status_path(tmp_path / "state" / "chief", "chief").read_text())
    jsonschema.Draft202012Validator(load_schema(STATUS_FILE)).validate(status)
    assert status["broadcast_compression"] == setting and status["round_bytes"]["sent"] == WORKERS * received
    history = (tmp_path / "state" / "chief" / "history.jsonl").read_text().splitlines()
    for line in map(json.loads, history):
        jsonschema.Draft202012Validator(load_schema(HISTORY_LINE)).validate(line)
        assert line["broadcast_compression"] == setting
    assert all(json.loads(line)["bytes_out"] == WORKERS * received for line in history[1:])


def sends(bus: EventBus) -> dict[str, list[tuple[int, int]]]:
    """The chief's weight sends as they happen: (round, bytes) per worker, in order."""
    seen: dict[str, list[tuple[int, int]]] = {}
    lock = threading.Lock()

    def sink(event: TransferEvent) -> None:
        if event.kind == "weights" and event.direction == "send":
            with lock:
                seen.setdefault(event.receiver, []).append((event.round, event.bytes))

    bus.subscribe(sink)
    return seen


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_late_joiners_restarted_workers_and_a_restarted_chief_get_keyframes(
    make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], processes: Processes
) -> None:
    """int8 broadcasts (and int8 uploads): a worker that joins late, one killed and started again after
    missing a round, and every worker after the chief restarts from its checkpoint get a float32
    keyframe first and int8 deltas after it; each keeps training on exactly the chief's model."""
    from edgefed.wiring import build_chief

    rounds = 14
    port = free_port()
    settings = {"rounds": rounds, "interval_steps": STEPS, "round_timeout": 60.0, "compression": "int8",
                "broadcast_compression": "int8", "reconnect_max_delay": 1.0}
    model = SoftmaxTrainer().get_weights()
    keyframe = sum(len(p) for p in encode_tensor_frame(MessageType.WEIGHTS, 1, model, 0))
    delta = sum(len(p) for p in encode_tensor_frame(MessageType.WEIGHTS, 1, [encode_int8(w) for w in model], 0))
    worker_config = {name: str(write_config(name, "worker", port, **settings)) for name in ("worker1", "worker2")}
    outputs: dict[str, list[subprocess.Popen[bytes]]] = {"worker1": [], "worker2": []}

    def start_worker(name: str) -> None:
        outputs[name].append(processes.edgefed("worker", "--config", worker_config[name], "--exit-when-done",
                                               "--progress-jsonl", log_name=name, stdout=subprocess.PIPE))

    trainer = SoftmaxTrainer()
    losses: dict[int, float] = {}

    def one_round(chief: Any) -> None:
        trainer.train_steps(STEPS)
        result = chief.average(trainer.get_weights(), trainer.num_samples)
        trainer.set_weights(result.weights)
        losses[result.round] = trainer.evaluate()[0]

    bus = EventBus()
    first = sends(bus)
    chief = build_chief(make_config("chief", "chief", port, min_workers=1, **settings), bus, ledger=False)
    try:
        start_worker("worker1")
        info = chief.start(trainer.get_weights(), trainer.num_samples)
        trainer.use_shard(info.task_index, info.total)
        trainer.set_weights(info.weights)
        for _ in range(3):
            one_round(chief)
        start_worker("worker2")  # a late joiner
        wait_for(lambda: "worker2" in first, "worker2's first weights")
        for _ in range(3):
            one_round(chief)
        outputs["worker1"][0].send_signal(signal.SIGKILL)  # a worker that dies and misses a round
        wait_for(lambda: "worker1" not in chief.participants(), "the chief to drop worker1")
        one_round(chief)
        sent_before = len(first["worker1"])
        start_worker("worker1")
        wait_for(lambda: len(first["worker1"]) > sent_before, "the restarted worker1's first weights")
        for _ in range(3):
            one_round(chief)
    finally:
        chief.close()  # a chief restart: the workers lose it and rejoin the next one
    second_bus = EventBus()
    second = sends(second_bus)
    chief = build_chief(make_config("chief", "chief", port, min_workers=2, **settings), second_bus, ledger=False)
    try:
        info = chief.start(trainer.get_weights(), trainer.num_samples)  # resumes from its checkpoint
        trainer.set_weights(info.weights)
        assert info.round == max(losses) and trainer.evaluate()[0] == losses[info.round]
        while max(losses) < rounds:
            one_round(chief)
    finally:
        chief.close()

    for name in ("worker1", "worker2"):
        lines: dict[int, dict[str, Any]] = {}
        for process in outputs[name]:
            out, _ = process.communicate(timeout=60)
            lines.update(records(out))
        assert outputs[name][-1].returncode == 0, processes.log(name)
        assert lines and all(line["loss"] == pytest.approx(losses[r], rel=1e-9, abs=1e-12) for r, line in lines.items())
        assert "Traceback" not in processes.log(name) and "refused the broadcast" not in processes.log(name)
    # keyframes exactly where a worker could not hold the previous model, deltas everywhere else
    kinds = {name: ["K" if size == keyframe else "D" if size == delta else f"?{size}" for _, size in seen]
             for name, seen in first.items()}
    assert "".join(kinds["worker1"]).count("K") == 2 and kinds["worker1"][0] == "K", kinds  # start, after restart
    assert "".join(kinds["worker2"]).count("K") == 1 and kinds["worker2"][0] == "K", kinds  # late join
    assert all(set(k) <= {"K", "D"} for k in kinds.values()), kinds
    for name, seen in second.items():  # after the chief's restart: a keyframe to each, then deltas
        assert [size for _, size in seen] == [keyframe] + [delta] * (len(seen) - 1), (name, seen)
    assert set(second) == {"worker1", "worker2"}


def test_a_worker_taking_another_broadcast_setting_is_refused_for_good(
    make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], processes: Processes, tmp_path: Path
) -> None:
    from edgefed.wiring import build_chief

    port = free_port()
    chief = build_chief(make_config("chief", "chief", port, broadcast_compression="int8"), ledger=False)
    try:
        chief.listen()
        config = write_config("worker1", "worker", port, broadcast_compression="fp16", reconnect_timeout=600.0)
        worker = processes.edgefed("worker", "--config", str(config), "--exit-when-done", log_name="worker1")
        assert worker.wait(timeout=60) == 3, processes.log("worker1")
        doc = json.loads(status_path(tmp_path / "state" / "worker1", "worker").read_text())
        reason = ("the worker takes broadcasts as fp16, this federation sends them as int8 "
                  "(federation.broadcast_compression)")
        assert doc["state"] == "error" and reason in doc["errors"][-1]["message"]
        log = processes.log("worker1")
        assert log.count("edgefed: gave up:") == 1 and "Traceback" not in log
        refused = json.loads(chief.status.path.read_text())["refused"]
        assert refused[-1]["code"] == "bad-hello" and reason in refused[-1]["message"]
    finally:
        chief.close()


def test_a_worker_refuses_hostile_broadcasts_and_rejoins(
    make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], processes: Processes
) -> None:
    """A chief (any node holding its certificate) sending broadcasts a worker must not take: each is
    refused in one line, the connection dropped, and the worker rejoins for a keyframe."""
    from edgefed.wiring import node_transport

    port = free_port()
    config = make_config("chief", "chief", port)
    listener = node_transport(config).listen("127.0.0.1", port, limits_for(config.federation))
    model = SoftmaxTrainer().get_weights()
    nan = [w.copy() for w in model]
    nan[1][0] = np.nan
    garbled = encode_tensor_frame(MessageType.WEIGHTS, 1, [encode_int8(w) for w in model], 0)
    garbled[1] = np.array([np.nan], "<f4").tobytes() + bytes(garbled[1])[4:]  # tensor 0's first int8 scale
    cases = [
        ([encode_tensor_frame(MessageType.WEIGHTS, 1, [encode_int8(w) for w in model], 0)],
         "refused the broadcast for round 1: a delta broadcast for round 1 but this worker holds no model"),
        ([encode_tensor_frame(MessageType.WEIGHTS, 1, nan, 0)],
         "refused the broadcast for round 1: broadcast tensor 1 holds NaN or Inf"),
        ([encode_tensor_frame(MessageType.WEIGHTS, 1, model, 0),
          encode_tensor_frame(MessageType.WEIGHTS, 2, [encode_int8(model[0].T.copy()), encode_int8(model[1])], 0)],
         "refused the broadcast for round 2: delta broadcast tensor 0 (int8 [10, 64]) does not fit"),
        ([encode_tensor_frame(MessageType.WEIGHTS, 1, model, 0), garbled], "has a scale that is negative, not finite"),
    ]
    worker = processes.edgefed("worker", "--config", str(write_config(
        "worker1", "worker", port, broadcast_compression="int8", reconnect_max_delay=0.5)),
        "--exit-when-done", log_name="worker1")
    try:
        for frames, _ in cases:
            pending = listener.accept_pending(60)
            assert pending is not None, processes.log("worker1")
            conn = pending.authenticate()
            conn.settimeout(60)
            hello = conn.recv()
            assert hello.type is MessageType.HELLO and hello.body["broadcast"] == "int8"
            conn.send([encode_message(Welcome(task_index=1, total=2, round=1, chief="chief"), 1)])
            for parts in frames:
                conn.send(parts)
            with pytest.raises(TransportError):  # the worker drops the connection (after its upload, if any)
                while True:
                    conn.recv()
            conn.close()
        pending = listener.accept_pending(60)  # the worker came back once more: end it
        assert pending is not None
        conn = pending.authenticate()
        conn.recv()
        conn.send([encode_message(Bye(ReasonCode.NOT_ALLOWED, "that is all"))])
        assert worker.wait(timeout=60) == 3
    finally:
        listener.close()
    log = processes.log("worker1")
    assert "Traceback" not in log
    for _, message in cases:
        assert sum(message in line for line in log.splitlines()) == 1, (message, log)
