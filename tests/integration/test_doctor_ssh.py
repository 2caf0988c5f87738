# ruff: noqa: F811  (the sshd lab fixtures are imported from test_status_ssh and named as parameters)
"""`edgefed doctor` against real nodes: sshd per node (the lab of test_status_ssh.py), the chief in its own
network namespace with a real listener behind a real DNAT rule, and certificates made by edgefed's PKI
(one from a foreign CA, one issued to start tomorrow, as a Pi whose clock is behind sees it).
Locally (`edgefed doctor --config`), the same checks run without SSH.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgefed import pki
from edgefed.config import dump_config
from tests.integration.test_status_ssh import SSHD, Lab, healthy, lab  # noqa: F401  (fixtures)

pytestmark = [
    pytest.mark.skipif(not SSHD.exists(), reason="openssh-server is not installed (make setup installs it)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="sshd and network namespaces need root"),
]
PRIVATE_PORT = 3389


def issue_in_the_future(pki_dir: Path, name: str, days_ahead: int = 1) -> None:
    """Re-issue NAME's certificate from the CA with notBefore tomorrow."""
    ca_cert = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((pki_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.UTC) + dt.timedelta(days=days_ahead)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=365))
        .sign(ca_key, hashes.SHA256())
    )
    (pki_dir / "nodes" / name / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def node_config(path: Path, name: str, role: str, pki_dir: Path, state_dir: Path, chief_ip: str) -> Path:
    path.write_text(dump_config({
        "node": {"name": name, "role": role, "pki_dir": str(pki_dir), "state_dir": str(state_dir)},
        "federation": {"private_port": PRIVATE_PORT, "public_ip": chief_ip, "public_port": 7777},
    }))
    return path


@pytest.fixture
def clinic(healthy: Lab, tmp_path: Path) -> Iterator[tuple[Lab, Path]]:
    """The lab with its own PKI (chief valid for its public address, pi1 from a foreign CA, pi2 not valid
    until tomorrow), a configuration per node, and a listener on the chief's private port."""
    chief_ip = healthy.chief_ns.node_ip
    deployment, foreign = tmp_path / "pki", tmp_path / "foreign"
    pki.init_ca(deployment)
    pki.init_ca(foreign, "someone else's CA")
    pki.issue_node(deployment, "hub", [chief_ip])
    pki.issue_node(foreign, "pi1", [])
    (deployment / "nodes" / "pi1").mkdir(parents=True)
    for file in ("tls.crt", "tls.key"):
        (deployment / "nodes" / "pi1" / file).write_bytes((foreign / "nodes" / "pi1" / file).read_bytes())
    pki.issue_node(deployment, "pi2", [])
    issue_in_the_future(deployment, "pi2")
    for name in ("hub", "pi1", "pi2"):
        node = healthy.nodes[name]
        node_config(node.root / "edgefed.toml", name, node.role, deployment, node.state_dir, chief_ip)
    listener = subprocess.Popen(
        ["ip", "netns", "exec", healthy.chief_ns.name, sys.executable, "-c",
         f"import socket, time; s = socket.create_server(('0.0.0.0', {PRIVATE_PORT})); print('up', flush=True);"
         " time.sleep(300)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "up"
        overrides = {name: {"edgefed_node_pki_dir": str(deployment),
                            "edgefed_config_file": str(healthy.nodes[name].root / "edgefed.toml")}
                     for name in ("hub", "pi1", "pi2")}
        yield healthy, healthy.inventory(**overrides)
    finally:
        listener.kill()
        listener.wait()


def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "edgefed.cli", "doctor", *args, "--json"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def checks(doc: dict[str, Any], host: str) -> dict[str, dict[str, Any]]:
    [found] = [entry for entry in doc["hosts"] if entry["name"] == host]
    return {check["check"]: check for check in found["checks"]}


def test_doctor_over_ssh_names_each_broken_node_and_its_fix(clinic: tuple[Lab, Path]) -> None:
    lab, inventory = clinic
    code, doc = doctor("-i", str(inventory), "--limit", "hub:pi1:pi2", "--known-hosts", str(lab.known_hosts))
    assert code == 1 and doc["passed"] is False

    hub = checks(doc, "hub")
    for name in ("certificate chain", "certificate validity", "certificate names", "DNAT rule", "ACCEPT rule",
                 "listener", "state directory", "disk space", "ledger outbox"):
        assert hub[name]["ok"] is True, hub[name]
    assert "--dport 7777" in hub["DNAT rule"]["detail"]

    pi1 = checks(doc, "pi1")
    assert pi1["certificate chain"]["ok"] is False
    assert "someone else's CA" not in pi1["certificate chain"]["detail"]  # it names the CA it checked against
    assert "edgefed deployment CA" in pi1["certificate chain"]["detail"]
    fix = pi1["certificate chain"]["fix"]
    assert "different PKIs" in fix and "site.yml --limit pi1" in fix
    assert pi1["chief reachable"]["ok"] is True  # through the chief's DNAT to its listener, from pi1's sshd

    pi2 = checks(doc, "pi2")
    validity = pi2["certificate validity"]
    assert validity["ok"] is False and validity["detail"].startswith("not valid until ")
    assert "clock is behind" in validity["fix"] and "timedatectl set-ntp true" in validity["fix"]
    assert pi2["certificate chain"]["ok"] is True


def test_doctor_reports_a_missing_dnat_rule_on_the_chief_and_the_workers_cannot_reach_it(
    clinic: tuple[Lab, Path],
) -> None:
    lab, inventory = clinic
    lab.chief_ns.iptables("-t", "nat", "-F", "PREROUTING")
    code, doc = doctor("-i", str(inventory), "--limit", "hub:pi1", "--known-hosts", str(lab.known_hosts))
    assert code == 1
    dnat = checks(doc, "hub")["DNAT rule"]
    assert dnat == {
        "check": "DNAT rule", "ok": False, "detail": "no rule forwarding tcp/7777 to :3389 in nat PREROUTING",
        "fix": "ansible-playbook playbooks/chief.yml (role port_forward) or: iptables -t nat -A PREROUTING -p tcp"
        " --dport 7777 -j DNAT --to-destination PRIVATE_IP:3389",
    }
    assert checks(doc, "hub")["listener"]["ok"] is True
    reach = checks(doc, "pi1")["chief reachable"]
    assert reach["ok"] is False and f"{lab.chief_ns.node_ip}:7777" in reach["detail"]


def test_doctor_on_the_node_itself(clinic: tuple[Lab, Path], tmp_path: Path) -> None:
    lab, _ = clinic
    config = lab.nodes["pi2"].root / "edgefed.toml"
    code, doc = doctor("--config", str(config))
    assert code == 1
    pi2 = checks(doc, "pi2")
    assert pi2["certificate validity"]["ok"] is False
    assert pi2["chief reachable"]["ok"] is True  # a TCP connect from here, through the chief's DNAT
    assert pi2["state directory"]["ok"] is True

    text = subprocess.run([sys.executable, "-m", "edgefed.cli", "doctor", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, check=False)
    line = next(line for line in text.stdout.splitlines() if "certificate validity" in line)
    assert line.lstrip().startswith("FAIL") and "→ fix: the clock is behind" in line


def test_doctor_without_a_configuration_is_a_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "edgefed.cli", "doctor", "--config", str(tmp_path / "none.toml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == f"edgefed: error: {tmp_path / 'none.toml'}: configuration file not found"
