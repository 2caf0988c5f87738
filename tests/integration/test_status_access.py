# ruff: noqa: F811  (the sshd lab fixtures are imported from test_status_ssh and named as parameters)
"""`edgefed status` reaching nodes the way an operator's setup does: a vault-encrypted inventory, a Pi
behind NAT reached through a ProxyJump host (from the inventory's ssh args or from ssh_config), the
inventory named by ANSIBLE_INVENTORY, and a table piped to a file at full width.

The nodes are real sshd (the lab of test_status_ssh.py). The NAT'd Pi's sshd listens on the loopback
of the chief's network namespace: only the chief's own sshd (the jump host) can reach it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgefed import pki
from tests.integration.test_status_ssh import (  # noqa: F401  (lab and healthy are fixtures)
    SSHD,
    Lab,
    Node,
    _hosts,
    _write_status_files,
    edgefed_status,
    healthy,
    lab,
    status_json,
)

pytestmark = [
    pytest.mark.skipif(not SSHD.exists(), reason="openssh-server is not installed (make setup installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="sshd and network namespaces need root"),
]
ANSIBLE_VAULT = Path(sys.executable).parent / "ansible-vault"


@pytest.fixture
def nat_pi(healthy: Lab) -> Iterator[Node]:
    """A worker whose sshd only listens inside the chief's namespace, on its loopback."""
    node = Node("pinat", "worker", healthy.root / f"pinat-{time.monotonic_ns()}", netns=healthy.chief_ns,
                netns_loopback=True)
    if not (healthy.pki_dir / "nodes" / "pinat" / "tls.crt").exists():
        pki.issue_node(healthy.pki_dir, "pinat", [])
    node.start_sshd(healthy.root / "authorized_keys", healthy.root / "systemctl-double")
    try:
        node.set_unit("worker")
        node.set_unit("ledger")
        _write_status_files(node, time.time())
        yield node
    finally:
        node.stop()


def _known_hosts(lab: Lab, node: Node, tmp_path: Path) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(lab.known_hosts.read_text() + node.known_hosts_line())
    return path


def test_pi_behind_nat_through_proxyjump_in_the_inventory(healthy: Lab, nat_pi: Node, tmp_path: Path) -> None:
    jump = f"root@{healthy.chief_ns.node_ip}:2222"
    inventory = healthy.inventory(extra_hosts={"pinat": {
        "ansible_host": "127.0.0.1", "ansible_port": nat_pi.port, "edgefed_state_dir": str(nat_pi.state_dir),
        "ansible_ssh_common_args": f"-o ProxyJump={jump}",
    }})
    known_hosts = _known_hosts(healthy, nat_pi, tmp_path)
    code, doc = status_json("-i", str(inventory), "--limit", "pinat", known_hosts=known_hosts)
    pinat = _hosts(doc)["pinat"]
    assert code == 0, pinat["problems"]
    assert pinat["federation"]["round"] == 3

    # Without the jump, 127.0.0.1:2200 on this side of the namespace is nobody: unreachable.
    direct = healthy.inventory(extra_hosts={"pinat": {"ansible_host": "127.0.0.1", "ansible_port": nat_pi.port}})
    code, doc = status_json("-i", str(direct), "--limit", "pinat", known_hosts=known_hosts)
    assert code == 1
    assert _hosts(doc)["pinat"]["failure"]["kind"] == "unreachable"


def test_pi_behind_nat_through_ssh_config(healthy: Lab, nat_pi: Node, tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host pinat.nat\n  HostName 127.0.0.1\n  ProxyJump root@{healthy.chief_ns.node_ip}:2222\n"
    )
    inventory = healthy.inventory(extra_hosts={"pinat": {
        "ansible_host": "pinat.nat", "ansible_port": nat_pi.port, "edgefed_state_dir": str(nat_pi.state_dir),
    }})
    code, doc = status_json("-i", str(inventory), "--limit", "pinat", "--ssh-config", str(ssh_config),
                            known_hosts=_known_hosts(healthy, nat_pi, tmp_path))
    assert code == 0, _hosts(doc)["pinat"]["problems"]


def test_broken_jump_host_is_named_in_the_failure(healthy: Lab, nat_pi: Node, tmp_path: Path) -> None:
    inventory = healthy.inventory(extra_hosts={"pinat": {
        "ansible_host": "127.0.0.1", "ansible_port": nat_pi.port, "ansible_ssh_common_args": "-J root@127.0.0.1:1",
    }})
    known_hosts = _known_hosts(healthy, nat_pi, tmp_path)
    code, doc = status_json("-i", str(inventory), "--limit", "pinat", known_hosts=known_hosts)
    failure = _hosts(doc)["pinat"]["failure"]
    assert code == 1
    assert failure["kind"] == "unreachable"
    assert failure["message"].startswith("via ProxyJump root@127.0.0.1:1: cannot connect to 127.0.0.1:1")


def _vault_encrypt(path: Path, password_file: Path) -> None:
    subprocess.run([str(ANSIBLE_VAULT), "encrypt", "--vault-password-file", str(password_file), str(path)],
                   check=True, capture_output=True)
    assert path.read_text().startswith("$ANSIBLE_VAULT;")


def test_vault_encrypted_inventory(healthy: Lab, tmp_path: Path) -> None:
    inventory = healthy.inventory()
    password = tmp_path / "vault-pass"
    password.write_text("correct horse battery staple\n")
    _vault_encrypt(inventory / "host_vars" / "pi1.yml", password)  # pi1's edgefed_state_dir is a secret now
    args = ("-i", str(inventory), "--limit", "pi1")

    refused = edgefed_status(*args, known_hosts=healthy.known_hosts)
    assert refused.returncode == 2
    assert "--vault-password-file" in refused.stderr and "Traceback" not in refused.stderr

    code, doc = status_json(*args, "--vault-password-file", str(password), known_hosts=healthy.known_hosts)
    assert code == 0, _hosts(doc)["pi1"]["problems"]

    env = {**os.environ, "ANSIBLE_VAULT_PASSWORD_FILE": str(password)}
    by_env = subprocess.run(
        [sys.executable, "-m", "edgefed.cli", "status", *args, "--json", "--known-hosts", str(healthy.known_hosts)],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )
    assert by_env.returncode == 0, by_env.stdout + by_env.stderr
    assert json.loads(by_env.stdout)["hosts"][0]["healthy"] is True


def test_inventory_from_ansible_inventory_and_full_width_table(healthy: Lab) -> None:
    long_name = "pi-rack-b-shelf-3-slot-12-behind-the-second-switch"
    inventory = healthy.inventory(extra_hosts={long_name: {"ansible_host": "127.0.0.1", "ansible_port": 1}})
    env = {**os.environ, "ANSIBLE_INVENTORY": str(inventory), "COLUMNS": "80"}
    result = subprocess.run(
        [sys.executable, "-m", "edgefed.cli", "status", "--limit", f"pi1:{long_name}",
         "--known-hosts", str(healthy.known_hosts), "--connect-timeout", "5"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )
    assert result.returncode == 1, result.stderr
    rows = [line for line in result.stdout.splitlines() if long_name in line]
    assert rows, result.stdout  # the whole name on one line: the piped table is not cut to 80 columns
    assert "unreachable" in rows[0]
    assert "cannot connect to 127.0.0.1:1: Connection refused" in result.stdout  # the problem, unbroken
    assert "1/2 hosts healthy" in result.stdout
