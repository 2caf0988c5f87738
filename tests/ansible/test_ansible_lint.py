"""Quality gates of the Ansible side: ansible-lint (production profile) and --syntax-check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ansible_helpers import BIN, REPO, ansible_env

LINTED = ["site.yml", "teardown.yml", "playbooks", "roles", "inventory/example", "inventory/example-mpi"]


def test_ansible_lint_production_profile_is_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "ansible-lint"), "--offline", "--profile", "production", "--nocolor", *LINTED],
        cwd=REPO, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


@pytest.mark.parametrize("playbook", ["site.yml", "teardown.yml"])
@pytest.mark.parametrize(
    "inventory", ["inventory/example", "inventory/lab", "inventory/example-mpi", "inventory/lab-mpi"]
)
def test_syntax_check(tmp_path: Path, playbook: str, inventory: str) -> None:
    if not (REPO / inventory).exists():
        pytest.skip(f"{inventory} is not in this checkout")
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", inventory, "--syntax-check", playbook],
        cwd=REPO, env=ansible_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"playbook: {playbook}" in result.stdout
