"""The pki role: the CA on the controller, each node's keys made on the node (local directories stand in
for the nodes) and its certificate signed from its request; the edgefed.pki layout, usable by edgefed's
own TLS and ledger code; no node private key ever on the controller."""

from __future__ import annotations

import hashlib
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from ansible_helpers import free_port, pki_node_settings, run_playbook, write_inventory
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgefed import pki
from edgefed.transport import TransportError
from edgefed.transport.mtls import TlsListener, connect_tls
from edgefed.transport.tls import client_context, server_context

PLAYS = ("tests/ansible/playbooks/pki_nodes.yml",)
NODES = ("chief", "pi-1", "pi-2")


@pytest.fixture
def settings(tmp_path: Path) -> dict[str, Any]:
    """Valid appliance settings with the PKI and the stand-in nodes in a temporary directory."""
    return pki_node_settings(tmp_path)


def _changed(run: Any) -> int:
    return sum(counts["changed"] for counts in run.recap().values())


def _node(root: Path, name: str) -> Path:
    """A stand-in node's PKI directory beside the controller's (tmp/pki -> tmp/nodes/NAME)."""
    return root.parent / "nodes" / name


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PKI plays run twice on one inventory; the second run must change nothing, here or on the nodes."""
    tmp_path = tmp_path_factory.mktemp("deployed")
    inventory = write_inventory(tmp_path / "hosts.yml", pki_node_settings(tmp_path))
    first = run_playbook(tmp_path, inventory, *PLAYS)
    assert first.returncode == 0, first.output
    before = _digests(tmp_path)
    second = run_playbook(tmp_path, inventory, *PLAYS)
    assert second.returncode == 0, second.output
    assert _changed(second) == 0, second.output
    assert _digests(tmp_path) == before, "the second run re-issued credentials"
    return tmp_path / "pki"


def _copy_of(deployed: Path, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A private copy of the deployed PKI and its nodes (tests that change it must not disturb the others)."""
    root = tmp_path / "pki"
    shutil.copytree(deployed, root)
    shutil.copytree(deployed.parent / "nodes", tmp_path / "nodes")
    return root, pki_node_settings(tmp_path)


def test_layout_and_modes_match_edgefed_pki(deployed: Path) -> None:
    assert (deployed / "ca.key").stat().st_mode & 0o777 == 0o600
    # the controller keeps the CA key and the nodes' public halves only
    assert [str(p.relative_to(deployed)) for p in deployed.rglob("*.key")] == ["ca.key"]
    for name in NODES:
        assert {p.name for p in (deployed / "nodes" / name).iterdir()} == {"tls.crt", "ledger.pub"}
        node_root = _node(deployed, name)
        node = node_root / "nodes" / name
        assert {p.name for p in node.iterdir()} == {"tls.crt", "tls.key", "ledger.key", "ledger.pub"}
        assert (node / "tls.key").stat().st_mode & 0o777 == 0o600
        assert (node / "ledger.key").stat().st_mode & 0o777 == 0o600
        assert (node / "tls.crt").read_bytes() == (deployed / "nodes" / name / "tls.crt").read_bytes()
        assert (node / "ledger.pub").read_bytes() == (deployed / "nodes" / name / "ledger.pub").read_bytes()
        creds = pki.NodeCredentials.load(node_root, name)
        cert = creds.certificate()
        assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == name
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        # ledger.pub is the raw public key of ledger.key, as edgefed.pki writes it.
        assert pki.public_key_hex(creds.ledger_signing_key()) == (node / "ledger.pub").read_text().strip()
    assert sorted(pki.ledger_public_keys(deployed)) == ["chief", "pi-1", "pi-2"]
    # the chief verifies every node's records: it has the workers' ledger public keys
    assert sorted(pki.ledger_public_keys(_node(deployed, "chief"))) == ["chief", "pi-1", "pi-2"]


def test_chief_certificate_names_its_addresses(deployed: Path) -> None:
    cert = pki.NodeCredentials(deployed, "chief").certificate()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["chief"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["203.0.113.10", "10.0.0.5"]
    worker = pki.NodeCredentials(deployed, "pi-1").certificate()
    assert worker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["pi-1"]


def test_mutual_tls_between_issued_nodes(deployed: Path) -> None:
    """A worker's certificate passes the chief's TLS context and vice versa (edgefed.transport)."""
    chief = pki.NodeCredentials.load(_node(deployed, "chief"), "chief")
    worker = pki.NodeCredentials.load(_node(deployed, "pi-1"), "pi-1")
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
    run = run_playbook(tmp_path, inventory, *PLAYS)
    assert run.returncode == 0, run.output
    after = _digests(root)
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"nodes/chief/tls.crt"}
    names = pki.NodeCredentials.load(_node(root, "chief"), "chief").certificate().extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert "203.0.113.99" in [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]


def test_certificates_close_to_expiry_are_renewed(tmp_path: Path, deployed: Path) -> None:
    root, settings = _copy_of(deployed, tmp_path)
    inventory = write_inventory(tmp_path / "hosts.yml", settings)
    before = _digests(tmp_path)
    # Valid for 365 days, renewed when fewer than 400 remain: every node certificate, on the controller
    # and on its node, nothing else (the nodes' keys stay: the same key is signed again).
    run = run_playbook(tmp_path, inventory, *PLAYS, args=("-e", "pki_renew_days=400"))
    assert run.returncode == 0, run.output
    after = _digests(tmp_path)
    renewed = sorted(name for name in after if after[name] != before.get(name) and not name.startswith("ansible-tmp"))
    assert renewed == sorted([f"pki/nodes/{n}/tls.crt" for n in NODES]
                             + [f"nodes/{n}/nodes/{n}/tls.crt" for n in NODES])
    # the renewed certificates keep the service working: mutual TLS between the renewed nodes
    _handshake(pki.NodeCredentials.load(_node(root, "chief"), "chief"),
               pki.NodeCredentials.load(_node(root, "pi-1"), "pi-1"))


def _handshake(chief: pki.NodeCredentials, worker: pki.NodeCredentials) -> None:
    listener = TlsListener("127.0.0.1", free_port(), server_context(chief))
    accepted: list[str] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept().peer), daemon=True)
    thread.start()
    try:
        connect_tls("127.0.0.1", listener.port, client_context(worker), server_hostname="chief").close()
        thread.join(timeout=30)
        assert accepted == [worker.name]
    finally:
        listener.close()


def test_adopts_a_directory_made_by_edgefed_pki(tmp_path: Path, settings: dict[str, Any]) -> None:
    """`edgefed pki init` and the role write the same CA: the role keeps what is there."""
    root = Path(settings["edgefed_pki_dir"])
    pki.init_ca(root)
    root.chmod(0o700)  # the role's directory mode; only files are compared here
    (root / "nodes").mkdir(mode=0o700)
    before = _digests(root)
    run = run_playbook(tmp_path, write_inventory(tmp_path / "hosts.yml", settings), "playbooks/pki.yml")
    assert run.returncode == 0, run.output
    assert run.changed() == 0, run.output
    assert _digests(root) == before


def test_a_node_key_is_kept_and_the_controller_holds_none(tmp_path: Path, deployed: Path) -> None:
    """A node whose key exists (made by `edgefed pki keygen` on it) keeps it; its certificate is for that key."""
    root, settings = _copy_of(deployed, tmp_path)
    shutil.rmtree(_node(root, "pi-2"))
    from edgefed.pki_requests import ensure_node_keys

    ensure_node_keys(_node(root, "pi-2"), "pi-2")
    key = (_node(root, "pi-2") / "nodes" / "pi-2" / "tls.key").read_bytes()
    run = run_playbook(tmp_path, write_inventory(tmp_path / "hosts.yml", settings), *PLAYS)
    assert run.returncode == 0, run.output
    creds = pki.NodeCredentials.load(_node(root, "pi-2"), "pi-2")
    assert creds.key.read_bytes() == key
    assert creds.key.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in root.rglob("*.key")] == ["ca.key"]
    _handshake(pki.NodeCredentials.load(_node(root, "chief"), "chief"), creds)


def test_check_mode_on_a_fresh_controller_writes_nothing(tmp_path: Path, settings: dict[str, Any]) -> None:
    run = run_playbook(tmp_path, write_inventory(tmp_path / "hosts.yml", settings), *PLAYS,
                       args=("--check", "--diff"))
    assert run.returncode == 0, run.output
    assert run.changed() > 0
    assert not Path(settings["edgefed_pki_dir"]).exists()
    assert not (tmp_path / "nodes").exists()


def test_passphrase_protected_ca(tmp_path: Path, settings: dict[str, Any]) -> None:
    inventory = write_inventory(tmp_path / "hosts.yml", {**settings, "pki_ca_passphrase": "s3cret pass"})
    run = run_playbook(tmp_path, inventory, *PLAYS)
    assert run.returncode == 0, run.output
    assert "s3cret" not in run.output
    root = Path(settings["edgefed_pki_dir"])
    assert b"ENCRYPTED PRIVATE KEY" in (root / "ca.key").read_bytes()
    pki.NodeCredentials.load(_node(root, "pi-2"), "pi-2")  # node keys stay unencrypted: services read them unattended
    assert b"ENCRYPTED" not in (_node(root, "pi-2") / "nodes" / "pi-2" / "tls.key").read_bytes()
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
    chief = pki.NodeCredentials.load(_node(deployed, "chief"), "chief")
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
