"""StatusFile.update_soon (a worker's per-round status): written at once when the file is old enough,
otherwise by one trailing write at most STATUS_WRITE_INTERVAL later; never an older document over a
newer one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgefed.contracts import status as status_module
from edgefed.contracts.status import StatusFile
from tests.conftest import wait_for


def on_disk(status: StatusFile) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(Path(status.path).read_text())
    return doc


def test_an_old_file_is_rewritten_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_module, "STATUS_WRITE_INTERVAL", 0.0)
    status = StatusFile(tmp_path, "worker", "w1", round=0)
    status.update_soon(state="training", round=1)
    assert on_disk(status)["round"] == 1


def test_a_fresh_file_waits_and_the_rounds_meanwhile_share_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_module, "STATUS_WRITE_INTERVAL", 3600.0)  # nothing is due during the test
    status = StatusFile(tmp_path, "worker", "w1", round=0)
    for number in range(1, 6):
        status.update_soon(state="training", round=number)
    assert status.snapshot()["round"] == 5  # the document has it at once
    assert on_disk(status)["round"] == 0  # the file not yet
    status.flush()
    assert on_disk(status)["round"] == 5


def test_the_trailing_write_comes_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_module, "STATUS_WRITE_INTERVAL", 0.05)
    status = StatusFile(tmp_path, "worker", "w1", round=0)
    status.update_soon(state="training", round=7)
    wait_for(lambda: on_disk(status)["round"] == 7, 10, "the trailing status write")
    assert on_disk(status) == status.snapshot()


def test_an_update_before_the_trailing_write_takes_it_along_and_is_not_undone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status_module, "STATUS_WRITE_INTERVAL", 3600.0)
    status = StatusFile(tmp_path, "worker", "w1", round=0)
    status.update_soon(state="training", round=3)
    status.update(state="finished")  # written now, with round 3
    assert on_disk(status)["round"] == 3 and on_disk(status)["state"] == "finished"
    status.flush()  # nothing pending any more: no write
    assert on_disk(status) == status.snapshot()
