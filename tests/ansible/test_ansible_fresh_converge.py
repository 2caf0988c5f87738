"""site.yml from nothing on "fresh host" containers (molecule/image/build.sh --fresh: systemd, sshd,
sudo and python3 only, like a cloud image or a new Pi OS Lite), a second run that changes nothing, an
upgrade from version A to a version B that adds a dependency, then teardown.yml: from the worker nothing
answers on 7777, 3389 or the p2p port. The containers reach Debian's mirror and PyPI (apt and pip run
for real); the network and containers are this module's own (deploy-fresh-*)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_helpers import REPO, run_playbook
from lab_containers import PROBE, docker, image_missing, systemd_hosts

pytestmark = pytest.mark.lab

IMAGE = os.environ.get("EDGEFED_LAB_FRESH_IMAGE", "edgefed-lab-fresh:current")
P2P_PORT = 7000


@pytest.fixture(scope="module")
def fresh() -> Iterator[dict[str, str]]:
    if shutil.which("docker") is None or image_missing(IMAGE):
        pytest.skip(f"docker or the fresh-host image {IMAGE} is missing (make lab-image-fresh builds it)")
    with systemd_hosts(IMAGE, "deploy-fresh") as hosts:
        yield hosts


def _source(tmp_path: Path, name: str, extra_dependency: str = "") -> Path:
    """A copy of the project (outside git: its version is its content's hash), optionally with one
    more dependency, as the next release would bring."""
    source = tmp_path / name
    source.mkdir()
    shutil.copy2(REPO / "README.md", source / "README.md")
    shutil.copytree(REPO / "edgefed", source / "edgefed", ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = (REPO / "pyproject.toml").read_text()
    if extra_dependency:
        pyproject = pyproject.replace("dependencies = [\n", f'dependencies = [\n    "{extra_dependency}",\n', 1)
        (source / "edgefed" / "release_b.py").write_text('"""Marks version B in the upgrade test."""\n')
    (source / "pyproject.toml").write_text(pyproject)
    return source


def _inventory(tmp_path: Path, settings: dict[str, Any], fresh: dict[str, str], source: Path) -> Path:
    inventory = {"all": {
        "vars": {**settings, "ansible_connection": "community.docker.docker",
                 "ansible_python_interpreter": "/usr/bin/python3",
                 "edgefed_public_address": fresh["address"], "edgefed_private_address": fresh["address"],
                 "edgefed_source_cidrs": ["0.0.0.0/0"], "edgefed_allow_world": True,
                 "edgefed_p2p_port": P2P_PORT,
                 "edgefed_install_project_dir": str(source),
                 # Shared by the test's runs (and kept, like the lab's cache, in the gitignored wheelhouse/).
                 "edgefed_install_controller_wheelhouse": str(REPO / "wheelhouse" / "fresh-numpy"),
                 "edgefed_install_federation": {"wait_time": 600, "min_workers": 1, "rounds": 2,
                                                "interval_steps": 10},
                 "edgefed_install_trainer": {"kind": "numpy"}},
        "children": {"chief": {"hosts": {"chief": {"ansible_host": fresh["chief"]}}},
                     "workers": {"hosts": {"pi-1": {"ansible_host": fresh["pi-1"]}}}},
    }}
    path = tmp_path / f"hosts-{source.name}.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def _in_venv(fresh: dict[str, str], host: str, code: str) -> str:
    return docker("exec", fresh[host], "/opt/edgefed/venv/bin/python", "-c", code).stdout.strip()


def _started(fresh: dict[str, str], host: str, unit: str) -> str:
    return docker("exec", fresh[host], "systemctl", "show", "-p", "ActiveState,ExecMainStartTimestampMonotonic",
                   unit).stdout


def _from_worker(fresh: dict[str, str]) -> dict[int, str]:
    return {port: docker("exec", fresh["pi-1"], "python3", "-c", PROBE, fresh["address"], str(port)).stdout.strip()
            for port in (7777, 3389, P2P_PORT)}


# One deployment, four steps in file order: converge from nothing, idempotence, upgrade A -> B,
# teardown. Each playbook run gets PLAYBOOK_BOUND: a bound, not an expectation (a few minutes on a quiet
# machine; the converge passed 600 s at load 10-14 with apt and pip installing in the containers). The
# idempotence run is here as well as in the molecule lab because only a fresh host takes the roles'
# install paths (apt packages, the venv, iptables); the lab image has them already.
PLAYBOOK_BOUND = 2400


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, fresh: dict[str, str]) -> dict[str, Any]:
    tmp_path = tmp_path_factory.mktemp("fresh")
    settings = {"edgefed_pki_dir": str(tmp_path / "pki")}
    return {"tmp": tmp_path, "a": _inventory(tmp_path, settings, fresh, _source(tmp_path, "a")),
            "b": _inventory(tmp_path, settings, fresh, _source(tmp_path, "b", extra_dependency="six>=1.16"))}


@pytest.mark.timeout(PLAYBOOK_BOUND + 300)
def test_site_converges_fresh_hosts_from_nothing(deployment: dict[str, Any], fresh: dict[str, str]) -> None:
    for host in ("chief", "pi-1"):  # really fresh: none of what the roles need is there
        missing = docker("exec", fresh[host], "sh", "-c",
                          "for p in python3-apt python3-venv iptables; do dpkg -s $p >/dev/null 2>&1 || echo $p; done")
        assert missing.stdout.split() == ["python3-apt", "python3-venv", "iptables"]
    converge = run_playbook(deployment["tmp"], deployment["a"], "site.yml", timeout=PLAYBOOK_BOUND)
    assert converge.returncode == 0, converge.output
    assert "ActiveState=active" in _started(fresh, "chief", "edgefed-chief.service")
    assert "ActiveState=active" in _started(fresh, "pi-1", "edgefed-worker.service")
    assert _from_worker(fresh)[7777] == "open"


@pytest.mark.timeout(PLAYBOOK_BOUND + 300)
def test_a_second_run_changes_nothing(deployment: dict[str, Any], fresh: dict[str, str]) -> None:
    again = run_playbook(deployment["tmp"], deployment["a"], "site.yml", timeout=PLAYBOOK_BOUND)
    assert again.returncode == 0, again.output
    assert again.changed("chief") == 0 and again.changed("pi-1") == 0, again.output


@pytest.mark.timeout(PLAYBOOK_BOUND + 300)
def test_upgrade_to_a_version_with_a_new_dependency(deployment: dict[str, Any], fresh: dict[str, str]) -> None:
    version_a = _in_venv(fresh, "chief", "import edgefed; print(edgefed.__version__)")
    units = (("chief", "edgefed-chief.service"), ("pi-1", "edgefed-worker.service"))
    before = {host: _started(fresh, host, unit) for host, unit in units}
    # A wheel the node holds with the right content but another owner and mode is put right, not skipped.
    tampered = docker("exec", fresh["pi-1"], "sh", "-c", "cd /opt/edgefed/wheelhouse && w=$(ls numpy-*.whl) && "
                      "chown 65534:65534 \"$w\" && chmod 0600 \"$w\" && echo \"$w\"").stdout.strip()
    assert tampered.endswith(".whl"), tampered
    upgrade = run_playbook(deployment["tmp"], deployment["b"], "site.yml", timeout=PLAYBOOK_BOUND)
    assert upgrade.returncode == 0, upgrade.output
    assert docker("exec", fresh["pi-1"], "stat", "-c", "%U %G %a",
                  f"/opt/edgefed/wheelhouse/{tampered}").stdout.split() == ["root", "root", "644"]
    for host, unit in units:
        version_b = _in_venv(fresh, host, "import edgefed; print(edgefed.__version__)")
        assert version_b != version_a and version_b.startswith("0.1.0+s"), version_b
        assert _in_venv(fresh, host, "import six, edgefed.release_b; print('b')") == "b"  # B's new dependency
        after = _started(fresh, host, unit)
        assert "ActiveState=active" in after and after != before[host], (before[host], after)  # restarted on B
        requirements = docker("exec", fresh[host], "cat", "/opt/edgefed/requirements.txt").stdout
        assert f"edgefed[demo]=={version_b}" in requirements


@pytest.mark.timeout(PLAYBOOK_BOUND + 300)
def test_after_teardown_nothing_answers_from_a_worker(deployment: dict[str, Any], fresh: dict[str, str]) -> None:
    down = run_playbook(deployment["tmp"], deployment["b"], "teardown.yml", timeout=PLAYBOOK_BOUND)
    assert down.returncode == 0, down.output
    assert _from_worker(fresh) == {7777: "refused", 3389: "refused", P2P_PORT: "refused"}
    assert "ActiveState=active" in _started(fresh, "chief", "edgefed-chief.service")  # closed, not stopped
