"""The status files a real chief and real workers write follow the schema shipped with the package
(edgefed/contracts/schemas/status-file.schema.json), while training, after refusals and when finished."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgefed.config import NodeConfig
from edgefed.contracts.schemas import STATUS_FILE, load_schema
from edgefed.contracts.status import status_path
from edgefed.pki import NodeCredentials
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.transport import client_context, connect_tls
from edgefed.wire import MessageType, encode_control_frame, encode_tensor_frame
from edgefed.wiring import build_chief
from tests.conftest import Processes, free_port, wait_for

jsonschema = pytest.importorskip("jsonschema")


def valid_status(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    jsonschema.Draft202012Validator(load_schema(STATUS_FILE)).validate(doc)
    return doc


def test_status_files_of_a_running_federation_follow_the_schema(
    make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], processes: Processes,
    pki_dir: Path, tmp_path: Path,
) -> None:
    port, rounds = free_port(), 3
    chief = build_chief(make_config("chief", "chief", port, min_workers=2, rounds=rounds), ledger=True)
    try:
        chief.listen()
        worker = processes.edgefed("worker", "--config", str(write_config("worker1", "worker", port, rounds=rounds)),
                                   "--exit-when-done", log_name="worker1")
        # mallory: a deployment node whose update holds NaN, so the chief's file carries an error entry
        mallory = connect_tls("127.0.0.1", port, client_context(NodeCredentials.load(pki_dir, "mallory")))
        mallory.send([encode_control_frame(MessageType.HELLO, 0, {"num_samples": 5})])
        weights = SoftmaxTrainer().get_weights()
        info = chief.start(weights)
        assert info.total == 3
        while (frame := mallory.recv()).type is not MessageType.WEIGHTS:
            pass
        assert frame.tensors is not None
        poisoned = [np.full_like(frame.tensors[0], np.nan), frame.tensors[1]]
        mallory.send(encode_tensor_frame(MessageType.UPDATE, frame.round, poisoned, 5))

        training = valid_status(chief.status.path)
        assert training["state"] == "training" and training["participants"] == ["mallory", "worker1"]
        result = chief.average(weights, 100)
        errors = valid_status(chief.status.path)["errors"]
        assert any("rejected update from mallory" in e["message"] for e in errors), errors
        mallory.close()
        wait_for(lambda: "mallory" not in chief.participants(), 10, "mallory to be dropped")
        while not result.finished:
            result = chief.average(result.weights, 100)
        assert worker.wait(timeout=60) == 0, processes.log("worker1")
    finally:
        chief.close()

    done = valid_status(chief.status.path)
    assert done["state"] == "finished" and done["round"] == rounds and done["rounds_total"] == rounds
    assert any("mallory left" in e["message"] for e in done["errors"]), done["errors"]
    worker_doc = valid_status(status_path(tmp_path / "state" / "worker1", "worker"))
    assert worker_doc["state"] == "finished" and worker_doc["participants"] == ["chief"]
    assert worker_doc["last_transfer"]["peer"] == "chief"


def test_a_worker_that_cannot_reach_its_chief_writes_a_valid_status(
    write_config: Callable[..., Path], processes: Processes, tmp_path: Path
) -> None:
    port = free_port()  # nobody listens here
    config = write_config("worker2", "worker", port, reconnect_timeout=1.0)
    worker = processes.edgefed("worker", "--config", str(config), log_name="worker2", stdout=subprocess.DEVNULL)
    assert worker.wait(timeout=60) != 0
    doc = valid_status(status_path(tmp_path / "state" / "worker2", "worker"))
    assert doc["state"] == "stopped", doc
