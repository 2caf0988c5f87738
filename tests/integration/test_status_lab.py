"""`edgefed status` against a node with real systemd, real sshd and real iptables: a lab container.

The container is the lab's base image (molecule/image/build.sh: Debian bookworm, systemd as PID 1,
OpenSSH, login user `admin` with passwordless sudo), started on a Docker network this test creates,
with NET_ADMIN for its own nat table; the probe reads that table through `sudo -n`.
The edgefed units here run `sleep infinity` in place of the edgefed services (this test is about
what `edgefed status` reads from systemd, not about the services); status files are written with
edgefed's StatusFile and the certificate is issued with edgefed's PKI, then copied in.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefed import pki
from edgefed.contracts.status import StatusFile
from edgefed.ops.report import STATUS_SCHEMA

REPO = Path(__file__).resolve().parents[2]
BUILD_IMAGE = REPO / "molecule" / "image" / "build.sh"

pytestmark = [pytest.mark.lab, pytest.mark.slow]

UNIT = """[Unit]
Description=stand-in for the edgefed {component} service (status test)

[Service]
ExecStart=/bin/sleep infinity
Restart=no
"""


def _docker(*args: str, input_text: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], input=input_text, capture_output=True, text=True, timeout=300, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Container:
    name: str
    address: str

    def sh(self, script: str, check: bool = True) -> str:
        return _docker("exec", self.name, "sh", "-c", script, check=check)

    def put(self, source: Path, destination: str) -> None:
        self.sh(f"mkdir -p {os.path.dirname(destination)}")
        _docker("cp", str(source), f"{self.name}:{destination}")


def _image() -> str:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        pytest.skip("dockerd is not running (start it: dockerd >/var/log/dockerd.log 2>&1 &)")
    result = subprocess.run(["bash", str(BUILD_IMAGE)], capture_output=True, text=True, timeout=1800, check=False)
    if result.returncode != 0:
        pytest.fail(f"building the lab image failed: {result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def chief(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Container, Path, Path]]:
    image = _image()
    root = tmp_path_factory.mktemp("status-lab-container")
    tag = f"edgefed-status-{os.getpid()}"
    _docker("network", "create", tag)
    try:
        _docker(
            "run", "-d", "--name", tag, "--hostname", "chief", "--network", tag,
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            "--cgroupns=host", "--cap-add", "NET_ADMIN", image,
        )  # fmt: skip
        try:
            address = _docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", tag).strip()
            container = Container(tag, address)
            _boot(container)
            user_key = root / "id_operator"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(user_key)], check=True)
            # The image's login user is `admin` with passwordless sudo (as on Debian cloud images);
            # `viewer` has no sudo at all, so it cannot read the nat table.
            container.sh("id viewer >/dev/null 2>&1 || useradd --create-home viewer")
            for user in ("admin", "viewer"):
                container.sh(f"install -d -m 0700 -o {user} -g {user} /home/{user}/.ssh")
                _docker(
                    "exec", "-i", "-u", user, tag, "sh", "-c", f"cat > /home/{user}/.ssh/authorized_keys",
                    input_text=user_key.with_suffix(".pub").read_text(),
                )  # fmt: skip
            host_key = container.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").split()
            known_hosts = root / "known_hosts"
            known_hosts.write_text(f"{address} {host_key[0]} {host_key[1]}\n")
            _install_edgefed_stand_in(container, root)
            yield container, user_key, known_hosts
        finally:
            _docker("rm", "-f", tag, check=False)
    finally:
        _docker("network", "rm", tag, check=False)


def _boot(container: Container) -> None:
    """Wait (bounded) until systemd has finished booting and sshd is active."""
    for _ in range(120):  # 120 x 0.5 s
        state = container.sh("systemctl is-system-running 2>/dev/null; systemctl is-active ssh", check=False)
        words = state.split()
        if len(words) >= 2 and words[0] in ("running", "degraded") and words[-1] == "active":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the lab container did not boot: {state!r}")


def _install_edgefed_stand_in(container: Container, root: Path) -> None:
    for component in ("chief", "ledger"):
        unit = root / f"edgefed-{component}.service"
        unit.write_text(UNIT.format(component=component))
        container.put(unit, f"/etc/systemd/system/edgefed-{component}.service")
    container.sh("systemctl daemon-reload && systemctl start edgefed-chief edgefed-ledger")

    pki_dir = root / "pki"
    pki.init_ca(pki_dir)
    container.put(pki.issue_node(pki_dir, "chief").cert, "/etc/edgefed/pki/nodes/chief/tls.crt")

    state = root / "state"
    now = time.time()
    chief_status = StatusFile(state, "chief", "chief", role="chief", round=7, rounds_total=20,
                              participants=["chief", "pi1"], task_index=0)  # fmt: skip
    chief_status.update(
        state="training",
        last_transfer={"round": 7, "peer": "pi1", "direction": "receive", "bytes": 4096, "at": now - 3},
    )
    ledger = StatusFile(state, "ledger", "chief", backend="embedded")
    ledger.update(state="waiting", height=15, outbox_backlog=2, last_delivery_at=now - 1)
    for component in ("chief", "ledger"):
        container.put(state / "status" / f"{component}.json", f"/var/lib/edgefed/status/{component}.json")
    container.sh("iptables -t nat -A PREROUTING -p tcp --dport 7777 -j DNAT --to-destination :3389")
    # closed to the login users, as the roles leave them (state and keys belong to the service user)
    container.sh("chmod 0750 /var/lib/edgefed /etc/edgefed && chmod 0700 /var/lib/edgefed/status")


def _inventory(tmp_path: Path, container: Container, user_key: Path, user: str = "admin") -> Path:
    inventory = {
        "all": {
            "children": {
                "chief": {
                    "hosts": {
                        "lab-chief": {
                            "ansible_host": container.address,
                            "ansible_user": user,
                            "ansible_ssh_private_key_file": str(user_key),
                            "edgefed_node_name": "chief",
                        }
                    }
                }
            }
        }
    }
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def _status(inventory: Path, known_hosts: Path) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "edgefed.cli", "status", "-i", str(inventory), "--json",
         "--known-hosts", str(known_hosts), "--connect-timeout", "10", "--command-timeout", "30"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.stdout, result.stderr
    doc = json.loads(result.stdout)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, STATUS_SCHEMA)
    return result.returncode, doc


def test_real_systemd_units_and_iptables(chief: tuple[Container, Path, Path], tmp_path: Path) -> None:
    container, user_key, known_hosts = chief
    inventory = _inventory(tmp_path, container, user_key)

    code, doc = _status(inventory, known_hosts)
    host = doc["hosts"][0]
    assert code == 0, host["problems"]
    assert host["units"]["chief"]["active"] == "active"
    assert host["units"]["chief"]["sub"] == "running"
    assert host["units"]["ledger"]["active"] == "active"
    assert host["units"]["worker"]["load"] == "not-found"
    assert host["forwarding"]["present"] is True
    assert host["federation"]["round"] == 7
    assert host["federation"]["last_transfer"]["direction"] == "receive"
    assert host["ledger"]["height"] == 15 and host["ledger"]["outbox_backlog"] == 2

    container.sh("systemctl stop edgefed-ledger")
    container.sh("systemctl kill --signal=KILL edgefed-chief")
    container.sh("for i in $(seq 50); do systemctl is-failed -q edgefed-chief && break; sleep 0.1; done")
    container.sh("iptables -t nat -F PREROUTING")
    code, doc = _status(inventory, known_hosts)
    host = doc["hosts"][0]
    assert code == 1
    assert host["units"]["chief"]["active"] == "failed"
    assert host["units"]["chief"]["result"] == "signal"
    assert host["problems"] == [
        "edgefed-chief.service failed (result: signal)",
        "edgefed-ledger.service is inactive (dead)",
        "no DNAT rule 7777 -> :3389 in nat PREROUTING",
    ]


def test_without_sudo_the_nat_table_is_reported_unreadable(chief: tuple[Container, Path, Path], tmp_path: Path) -> None:
    container, user_key, known_hosts = chief
    container.sh("systemctl start edgefed-chief edgefed-ledger")
    container.sh("iptables -t nat -F PREROUTING")
    container.sh("iptables -t nat -A PREROUTING -p tcp --dport 7777 -j DNAT --to-destination :3389")
    code, doc = _status(_inventory(tmp_path, container, user_key, user="viewer"), known_hosts)
    host = doc["hosts"][0]
    assert code == 1
    assert host["user"] == "viewer"
    assert host["units"]["chief"]["active"] == "active"  # systemctl show needs no privilege
    assert host["forwarding"]["present"] is None
    problems = host["problems"]
    assert any(p.startswith("cannot read the nat table: sudo:") for p in problems), problems
    # without sudo the closed state directory and certificate are unreadable, not missing
    assert any("is not readable by viewer" in p for p in problems), problems
    assert not any("missing" in p for p in problems), problems
