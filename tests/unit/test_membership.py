"""The chief's membership watcher (edgefed/membership.py): a changed federation.expected_workers in the
configuration file is handed to the chief; a broken file or any other change is not."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgefed.config import dump_config
from edgefed.membership import MembershipWatcher
from edgefed.transport import request_reload


def _write(path: Path, expected: list[str], rounds: int = 3) -> None:
    path.write_text(dump_config({
        "node": {"name": "chief", "role": "chief", "pki_dir": "/etc/edgefed/pki", "state_dir": "/tmp/s"},
        "federation": {"rounds": rounds, "expected_workers": expected},
    }))


def test_only_a_changed_expected_set_is_applied(tmp_path: Path) -> None:
    config = tmp_path / "edgefed.toml"
    _write(config, ["pi-1", "pi-2"])
    applied: list[tuple[str, ...]] = []

    def apply(names: Sequence[str]) -> None:
        applied.append(tuple(names))

    watcher = MembershipWatcher(config, ["pi-1", "pi-2"], apply)
    watcher.look()
    assert applied == []  # nothing changed
    _write(config, ["pi-1", "pi-2"], rounds=9)
    request_reload()
    watcher.look()
    assert applied == []  # another key: waits for a restart
    config.write_text("[federation\nexpected_workers = [")
    request_reload()
    watcher.look()
    assert applied == [] and watcher.expected == ("pi-1", "pi-2")  # broken: the set in force stays
    _write(config, ["pi-1"])
    request_reload()
    watcher.look()
    assert applied == [("pi-1",)] and watcher.expected == ("pi-1",)
    _write(config, ["pi-1", "chief"])  # the chief itself: refused by the configuration's own check
    request_reload()
    watcher.look()
    assert applied == [("pi-1",)]
