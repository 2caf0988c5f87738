"""The pki role on the controller: the edgefed.pki layout, usable by edgefed's own TLS and ledger code."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from ansible_helpers import base_settings, free_port, run_playbook, write_inventory
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgefed import pki
from edgefed.transport import TransportError
from edgefed.transport.mtls import TlsListener, connect_tls
from edgefed.transport.tls import client_context, server_context

PLAYS = ("playbooks/validate.yml", "playbooks/pki.yml")
NODES = ("chief", "pi-1", "pi-2")


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PKI play run twice on one inventory; the second run must change nothing."""
    tmp_path = tmp_path_factory.mktemp("deployed")
    inventory = write_inventory(tmp_path / "hosts.yml", base_settings(tmp_path))
    first = run_playbook(tmp_path, inventory, *PLAYS)
    assert first.returncode == 0, first.output
    root = tmp_path / "pki"
    before = _digests(root)
    second = run_playbook(tmp_path, inventory, "playbooks/pki.yml")
    assert second.returncode == 0, second.output
    assert second.changed() == 0, second.output
    assert _digests(root) == before, "the second run re-issued credentials"
    return root


def _copy_of(deployed: Path, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A private copy of the deployed PKI (tests that change it must not disturb the others)."""
    root = tmp_path / "pki"
    shutil.copytree(deployed, root)
    return root, {**base_settings(tmp_path), "edgefed_pki_dir": str(root)}


def test_layout_and_modes_match_edgefed_pki(deployed: Path) -> None:
    assert (deployed / "ca.key").stat().st_mode & 0o777 == 0o600
    for name in NODES:
        node = deployed / "nodes" / name
        assert {p.name for p in node.iterdir()} == {"tls.crt", "tls.key", "ledger.key", "ledger.pub"}
        assert (node / "tls.key").stat().st_mode & 0o777 == 0o600
        assert (node / "ledger.key").stat().st_mode & 0o777 == 0o600
        creds = pki.NodeCredentials.load(deployed, name)
        cert = creds.certificate()
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == name
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        # ledger.pub is the raw public key of ledger.key, as edgefed.pki writes it.
        assert pki.public_key_hex(creds.ledger_signing_key()) == (node / "ledger.pub").read_text().strip()
    assert sorted(pki.ledger_public_keys(deployed)) == ["chief", "pi-1", "pi-2"]


def test_chief_certificate_names_its_addresses(deployed: Path) -> None:
    cert = pki.NodeCredentials.load(deployed, "chief").certificate()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["chief"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["203.0.113.10", "10.0.0.5"]
    worker = pki.NodeCredentials.load(deployed, "pi-1").certificate()
    assert worker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["pi-1"]


def test_mutual_tls_between_issued_nodes(deployed: Path) -> None:
    """A worker's certificate passes the chief's TLS context and vice versa (edgefed.transport)."""
    chief = pki.NodeCredentials.load(deployed, "chief")
    worker = pki.NodeCredentials.load(deployed, "pi-1")
    listener = TlsListener("127.0.0.1", free_port(), server_context(chief))
    accepted: list[str] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept().peer), daemon=True)
    thread.start()
    try:
        # The worker checks the chief's certificate against the address it dials (a SAN).
        connection = connect_tls("127.0.0.1", listener.port, client_context(worker), server_hostname="chief")
        assert connection.peer == "chief"
        connection.close()
        thread.join(timeout=30)
        assert accepted == ["pi-1"]
    finally:
        listener.close()


def test_new_address_reissues_only_the_chief(tmp_path: Path, deployed: Path) -> None:
    root, settings = _copy_of(deployed, tmp_path)
    before = _digests(root)
    inventory = write_inventory(tmp_path / "hosts.yml", {**settings, "edgefed_public_address": "203.0.113.99"})
    run = run_playbook(tmp_path, inventory, "playbooks/pki.yml")
    assert run.returncode == 0, run.output
    after = _digests(root)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"nodes/chief/tls.crt"}
    names = pki.NodeCredentials.load(root, "chief").certificate().extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "203.0.113.99" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def test_certificates_close_to_expiry_are_renewed(tmp_path: Path, deployed: Path) -> None:
    root, settings = _copy_of(deployed, tmp_path)
    before = _digests(root)
    inventory = write_inventory(tmp_path / "hosts.yml", settings)
    # Valid for 365 days, renewed when fewer than 400 remain: every node certificate, nothing else.
    run = run_playbook(tmp_path, inventory, "playbooks/pki.yml", args=("-e", "pki_renew_days=400"))
    assert run.returncode == 0, run.output
    after = _digests(root)
    renewed = sorted(name for name in after if after[name] != before[name])
    assert renewed == ["nodes/chief/tls.crt", "nodes/pi-1/tls.crt", "nodes/pi-2/tls.crt"]


def test_adopts_a_directory_made_by_edgefed_pki(tmp_path: Path, settings: dict[str, Any]) -> None:
    """`edgefed pki init/issue` and the role write the same layout: the role keeps what is there."""
    root = Path(settings["edgefed_pki_dir"])
    pki.init_ca(root)
    pki.issue_node(root, "chief", ["203.0.113.10", "10.0.0.5"])
    pki.issue_node(root, "pi-1")
    pki.issue_node(root, "pi-2")
    for directory in (root, root / "nodes", *(root / "nodes" / name for name in NODES)):
        directory.chmod(0o700)  # the role's directory mode; only files are compared here
    before = _digests(root)
    run = run_playbook(tmp_path, write_inventory(tmp_path / "hosts.yml", settings), "playbooks/pki.yml")
    assert run.returncode == 0, run.output
    assert run.changed() == 0, run.output
    assert _digests(root) == before


def test_check_mode_on_a_fresh_controller_writes_nothing(tmp_path: Path, settings: dict[str, Any]) -> None:
    run = run_playbook(tmp_path, write_inventory(tmp_path / "hosts.yml", settings), *PLAYS,
                       args=("--check", "--diff"))
    assert run.returncode == 0, run.output
    assert run.changed() > 0
    assert not Path(settings["edgefed_pki_dir"]).exists()


def test_passphrase_protected_ca(tmp_path: Path, settings: dict[str, Any]) -> None:
    inventory = write_inventory(tmp_path / "hosts.yml", {**settings, "pki_ca_passphrase": "s3cret pass"})
    run = run_playbook(tmp_path, inventory, "playbooks/pki.yml")
    assert run.returncode == 0, run.output
    assert "s3cret" not in run.output
    root = Path(settings["edgefed_pki_dir"])
    assert b"ENCRYPTED PRIVATE KEY" in (root / "ca.key").read_bytes()
    pki.NodeCredentials.load(root, "pi-2")  # node keys stay unencrypted: services read them unattended
    assert b"ENCRYPTED" not in (root / "nodes" / "pi-2" / "tls.key").read_bytes()
    # A wrong passphrase must fail, never replace the CA.
    before = (root / "ca.key").read_bytes()
    wrong = write_inventory(tmp_path / "hosts.yml", {**settings, "pki_ca_passphrase": "wrong"})
    run = run_playbook(tmp_path, wrong, "playbooks/pki.yml")
    assert run.returncode != 0
    assert (root / "ca.key").read_bytes() == before


def test_transport_error_for_a_foreign_ca(tmp_path: Path, deployed: Path) -> None:
    """Credentials from another deployment are refused by this deployment's chief."""
    other = tmp_path / "other"
    pki.init_ca(other)
    pki.issue_node(other, "pi-1")
    chief = pki.NodeCredentials.load(deployed, "chief")
    listener = TlsListener("127.0.0.1", free_port(), server_context(chief))
    errors: list[Exception] = []

    def serve() -> None:
        try:
            listener.accept()
        except TransportError as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(TransportError):
            connect_tls("127.0.0.1", listener.port,
                        client_context(pki.NodeCredentials.load(other, "pi-1"), check_hostname=False))
        thread.join(timeout=30)
        assert errors, "the chief accepted a certificate from another CA"
    finally:
        listener.close()
