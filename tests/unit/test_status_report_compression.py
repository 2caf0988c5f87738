"""`edgefed status` shows the compression a node uses and the bytes of its last round (issue 14)."""

from __future__ import annotations

import pytest
from rich.console import Console

from edgefed.ops.health import HostStatus
from edgefed.ops.report import STATUS_SCHEMA, document, render_table
from tests.unit.test_status_report import _host, _unit

jsonschema = pytest.importorskip("jsonschema")


def _chief(**fields: object) -> HostStatus:
    doc = {"state": "training", "round": 3, "rounds_total": 10, "participants": ["hub", "pi1"],
           "updated_at": 1_800_000_090, "errors": [], **fields}
    return HostStatus(_host("hub", "chief"), remote_time=1_800_000_100.0,
                      units={"chief": _unit("chief"), "worker": None, "ledger": None},
                      status_files={"chief": doc, "worker": None, "ledger": None})


def test_compression_and_round_bytes_reach_the_document_and_the_table() -> None:
    status = _chief(compression="topk:0.01+int8", round_bytes={"round": 3, "sent": 5200, "received": 1400})
    doc = document([status], "inventory/lab", None)
    jsonschema.validate(doc, STATUS_SCHEMA, format_checker=jsonschema.FormatChecker())
    federation = doc["hosts"][0]["federation"]
    assert federation["compression"] == "topk:0.01+int8"
    assert federation["round_bytes"] == {"round": 3, "sent": 5200, "received": 1400}
    console = Console(record=True, width=220, color_system=None)
    console.print(render_table([status]))
    assert "topk:0.01+int8 ↑5.1 KiB ↓1.4 KiB" in console.export_text()


def test_older_nodes_and_odd_values_stay_in_the_schema() -> None:
    older = document([_chief()], "inventory/lab", None)["hosts"][0]["federation"]
    assert "compression" not in older and "round_bytes" not in older
    odd = document([_chief(compression=8, round_bytes={"sent": "many"})], "inventory/lab", None)
    jsonschema.validate(odd, STATUS_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert odd["hosts"][0]["federation"]["compression"] is None
    assert odd["hosts"][0]["federation"]["round_bytes"] == {"round": None, "sent": None, "received": None}
