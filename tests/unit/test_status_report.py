"""The `--json` document and its documented schema, and the table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from rich.console import Console

from edgefed.ops.health import HostStatus, UnitState
from edgefed.ops.inventory import InventoryHost
from edgefed.ops.probe import COMPONENTS, Failure, FailureKind
from edgefed.ops.report import FORMAT, STATUS_SCHEMA, document, render_table

jsonschema = pytest.importorskip("jsonschema")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "status.md"


def _json_blocks() -> list[str]:
    return re.findall(r"```json\n(.*?)```", DOCS.read_text(), flags=re.S)


def _host(name: str, role: str = "worker") -> InventoryHost:
    return InventoryHost(
        name=name,
        address="192.0.2.7",
        port=2222,
        user="admin",
        key_file=None,
        password=None,
        role="chief" if role == "chief" else "worker",
        node_name=name,
        state_dir="/var/lib/edgefed",
        pki_dir="/etc/edgefed/pki",
        public_port=7777,
        private_port=3389,
    )


def _unit(component: str, active: str = "active", restarts: int | None = 0) -> UnitState:
    return UnitState(f"edgefed-{component}.service", "loaded", active, "running", restarts, "success")


def _statuses() -> list[HostStatus]:
    chief = HostStatus(
        _host("hub", "chief"),
        remote_time=1_800_000_100.0,
        units={"chief": _unit("chief"), "worker": None, "ledger": _unit("ledger", restarts=2)},
        status_files={
            "chief": {
                "state": "training",
                "round": 4,
                "rounds_total": 10,
                "participants": ["hub", "pi1"],
                "updated_at": 1_800_000_090,
                "last_transfer": {"round": 4, "peer": "pi1", "direction": "receive", "bytes": 2048,
                                  "at": 1_800_000_040.5},
                "errors": [{"at": 1_800_000_000, "message": "pi2 left"}],
            },
            "worker": None,
            "ledger": {"backend": "embedded", "height": 9, "outbox_backlog": 1, "last_delivery_at": 1_800_000_099},
        },
        certificate={"path": "/etc/edgefed/pki/nodes/hub/tls.crt", "not_after": "2027-01-01T00:00:00+00:00",
                     "days_left": 20.5, "error": None},
        forwarding={"public_port": 7777, "private_port": 3389, "present": True, "error": None,
                    "rule": "-A PREROUTING -p tcp -m tcp --dport 7777 -j DNAT --to-destination :3389"},
    )  # fmt: skip
    odd = HostStatus(  # a status file written by a buggy or older writer: wrong types become null
        _host("pi1"),
        remote_time=1_800_000_100.0,
        units={"chief": None, "worker": _unit("worker", "failed", restarts=None), "ledger": None},
        status_files={
            "chief": None,
            "worker": {"state": 3, "round": "four", "participants": "pi1", "last_transfer": {"direction": "up"},
                       "errors": "none"},
            "ledger": {"height": True, "outbox_backlog": 1.5},
        },
        problems=["edgefed-worker.service failed (result: exit-code)"],
    )  # fmt: skip
    down = HostStatus(_host("pi2"), failure=Failure("timeout", "no answer from 192.0.2.7:2222 within 10s"))
    down.problems.append(down.failure.message if down.failure else "")
    bare = HostStatus(_host("pi3"), failure=Failure("not-installed", "edgefed is not installed"))
    bare.problems.append("edgefed is not installed")
    return [chief, odd, down, bare]


def test_document_matches_the_schema_and_the_hosts() -> None:
    doc = document(_statuses(), "inventory/lab", "all")
    jsonschema.validate(doc, STATUS_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert doc["healthy"] is False
    assert doc["summary"] == {"hosts": 4, "healthy": 1, "unhealthy": 3, "unreachable": 1}
    hub, pi1, pi2, pi3 = doc["hosts"]
    assert hub["federation"]["last_transfer"]["age_seconds"] == pytest.approx(59.5)
    assert hub["federation"]["age_seconds"] == pytest.approx(10)
    assert hub["federation"]["last_error"] == "pi2 left"
    assert hub["units"]["worker"] is None
    assert pi1["federation"] == {
        "state": None,
        "round": None,
        "rounds_total": None,
        "participants": [],
        "updated_at": None,
        "age_seconds": None,
        "last_transfer": {"round": None, "peer": None, "direction": None, "bytes": None, "at": None,
                          "age_seconds": None},
        "last_error": None,
    }  # fmt: skip
    assert pi1["ledger"]["height"] is None and pi1["ledger"]["outbox_backlog"] is None
    assert pi2["reachable"] is False and pi2["failure"]["kind"] == "timeout"
    assert pi3["reachable"] is True and pi3["healthy"] is False
    json.dumps(doc)  # plain JSON types only


def test_schema_rejects_a_document_missing_a_field() -> None:
    doc = document(_statuses(), "inventory/lab", None)
    del doc["hosts"][0]["certificate"]
    with pytest.raises(jsonschema.ValidationError, match="'certificate' is a required property"):
        jsonschema.validate(doc, STATUS_SCHEMA)


def test_docs_link_the_schema_file_and_hold_a_valid_example() -> None:
    text = DOCS.read_text()
    assert "edgefed/contracts/schemas/status-report.schema.json" in text
    (example,) = (json.loads(block) for block in _json_blocks())
    jsonschema.validate(example, STATUS_SCHEMA, format_checker=jsonschema.FormatChecker())


def test_the_schema_file_follows_the_code() -> None:
    jsonschema.Draft202012Validator.check_schema(STATUS_SCHEMA)
    assert STATUS_SCHEMA["properties"]["format"] == {"const": FORMAT}
    host = STATUS_SCHEMA["properties"]["hosts"]["items"]["properties"]
    failure = next(option for option in host["failure"]["oneOf"] if option.get("type") == "object")
    assert set(failure["properties"]["kind"]["enum"]) == set(get_args(FailureKind))
    assert host["status_files"]["required"] == list(COMPONENTS)


def test_table_shows_every_host_and_its_problems() -> None:
    console = Console(record=True, width=220, color_system=None)
    console.print(render_table(_statuses()))
    text = console.export_text()
    for expected in ("hub", "admin@192.0.2.7:2222", "4/10 training", "hub, pi1", "r4 ← pi1 2.0 KiB",
                     "height 9", "20 d", "r? ? ? ?", "yes", "OK", "↻2", "worker failed", "timeout", "not-installed",
                     "no answer from 192.0.2.7:2222 within 10s"):  # fmt: skip
        assert expected in text, expected
    rows: dict[str, Any] = {name: text.count(name) for name in ("FAIL", "OK")}
    assert rows == {"FAIL": 3, "OK": 1}


def test_the_spent_epsilon_of_a_private_node_is_reported() -> None:
    (chief, *_) = _statuses()
    files = chief.status_files["chief"]
    assert files is not None
    files.update(dp_epsilon=3.21, dp_epsilon_target=8.0)  # what a node with federation.dp_epsilon writes
    doc = document([chief], "inventory/lab", None)
    jsonschema.validate(doc, STATUS_SCHEMA, format_checker=jsonschema.FormatChecker())
    federation = doc["hosts"][0]["federation"]
    assert (federation["dp_epsilon"], federation["dp_epsilon_target"]) == (3.21, 8.0)
    console = Console(record=True, width=220, color_system=None)
    console.print(render_table([chief]))
    assert "ε spent 3.21 of 8" in console.export_text()
