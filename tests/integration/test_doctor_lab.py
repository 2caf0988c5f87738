"""`edgefed doctor -i` against lab nodes: two containers of the lab's image (molecule/image/build.sh:
systemd as PID 1, OpenSSH, login user `admin` with sudo, real iptables), a chief and a Pi on an internal
Docker network of the test's own, deployed by hand the way the roles leave a node (configuration,
certificates from edgefed's PKI, the chief's DNAT rule 7777 -> 3389 and a listener on 3389).

Then one thing at a time is broken as it breaks in the field, and the doctor must name it with the fix:
- the Pi's clock two days behind (a Pi has no RTC): `date` on the node says so, as the probe reads it
  (a wrapper in /usr/local/bin: a container cannot set the kernel clock it shares with the host);
- the Pi given another deployment's CA;
- the chief's DNAT rule removed (the Pi can no longer reach the chief either).
tests/integration/test_doctor_ssh.py covers the same checks against sshd in network namespaces.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefed import pki
from edgefed.config import dump_config
from tests.integration.test_status_lab import Container, _boot, _docker, _image

pytestmark = [pytest.mark.lab, pytest.mark.slow]

# Containers and network are named PREFIX-...-PID (a session sharing the machine sets its own prefix).
PREFIX = os.environ.get("EDGEFED_TEST_DOCKER_PREFIX", "edgefed-doctor")
BEHIND = 2 * 86400  # seconds the broken clock is behind
DATE_BEHIND = f"""#!/bin/sh
# the Pi's clock, {BEHIND} s behind (test_doctor_lab.py)
if [ "$1" = "+%s" ]; then echo $(( $(/bin/date +%s) - {BEHIND} )); else exec /bin/date "$@"; fi
"""


@dataclass
class Clinic:
    chief: Container
    pi: Container
    key: Path
    known_hosts: Path
    inventory: Path
    foreign_ca: Path


def _deploy(node: Container, name: str, role: str, pki_dir: Path, chief_ip: str, root: Path) -> None:
    """What edgefed_install leaves on a node: the configuration, its certificate and the CA, a state dir."""
    config = root / f"{name}.toml"
    config.write_text(dump_config({
        "node": {"name": name, "role": role, "pki_dir": "/etc/edgefed/pki", "state_dir": "/var/lib/edgefed"},
        "federation": {"private_ip": chief_ip, "private_port": 3389, "public_ip": chief_ip, "public_port": 7777},
    }))
    node.put(config, "/etc/edgefed/edgefed.toml")
    node.put(pki_dir / "ca.crt", "/etc/edgefed/pki/ca.crt")
    node.put(pki_dir / "nodes" / name / "tls.crt", f"/etc/edgefed/pki/nodes/{name}/tls.crt")
    # as the roles leave them: the state directory the service user's alone, the configuration and
    # the PKI closed to other users (the doctor reads them, and writes its probe file, through sudo)
    node.sh("useradd --system --user-group --no-create-home edgefed"
            " && install -d -o edgefed -g edgefed -m 0750 /var/lib/edgefed"
            " && chgrp -R edgefed /etc/edgefed && chmod -R o-rwx /etc/edgefed")


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    image = _image()
    root = tmp_path_factory.mktemp("doctor-lab")
    tag = f"{PREFIX}-{os.getpid()}"
    names = {"chief": f"{tag}-chief", "pi1": f"{tag}-pi1"}
    _docker("network", "create", "--internal", tag)  # no way out, like the lab
    try:
        for role, name in names.items():
            caps = ["--cap-add", "NET_ADMIN"] if role == "chief" else []
            _docker("run", "-d", "--name", name, "--hostname", role, "--network", tag, "--tmpfs", "/run",
                    "--tmpfs", "/run/lock", "--tmpfs", "/tmp", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
                    "--cgroupns=host", *caps, image)
        nodes = {}
        for role, name in names.items():
            address = _docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name)
            nodes[role] = Container(name, address.strip())
            _boot(nodes[role])
        yield _prepare(nodes["chief"], nodes["pi1"], root)
    finally:
        for name in names.values():
            _docker("rm", "-f", name, check=False)
        _docker("network", "rm", tag, check=False)


def _prepare(chief: Container, pi: Container, root: Path) -> Clinic:
    key = root / "id_operator"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known = []
    for node in (chief, pi):
        node.sh("install -d -m 0700 -o admin -g admin /home/admin/.ssh")
        _docker("exec", "-i", "-u", "admin", node.name, "sh", "-c", "cat > /home/admin/.ssh/authorized_keys",
                input_text=key.with_suffix(".pub").read_text())
        host_key = node.sh("cat /etc/ssh/ssh_host_ed25519_key.pub").split()
        known.append(f"{node.address} {host_key[0]} {host_key[1]}\n")
    known_hosts = root / "known_hosts"
    known_hosts.write_text("".join(known))

    pki_dir, foreign = root / "pki", root / "foreign"
    pki.init_ca(pki_dir)
    pki.init_ca(foreign, "another deployment's CA")
    pki.issue_node(pki_dir, "chief", [chief.address])
    pki.issue_node(pki_dir, "pi1", [])
    _deploy(chief, "chief", "chief", pki_dir, chief.address, root)
    _deploy(pi, "pi1", "worker", pki_dir, chief.address, root)
    # the chief: its listener on 3389 (a stand-in for edgefed-chief) and the port_forward role's rule
    chief.sh("systemd-run --unit edgefed-listener nc -lk 3389")
    chief.sh(f"iptables -t nat -A PREROUTING -p tcp --dport 7777 -j DNAT --to-destination {chief.address}:3389")

    inventory = root / "hosts.yml"
    common = {"ansible_user": "admin", "ansible_ssh_private_key_file": str(key)}
    inventory.write_text(yaml.safe_dump({"all": {"children": {
        "chief": {"hosts": {"chief": {"ansible_host": chief.address, **common}}},
        "workers": {"hosts": {"pi1": {"ansible_host": pi.address, **common}}},
    }}}))
    return Clinic(chief, pi, key, known_hosts, inventory, foreign / "ca.crt")


def _doctor(clinic: Clinic) -> tuple[int, dict[str, dict[str, dict[str, Any]]], str]:
    """(exit status, {host: {check: check}}, the text report)."""
    base = [sys.executable, "-m", "edgefed.cli", "doctor", "-i", str(clinic.inventory),
            "--known-hosts", str(clinic.known_hosts)]
    result = subprocess.run([*base, "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert result.stdout, result.stderr
    doc = json.loads(result.stdout)
    checks = {host["name"]: {check["check"]: check for check in host["checks"]} for host in doc["hosts"]}
    text = subprocess.run(base, capture_output=True, text=True, timeout=120, check=False).stdout
    return result.returncode, checks, text


def _line(text: str, host: str, check: str) -> str:
    """The text report's line for one check of one host."""
    section = text.split(f"{host} (", 1)[1]
    return next(line for line in section.splitlines() if f"  {check}: " in line)


def test_a_healthy_lab_node(clinic: Clinic) -> None:
    _, checks, _ = _doctor(clinic)
    for name in ("certificate chain", "certificate validity", "certificate names", "DNAT rule", "listener",
                 "state directory", "disk space"):
        assert checks["chief"][name]["ok"] is True, checks["chief"][name]
    for name in ("certificate chain", "certificate validity", "chief reachable", "state directory"):
        assert checks["pi1"][name]["ok"] is True, checks["pi1"][name]
    # the clock agrees with this machine's (whether the shared kernel clock is NTP-synced is the host's matter)
    assert "behind" not in checks["pi1"]["clock"]["detail"]


def test_a_state_directory_the_service_user_cannot_write(clinic: Clinic) -> None:
    clinic.pi.sh("chown root:root /var/lib/edgefed")
    try:
        code, checks, _ = _doctor(clinic)
    finally:
        clinic.pi.sh("chown edgefed:edgefed /var/lib/edgefed")
    assert code == 1
    state = checks["pi1"]["state directory"]
    assert state == {"check": "state directory", "ok": False, "detail": "/var/lib/edgefed: not writable by edgefed",
                     "fix": "chown -R edgefed: /var/lib/edgefed (the services write there)"}


def test_a_pi_whose_clock_is_behind(clinic: Clinic, tmp_path: Path) -> None:
    wrapper = tmp_path / "date"
    wrapper.write_text(DATE_BEHIND)
    clinic.pi.put(wrapper, "/usr/local/bin/date")
    clinic.pi.sh("chmod 0755 /usr/local/bin/date")
    try:
        code, checks, text = _doctor(clinic)
    finally:
        clinic.pi.sh("rm -f /usr/local/bin/date")
    assert code == 1
    clock = checks["pi1"]["clock"]
    assert clock["ok"] is False and clock["detail"].startswith("the node's clock is ")
    assert clock["detail"].endswith("s behind this machine's")
    assert abs(int(clock["detail"].split()[4].rstrip("s")) - BEHIND) < 120
    assert "timedatectl set-ntp true" in clock["fix"]
    validity = checks["pi1"]["certificate validity"]
    assert validity["ok"] is False and validity["detail"].startswith("not valid until ")
    assert validity["fix"].startswith("the clock is behind")
    line = _line(text, "pi1", "clock")
    assert line.lstrip().startswith("FAIL") and "→ fix: enable time sync: timedatectl set-ntp true" in line
    assert checks["chief"]["clock"]["ok"] is not False or "behind" not in checks["chief"]["clock"]["detail"]


def test_a_pi_with_another_deployments_ca(clinic: Clinic) -> None:
    clinic.pi.sh("cp /etc/edgefed/pki/ca.crt /root/ca.crt.good")
    clinic.pi.put(clinic.foreign_ca, "/etc/edgefed/pki/ca.crt")
    clinic.pi.sh("chmod a+r /etc/edgefed/pki/ca.crt")
    try:
        code, checks, text = _doctor(clinic)
    finally:
        clinic.pi.sh("cp /root/ca.crt.good /etc/edgefed/pki/ca.crt")
    assert code == 1
    chain = checks["pi1"]["certificate chain"]
    assert chain["ok"] is False
    assert chain["detail"].startswith("/etc/edgefed/pki/nodes/pi1/tls.crt is not signed by the CA in"
                                      " /etc/edgefed/pki/ca.crt (another deployment's CA)")
    assert chain["fix"].startswith("the certificate and ca.crt come from different PKIs: re-issue it")
    assert "site.yml --limit pi1" in chain["fix"]
    assert checks["chief"]["certificate chain"]["ok"] is True
    assert "→ fix: the certificate and ca.crt come from different PKIs" in _line(text, "pi1", "certificate chain")


def test_a_chief_without_its_dnat_rule(clinic: Clinic) -> None:
    rule = f"-p tcp --dport 7777 -j DNAT --to-destination {clinic.chief.address}:3389"
    clinic.chief.sh(f"iptables -t nat -D PREROUTING {rule}")
    try:
        code, checks, text = _doctor(clinic)
    finally:
        clinic.chief.sh(f"iptables -t nat -A PREROUTING {rule}")
    assert code == 1
    assert checks["chief"]["DNAT rule"] == {
        "check": "DNAT rule", "ok": False, "detail": "no rule forwarding tcp/7777 to :3389 in nat PREROUTING",
        "fix": "ansible-playbook playbooks/chief.yml (role port_forward) or: iptables -t nat -A PREROUTING -p tcp"
        " --dport 7777 -j DNAT --to-destination PRIVATE_IP:3389",
    }
    assert checks["chief"]["listener"]["ok"] is True  # the service is up: only the forwarding is gone
    reach = checks["pi1"]["chief reachable"]
    assert reach["ok"] is False and f"cannot open TCP to {clinic.chief.address}:7777" in reach["detail"]
    assert "DNAT rule" in reach["fix"]
    assert "→ fix: ansible-playbook playbooks/chief.yml (role port_forward)" in _line(text, "chief", "DNAT rule")
