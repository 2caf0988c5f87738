"""The shared contracts: status files match the schema shipped with the package, and it can fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefed.contracts.events import TransferEvent
from edgefed.contracts.schemas import STATUS_FILE, load_schema
from edgefed.contracts.status import MAX_ERRORS, StatusFile, status_path

jsonschema = pytest.importorskip("jsonschema")
SCHEMA = load_schema(STATUS_FILE)


def _written(state_dir: Path, component: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(status_path(state_dir, component).read_text())
    return doc


def test_the_schema_file_is_a_valid_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_a_federation_status_file_follows_the_schema(tmp_path: Path) -> None:
    status = StatusFile(tmp_path, "worker", "pi1", role="worker", round=0, rounds_total=5, task_index=1)
    jsonschema.validate(_written(tmp_path, "worker"), SCHEMA)
    status.update(state="training", round=2, participants=["chief", "pi1"])
    status.transfer(TransferEvent(2, "pi1", "chief", "pi1", "send", 2, 4096, "ab" * 32, 0.1, "update"))
    for n in range(MAX_ERRORS + 3):
        status.error(f"failure {n}")
    doc = _written(tmp_path, "worker")
    jsonschema.validate(doc, SCHEMA)
    assert doc["last_transfer"] == {"round": 2, "peer": "chief", "direction": "send", "bytes": 4096,
                                    "at": pytest.approx(doc["last_transfer"]["at"])}  # type: ignore[index]


def test_a_ledger_status_file_follows_the_schema(tmp_path: Path) -> None:
    status = StatusFile(tmp_path, "ledger", "chief")
    status.update(state="running", backend="embedded", height=None, outbox_backlog=0, last_delivery_at=None)
    jsonschema.validate(_written(tmp_path, "ledger"), SCHEMA)


@pytest.mark.parametrize(("field", "value"), [("state", "confused"), ("component", "miner"), ("outbox_backlog", -1)])
def test_the_schema_refuses_a_wrong_field(tmp_path: Path, field: str, value: object) -> None:
    status = StatusFile(tmp_path, "ledger", "chief")
    status.update(**{field: value})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_written(tmp_path, "ledger"), SCHEMA)
