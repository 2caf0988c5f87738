"""A worker added to or removed from the inventory changes only the chief's federation.expected_workers:
the edgefed_install role asks for a reload (SIGHUP, the chief keeps training), not a restart; any other
change of the configuration still restarts the services."""

from __future__ import annotations

import grp
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from ansible_helpers import run_playbook

from edgefed.config import load_config

PLAY = "tests/ansible/playbooks/config_change.yml"


def _render(tmp_path: Path, workers: list[str], **federation: Any) -> tuple[set[str], int]:
    """Run the role's configuration step; the handlers it notified and how many tasks changed."""
    settings = {
        "edgefed_install_config_file": str(tmp_path / "edgefed.toml"),
        "edgefed_install_venv": sys.prefix,
        "edgefed_install_group": grp.getgrgid(os.getgid()).gr_name,
        "edgefed_install_expected_workers": workers,
        "edgefed_install_federation": {"rounds": 10, **federation},
    }
    extra = tmp_path / "extra.yml"
    extra.write_text(yaml.safe_dump(settings))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"localhost": None}}}))
    run = run_playbook(tmp_path, inventory, PLAY, args=("-e", f"@{extra}"))
    assert run.returncode == 0, run.output
    handlers = {kind for kind in ("restart", "reload") if f'"msg": "handler: {kind}"' in run.output}
    return handlers, run.changed()


def test_membership_alone_reloads_and_anything_else_restarts(tmp_path: Path) -> None:
    config = tmp_path / "edgefed.toml"
    assert _render(tmp_path, ["pi-1", "pi-2", "pi-3"])[0] == {"restart"}  # a new file
    assert _render(tmp_path, ["pi-1", "pi-3"])[0] == {"reload"}  # pi-2 removed
    assert load_config(config).federation.expected_workers == ("pi-1", "pi-3")
    assert _render(tmp_path, ["pi-1", "pi-3", "pi-4"])[0] == {"reload"}  # pi-4 added
    handlers, changed = _render(tmp_path, ["pi-1", "pi-3", "pi-4"])
    assert (handlers, changed) == (set(), 0)  # nothing changed: nothing asked for
    # another setting changes with the membership: the services restart, nothing reloads
    assert _render(tmp_path, ["pi-1", "pi-4"], rounds=20)[0] == {"restart"}
    assert load_config(config).federation.rounds == 20
