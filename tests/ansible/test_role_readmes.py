"""Each role's README.md says what its meta/argument_specs.yml says (scripts/role_readme.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_helpers import REPO

SCRIPT = REPO / "scripts" / "role_readme.py"
ROLES = sorted(path.name for path in (REPO / "roles").iterdir() if (path / "tasks").is_dir())


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def _options(options: dict[str, Any], parent: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for name, option in options.items():
        full = f"{parent}.{name}" if parent else name
        yield full, option
        yield from _options(option.get("options") or {}, full)


def _words(text: str | list[str] | None) -> set[str]:
    """The words of a description, without Ansible's one-letter markup (I(...), C(...))."""
    joined = text if isinstance(text, str) else " ".join(text or [])
    return {word for word in re.findall(r"[A-Za-z0-9_]+", joined) if len(word) > 1}


def _tables(readme: str) -> list[dict[str, list[str]]]:
    """The option rows of each entry point's section: name -> [type, default, description]."""
    tables: list[dict[str, list[str]]] = []
    for line in readme.splitlines():
        if line.startswith("## "):
            tables.append({})
        elif line.startswith("| `"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            tables[-1][cells[0].strip("`")] = cells[1:]
    return tables


def test_every_role_has_a_spec_and_an_up_to_date_readme() -> None:
    for role in ROLES:
        assert (REPO / "roles" / role / "meta/argument_specs.yml").is_file(), role
        assert (REPO / "roles" / role / "README.md").is_file(), role
    result = _run("--check")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("role", ROLES)
def test_readme_lists_every_option_with_its_type_and_default(role: str) -> None:
    specs = yaml.safe_load((REPO / "roles" / role / "meta/argument_specs.yml").read_text())["argument_specs"]
    tables = _tables((REPO / "roles" / role / "README.md").read_text())
    assert len(tables) == len(specs)
    for spec, rows in zip(specs.values(), tables, strict=True):
        assert len(rows) == len(list(_options(spec.get("options") or {})))
        for name, option in _options(spec.get("options") or {}):
            kind, default, description = rows[name]
            assert kind.split(" of ")[0] == option.get("type", "str"), name
            if option.get("required"):
                assert default == "required", name
            elif "default" in option:
                assert json.loads(default.strip("`").replace("\\|", "|")) == option["default"], name
            assert _words(option.get("description")) <= _words(description), name


def _set_default(options: dict[str, Any]) -> None:
    options["edgefed_service_restart_sec"]["default"] = 9


def _set_type(options: dict[str, Any]) -> None:
    options["edgefed_service_restart_sec"]["type"] = "float"


def _set_description(options: dict[str, Any]) -> None:
    options["edgefed_service_venv"]["description"] = "Somewhere else entirely."


def _add_option(options: dict[str, Any]) -> None:
    options["edgefed_service_nice"] = {"type": "int", "default": 0, "description": "Scheduling priority."}


def _remove_option(options: dict[str, Any]) -> None:
    del options["edgefed_service_unit_extra"]


@pytest.mark.parametrize("change", [_set_default, _set_type, _set_description, _add_option, _remove_option])
def test_a_spec_change_makes_the_readme_out_of_date(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    role = tmp_path / "roles" / "edgefed_service"
    shutil.copytree(REPO / "roles" / "edgefed_service", role)
    assert _run("--check", "--roles-dir", str(tmp_path / "roles")).returncode == 0
    spec_file = role / "meta/argument_specs.yml"
    specs = yaml.safe_load(spec_file.read_text())
    change(specs["argument_specs"]["main"]["options"])
    spec_file.write_text(yaml.safe_dump(specs, sort_keys=False))

    stale = _run("--check", "--roles-dir", str(tmp_path / "roles"))
    assert stale.returncode == 1
    assert f"{role / 'README.md'} is out of date" in stale.stderr
    assert _run("--roles-dir", str(tmp_path / "roles")).returncode == 0
    assert _run("--check", "--roles-dir", str(tmp_path / "roles")).returncode == 0
