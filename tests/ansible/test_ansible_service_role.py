"""One edgefed_service role for the three units: shared options, and per-unit ones that win."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from ansible_helpers import REPO, run_playbook, write_inventory

from edgefed.config import DEFAULT_PRIVATE_PORT, DEFAULT_PUBLIC_PORT


def _units(tmp_path: Path, settings: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """The three units rendered by Ansible with these inventory settings: unit -> key -> values."""
    out = tmp_path / "rendered"
    out.mkdir()
    settings_file = tmp_path / "settings.yml"
    settings_file.write_text(yaml.safe_dump(settings))
    inventory = write_inventory(tmp_path / "hosts.yml", {})
    run = run_playbook(tmp_path, inventory, "tests/ansible/playbooks/render_templates.yml",
                       args=("-e", f"render_dir={out}", "-e", f"settings_file={settings_file}"))
    assert run.returncode == 0, run.output
    units: dict[str, dict[str, list[str]]] = {}
    for name in ("chief", "worker", "ledger"):
        keys: dict[str, list[str]] = {}
        for key, value in re.findall(r"^(\w+)=(.*)$", (out / f"edgefed-{name}.service").read_text(), re.M):
            keys.setdefault(key, []).append(value)
        units[name] = keys
    return units


def test_each_unit_runs_its_own_command_and_the_shared_defaults(tmp_path: Path) -> None:
    units = _units(tmp_path, {})
    assert units["chief"]["ExecStart"] == ["/opt/edgefed/venv/bin/edgefed chief --config /etc/edgefed/edgefed.toml"]
    assert units["worker"]["ExecStart"] == ["/opt/edgefed/venv/bin/edgefed worker --config /etc/edgefed/edgefed.toml"]
    assert units["ledger"]["ExecStart"] == [
        "/opt/edgefed/venv/bin/edgefed ledger serve --config /etc/edgefed/edgefed.toml"]
    for unit in units.values():
        assert unit["User"] == unit["Group"] == ["edgefed"]
        assert unit["RestartSec"] == ["5"]
        assert "MemoryDenyWriteExecute" not in unit


def test_a_unit_setting_wins_over_the_shared_one(tmp_path: Path) -> None:
    units = _units(tmp_path, {
        "edgefed_service_user": "fl",
        "edgefed_service_unit_extra": ["MemoryMax=1G"],
        "edgefed_worker_unit_extra": ["Environment=OMP_NUM_THREADS=4"],
        "bsmd_ledger_restart_sec": 30,
        "edgefed_chief_memory_deny_write_execute": True,
        "edgefed_chief_venv": "/srv/venv",
    })
    assert units["chief"]["MemoryMax"] == units["ledger"]["MemoryMax"] == ["1G"]
    assert units["worker"]["Environment"] == ["PYTHONUNBUFFERED=1", "OMP_NUM_THREADS=4"]
    assert "MemoryMax" not in units["worker"]
    assert units["ledger"]["RestartSec"] == ["30"]
    assert units["chief"]["RestartSec"] == units["worker"]["RestartSec"] == ["5"]
    assert units["chief"]["MemoryDenyWriteExecute"] == ["yes"]
    assert "MemoryDenyWriteExecute" not in units["worker"]
    assert units["chief"]["ExecStart"][0].startswith("/srv/venv/bin/edgefed chief ")
    assert units["ledger"]["ExecStart"][0].startswith("/opt/edgefed/venv/bin/edgefed ledger serve ")
    for unit in units.values():  # the group follows the shared user
        assert unit["User"] == unit["Group"] == ["fl"]


def test_the_playbooks_port_defaults_are_the_nodes_defaults() -> None:
    """Two systems set the ports (Ansible for the appliance, edgefed.config for a node run by hand):
    the one default each has must be the same number."""
    text = (REPO / "playbooks" / "vars" / "appliance.yml").read_text()
    defaults = dict(re.findall(r"edgefed_(public|private)_port \| default\((\d+)\)", text))
    assert defaults == {"public": str(DEFAULT_PUBLIC_PORT), "private": str(DEFAULT_PRIVATE_PORT)}
