"""The training history's writer and reader, `edgefed history` on good and damaged files, the
[metrics] section's checks, and the status report's accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from edgefed.config import ConfigError, config_from_dict
from edgefed.contracts.events import TransferEvent
from edgefed.contracts.schemas import HISTORY_LINE, load_schema
from edgefed.observe.history import MAX_TALLIED_ROUNDS, HistoryWriter, read_history
from tests.conftest import REPO
from tests.unit.test_status_report import STATUS_SCHEMA, _statuses, document, render_table

jsonschema = pytest.importorskip("jsonschema")


def _event(round_number: int, direction: str, size: int, seconds: float = 0.1) -> TransferEvent:
    if direction == "receive":
        return TransferEvent(round_number, "worker1", "chief", "chief", "receive", 2, size, "0" * 64, seconds, "update")
    return TransferEvent(round_number, "chief", "worker1", "chief", "send", 2, size, "0" * 64, seconds, "weights")


def _write_rounds(state_dir: Path, rounds: int) -> HistoryWriter:
    writer = HistoryWriter(state_dir, "chief")
    for number in range(1, rounds + 1):
        writer.transfer(_event(number - 1, "receive", 1000 + number, seconds=0.2 * number))
        writer.transfer(_event(number, "send", 2000 + number))
        writer.round(number, ["chief", "worker1"], accuracy=0.5 + number / 100, loss=1.0 / number,
                     train_loss=1.1 / number, seconds=0.5)
    return writer


def test_lines_follow_the_schema_and_count_each_rounds_own_transfers(tmp_path: Path) -> None:
    writer = _write_rounds(tmp_path, 3)
    writer.refused("unsupported-protocol")
    writer.transfer(_event(3, "receive", 7))  # an early upload for round 3, before line 4
    writer.round(4, ["chief"], accuracy=float("nan"), loss=None, train_loss=None, seconds=0.1)
    history = read_history(writer.path)
    assert history.problems == []
    validator = jsonschema.Draft202012Validator(load_schema(HISTORY_LINE))
    for record in history.records:
        validator.validate(record)
    first, *_, last = history.records
    assert (first["bytes_in"], first["bytes_out"], first["seconds"]["upload_max"]) == (1001, 2001, 0.2)
    assert (last["refused"], last["bytes_in"], last["bytes_out"], last["accuracy"]) == (1, 7, 0, None)
    assert all(len(line) < 400 for line in writer.path.read_text().splitlines())  # the SD card's cost per round


def test_a_hostile_stream_of_round_numbers_tallies_a_bounded_number_of_rounds(tmp_path: Path) -> None:
    writer = HistoryWriter(tmp_path, "chief")
    for number in range(10_000):
        writer.transfer(_event(number, "receive", 1))
    assert len(writer._tallies) == MAX_TALLIED_ROUNDS


def _history(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgefed", "history", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)


def test_a_truncated_last_line_is_one_warning_and_the_rest_is_shown(tmp_path: Path) -> None:
    writer = _write_rounds(tmp_path, 3)
    with open(writer.path, "a") as file:
        file.write('{"format":"edgefed-history/1","round":4,"partici')  # the chief died mid-write
    result = _history("--state-dir", str(tmp_path))
    assert result.returncode == 0
    assert result.stderr.splitlines() == [f"edgefed: warning: {writer.path}:4: truncated (the chief stopped"
                                          " mid-write?), skipped"]
    assert [row.split()[0] for row in result.stdout.splitlines()] == ["round", "1", "2", "3"]
    as_json = json.loads(_history("--state-dir", str(tmp_path), "--json", "--last", "2").stdout)
    assert [r["round"] for r in as_json["records"]] == [2, 3] and len(as_json["problems"]) == 1


@pytest.mark.parametrize("content, problem", [
    (b"\x00\xff garbage\n", "not valid JSON"),
    (b'{"format": "edgefed-history/1", "round": -1}\n', "round must be a non-negative integer"),
    (b"[1, 2]\n", "not a JSON object"),
    (b"x" * 70_000 + b"\n", "line longer than"),
])  # fmt: skip
def test_a_damaged_line_is_named_and_skipped(tmp_path: Path, content: bytes, problem: str) -> None:
    writer = _write_rounds(tmp_path, 1)
    with open(writer.path, "ab") as file:
        file.write(content)
    _write_rounds(tmp_path, 1)  # a line after the damage is still read
    history = read_history(writer.path)
    assert len(history.records) == 2
    (only,) = history.problems
    assert problem in only and ":2:" in only


@pytest.mark.parametrize("args, message", [
    (["--state-dir", "{tmp}/nothing"], "no history yet"),
    (["--state-dir", "{tmp}", "--plot", "{tmp}/out.svg"], "ending in .png"),
    (["--state-dir", "{tmp}", "--last", "0"], "--last must be at least 1"),
    (["--config", "{tmp}"], "cannot read the configuration"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "history.jsonl").mkdir()  # a directory where the file should be
    result = _history(*[arg.format(tmp=tmp_path) for arg in args])
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_directory_as_the_history_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "history.jsonl").mkdir()
    result = _history("--state-dir", str(tmp_path))
    assert result.returncode == 2 and "cannot read the history" in result.stderr


def _raw(**metrics: Any) -> dict[str, Any]:
    return {"node": {"name": "chief", "role": "chief"}, "metrics": metrics}


def test_metrics_are_off_by_default_on_localhost() -> None:
    config = config_from_dict({"node": {"name": "chief", "role": "chief"}})
    assert (config.metrics.enabled, config.metrics.address, config.metrics.port) == (False, "127.0.0.1", 9477)
    assert config_from_dict(_raw(enabled=True, address="::1", port=9100)).metrics.address == "::1"


@pytest.mark.parametrize("metrics, message", [
    ({"address": "localhost:80"}, "metrics.address: must be an IP address"),
    ({"port": 0}, "metrics.port: must be a port number"),
    ({"port": 70000}, "metrics.port: must be a port number"),
    ({"enabled": "yes"}, "metrics.enabled: must be true or false"),
    ({"path": "/x"}, "metrics.path: unknown key"),
])  # fmt: skip
def test_bad_metrics_settings_name_the_key(metrics: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(_raw(**metrics))


def test_status_shows_the_last_accuracy() -> None:
    statuses = _statuses()
    files = statuses[0].status_files["chief"]
    assert files is not None
    files.update(accuracy=0.9125, loss=0.31)
    doc = document(statuses, "inventory/lab", "all")
    jsonschema.validate(doc, STATUS_SCHEMA)
    assert (doc["hosts"][0]["federation"]["accuracy"], doc["hosts"][0]["federation"]["loss"]) == (0.9125, 0.31)
    console = Console(record=True, width=220, color_system=None)
    console.print(render_table(statuses))
    assert "accuracy 0.912" in console.export_text()
