"""site.yml --check --diff and teardown.yml against fresh hosts: the lab's Debian image, run as systemd
containers and reached with Ansible's docker connection (the molecule lab converges them for real)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_helpers import run_playbook

pytestmark = pytest.mark.lab

IMAGE = os.environ.get("EDGEFED_LAB_IMAGE", "edgefed-lab:current")


def _docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=check)


@pytest.fixture(scope="module")
def fresh_hosts() -> Iterator[dict[str, str]]:
    if shutil.which("docker") is None or _docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.skip(f"docker or the lab image {IMAGE} is missing (make lab-image builds it)")
    tag = uuid.uuid4().hex[:8]
    network = f"edgefed-fresh-{tag}"
    _docker("network", "create", network)
    names = {"chief": f"edgefed-fresh-chief-{tag}", "pi-1": f"edgefed-fresh-pi1-{tag}"}
    try:
        for role, name in names.items():
            caps = ["--cap-add", "NET_ADMIN"] if role == "chief" else []
            _docker("run", "-d", "--name", name, "--hostname", role, "--network", network,
                    "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
                    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro", "--cgroupns=host", *caps, IMAGE, "/lib/systemd/systemd")
        for name in names.values():
            # systemd has to be up before Ansible asks it anything (bounded: 60 tries).
            for _ in range(60):
                state = _docker("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
                if state in {"running", "degraded"}:
                    break
                subprocess.run(["sleep", "1"], check=True)
        yield names
    finally:
        for name in names.values():
            _docker("rm", "-f", name, check=False)
        _docker("network", "rm", network, check=False)


def _inventory(tmp_path: Path, settings: dict[str, Any], names: dict[str, str]) -> Path:
    chief_ip = _docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
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
        assert _docker("exec", name, "test", "-e", "/opt/edgefed", check=False).returncode != 0
        assert _docker("exec", name, "id", "edgefed", check=False).returncode != 0
    assert not (tmp_path / "pki").exists()


def test_teardown_on_fresh_hosts_is_harmless(tmp_path: Path, settings: dict[str, Any],
                                             fresh_hosts: dict[str, str]) -> None:
    before = _docker("exec", fresh_hosts["chief"], "iptables-save").stdout
    inventory = _inventory(tmp_path, settings, fresh_hosts)
    run = run_playbook(tmp_path, inventory, "teardown.yml", args=("-e", "edgefed_teardown_stop_services=true"))
    assert run.returncode == 0, run.output
    assert run.changed("chief") == 0, run.output
    after = _docker("exec", fresh_hosts["chief"], "iptables-save").stdout
    assert _rules(after) == _rules(before)


def _rules(iptables_save: str) -> list[str]:
    return [line for line in iptables_save.splitlines() if not line.startswith("#")]  # no timestamps
