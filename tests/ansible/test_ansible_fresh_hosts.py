"""site.yml --check --diff and teardown.yml against fresh hosts: the lab's Debian image, run as systemd
containers and reached with Ansible's docker connection (the molecule lab converges them for real)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_helpers import run_playbook
from lab_containers import docker, image_missing, systemd_hosts

pytestmark = pytest.mark.lab

IMAGE = os.environ.get("EDGEFED_LAB_IMAGE", "edgefed-lab:current")


@pytest.fixture(scope="module")
def fresh_hosts() -> Iterator[dict[str, str]]:
    if shutil.which("docker") is None or image_missing(IMAGE):
        pytest.skip(f"docker or the lab image {IMAGE} is missing (make lab-image builds it)")
    with systemd_hosts(IMAGE, "edgefed-fresh", chief_address=False) as hosts:
        yield hosts


def _inventory(tmp_path: Path, settings: dict[str, Any], names: dict[str, str]) -> Path:
    chief_ip = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                       names["chief"]).stdout.strip()
    inventory = {"all": {
        "vars": {**settings, "ansible_connection": "community.docker.docker",
                 "ansible_python_interpreter": "/usr/bin/python3",
                 "edgefed_public_address": chief_ip, "edgefed_private_address": chief_ip,
                 "edgefed_install_controller_wheelhouse": str(tmp_path / "wheelhouse")},
        "children": {"chief": {"hosts": {"chief": {"ansible_host": names["chief"]}}},
                     "workers": {"hosts": {"pi-1": {"ansible_host": names["pi-1"]}}}},
    }}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def test_check_mode_on_fresh_hosts_changes_nothing(tmp_path: Path, settings: dict[str, Any],
                                                   fresh_hosts: dict[str, str]) -> None:
    inventory = _inventory(tmp_path, settings, fresh_hosts)
    run = run_playbook(tmp_path, inventory, "site.yml", args=("--check", "--diff"))
    assert run.returncode == 0, run.output
    recap = run.recap()
    assert recap["chief"]["failed"] == 0 and recap["pi-1"]["failed"] == 0
    assert recap["chief"]["changed"] > 0  # it reports what it would do...
    for name in fresh_hosts.values():  # ...and does none of it
        assert docker("exec", name, "test", "-e", "/opt/edgefed", check=False).returncode != 0
        assert docker("exec", name, "id", "edgefed", check=False).returncode != 0
    assert not (tmp_path / "pki").exists()


def test_teardown_on_fresh_hosts_is_harmless(tmp_path: Path, settings: dict[str, Any],
                                             fresh_hosts: dict[str, str]) -> None:
    before = docker("exec", fresh_hosts["chief"], "iptables-save").stdout
    inventory = _inventory(tmp_path, settings, fresh_hosts)
    run = run_playbook(tmp_path, inventory, "teardown.yml", args=("-e", "edgefed_teardown_stop_services=true"))
    assert run.returncode == 0, run.output
    assert run.changed("chief") == 0, run.output
    after = docker("exec", fresh_hosts["chief"], "iptables-save").stdout
    assert _rules(after) == _rules(before)


def _rules(iptables_save: str) -> list[str]:
    return [line for line in iptables_save.splitlines() if not line.startswith("#")]  # no timestamps
