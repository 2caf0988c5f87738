"""The pki role's CRL: edgefed_pki_revoked becomes a signed crl.pem that edgefed.pki reads, naming the node;
a second run changes nothing; a revocation made with `edgefed pki revoke` survives the role; the CA close
to expiry is warned about."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from ansible_helpers import pki_node_settings, run_playbook, write_inventory
from cryptography import x509

from edgefed import pki


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nodes made their keys and got certificates (the PKI plays once, nothing revoked yet): the
    starting point of every test here, made once for the module (a playbook run costs a minute at load)."""
    tmp_path = tmp_path_factory.mktemp("issued")
    run = run_playbook(tmp_path, write_inventory(tmp_path / "hosts.yml", pki_node_settings(tmp_path)),
                       "tests/ansible/playbooks/pki_nodes.yml")
    assert run.returncode == 0, run.output
    return tmp_path


def _issued_copy(issued: Path, tmp_path: Path) -> dict[str, Any]:
    """A private copy of the issued controller PKI and stand-in nodes (modes kept), and its settings."""
    shutil.copytree(issued / "pki", tmp_path / "pki")
    shutil.copytree(issued / "nodes", tmp_path / "nodes")
    return pki_node_settings(tmp_path)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_revoked_nodes_are_on_a_signed_crl_and_the_run_is_idempotent(issued: Path, tmp_path: Path) -> None:
    # the nodes made their keys and got certificates (the fixture); then pi-2 is revoked
    settings = {**_issued_copy(issued, tmp_path), "edgefed_pki_renew_days": 4000}
    settings["edgefed_pki_revoked"] = ["pi-2"]
    inventory = write_inventory(tmp_path / "hosts.yml", settings)
    first = run_playbook(tmp_path, inventory, "playbooks/validate.yml", "playbooks/pki.yml")
    assert first.returncode == 0, first.output
    root = tmp_path / "pki"
    revocations = pki.load_revocations(root)  # signed by the deployment CA, or this raises
    pi2 = pki.NodeCredentials(root, "pi-2").certificate().serial_number
    assert revocations.serials == {pi2}
    assert revocations.revoked_names == {"pi-2"}
    # the CA (3650 days) is within the 4000 renewal days: a warning, never a new CA
    assert "WARNING: the deployment CA" in first.output

    # a revocation made by hand on the controller stays; the role adds nothing and re-signs nothing
    pki.revoke(root, "pi-1")
    crl = _digest(pki.crl_path(root))
    second = run_playbook(tmp_path, write_inventory(tmp_path / "hosts.yml", {**settings, "edgefed_pki_renew_days": 30}),
                          "playbooks/pki.yml")
    assert second.returncode == 0, second.output
    assert second.changed() == 0, second.output
    assert _digest(pki.crl_path(root)) == crl
    assert pki.load_revocations(root).revoked_names == {"pi-1", "pi-2"}


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def test_a_revoked_node_left_in_the_inventory_is_never_issued_a_certificate(issued: Path, tmp_path: Path) -> None:
    settings = _issued_copy(issued, tmp_path)
    root, nodes = tmp_path / "pki", tmp_path / "nodes"
    old = {name: _serial(root / "nodes" / name / "tls.crt") for name in ("chief", "pi-1", "pi-2")}
    # pi-2 revoked in the inventory, pi-1 by hand on the controller; both stay in the inventory, and
    # 4000 renewal days make every certificate due: only the chief's may be re-issued
    pki.revoke(root, "pi-1")
    revoked = {**settings, "edgefed_pki_revoked": ["pi-2"], "edgefed_pki_renew_days": 4000}
    again = run_playbook(tmp_path, write_inventory(tmp_path / "hosts.yml", revoked),
                         "tests/ansible/playbooks/pki_nodes.yml")
    assert again.returncode == 0, again.output
    for name in ("pi-1", "pi-2"):
        assert _serial(root / "nodes" / name / "tls.crt") == old[name], f"{name} was re-issued"
        assert _serial(nodes / name / "nodes" / name / "tls.crt") == old[name], f"{name} got a new certificate"
        assert f"WARNING: {name} is revoked" in again.output
    assert _serial(root / "nodes" / "chief" / "tls.crt") != old["chief"], "the renewal did not run"
    revocations = pki.load_revocations(root)
    assert revocations.serials == {old["pi-1"], old["pi-2"]}
    assert revocations.revoked_names == {"pi-1", "pi-2"}
