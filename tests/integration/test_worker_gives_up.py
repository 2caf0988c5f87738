"""A worker that can never join stops at once with state: error in its status file and exit status 3,
instead of retrying for reconnect_timeout: real TLS on loopback against a real chief."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from edgefed import pki
from edgefed.config import NodeConfig, dump_config
from edgefed.contracts.schemas import STATUS_FILE, load_schema
from edgefed.contracts.status import status_path
from edgefed.wiring import build_chief
from tests.conftest import Processes, free_port, node_settings

jsonschema = pytest.importorskip("jsonschema")

NEVER = 600.0  # the worker's reconnect_timeout: a retrying worker would outlive the test's wait


def _run_worker(processes: Processes, tmp_path: Path, pki_dir: Path, port: int, **federation: object) -> Path:
    settings = node_settings(pki_dir, tmp_path / "state", "worker1", "worker", port, reconnect_timeout=NEVER,
                             **federation)
    config = tmp_path / "worker1.toml"
    config.write_text(dump_config(settings))
    worker = processes.edgefed("worker", "--config", str(config), "--exit-when-done", log_name="worker1")
    assert worker.wait(timeout=60) == 3, processes.log("worker1")
    return Path(settings["node"]["state_dir"])


def _error_state(state_dir: Path) -> str:
    doc = json.loads(status_path(state_dir, "worker").read_text())
    jsonschema.Draft202012Validator(load_schema(STATUS_FILE)).validate(doc)
    assert doc["state"] == "error", doc
    return str(doc["errors"][-1]["message"])


@pytest.mark.parametrize("case", ["another CA", "wrong name"])
def test_a_worker_that_cannot_verify_the_chief_stops_with_state_error(
    case: str, make_config: Callable[..., NodeConfig], processes: Processes, pki_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    chief = build_chief(make_config("chief", "chief", port), ledger=False)
    try:
        chief.listen()
        if case == "another CA":
            other = tmp_path / "other-pki"
            pki.init_ca(other, common_name="someone else's CA")
            pki.issue_node(other, "worker1")
            state_dir = _run_worker(processes, tmp_path, other, port)
            assert "certificate verify failed" in _error_state(state_dir)
        else:  # the chief's certificate carries 127.0.0.1 and localhost, not this name
            state_dir = _run_worker(processes, tmp_path, pki_dir, port, server_name="chief.example.org")
            assert "chief.example.org" in _error_state(state_dir)
        log = processes.log("worker1")
        assert "edgefed: gave up:" in log and "Traceback" not in log
        assert "retrying" not in log
    finally:
        chief.close()
