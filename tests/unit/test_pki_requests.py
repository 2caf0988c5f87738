"""Node keys made on the node, certificates signed from requests (edgefed.pki_requests and `edgefed pki
keygen|csr|sign`): the controller's directory never holds a node private key, and the signer refuses a
request that is not exactly what the node may ask for, in one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgefed import pki
from edgefed.pki_requests import ensure_node_keys, node_request, sign_request
from edgefed.transport import free_port
from edgefed.transport.mtls import TlsListener, connect_tls
from edgefed.transport.tls import client_context, server_context


def _edgefed(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "edgefed", *args], input=stdin, capture_output=True, timeout=60)


@pytest.fixture
def controller(tmp_path: Path) -> Path:
    root = tmp_path / "controller"
    pki.init_ca(root)
    return root


def _node(tmp_path: Path, controller: Path, name: str) -> Path:
    """A node's own PKI directory: its keys made there, the CA certificate copied in."""
    root = tmp_path / name
    ensure_node_keys(root, name)
    shutil.copy(controller / "ca.crt", root / "ca.crt")
    return root


def _install(controller: Path, node: Path, name: str) -> None:
    shutil.copy(controller / "nodes" / name / "tls.crt", node / "nodes" / name / "tls.crt")


def test_keygen_makes_private_keys_once_with_mode_0600(tmp_path: Path) -> None:
    node = tmp_path / "pi-1"
    assert ensure_node_keys(node, "pi-1") == ["tls.key", "ledger.key", "ledger.pub"]
    creds = pki.NodeCredentials(node, "pi-1")
    for key in (creds.key, creds.ledger_key):
        assert key.stat().st_mode & 0o777 == 0o600
    before = {p.name: p.read_bytes() for p in creds.node_dir.iterdir()}
    assert ensure_node_keys(node, "pi-1") == []  # kept: a second run changes nothing
    assert {p.name: p.read_bytes() for p in creds.node_dir.iterdir()} == before
    assert pki.public_key_hex(creds.ledger_signing_key()) == creds.ledger_pub.read_text().strip()


def test_signed_request_gives_working_mutual_tls_and_no_key_on_the_controller(tmp_path: Path,
                                                                              controller: Path) -> None:
    chief, worker = _node(tmp_path, controller, "chief"), _node(tmp_path, controller, "pi-1")
    assert sign_request(controller, "chief", node_request(chief, "chief", ["10.0.0.5"]), ["10.0.0.5"]) == "issued"
    assert sign_request(controller, "pi-1", node_request(worker, "pi-1")) == "issued"
    _install(controller, chief, "chief")
    _install(controller, worker, "pi-1")
    assert [p.name for p in controller.rglob("*.key")] == ["ca.key"]
    server = server_context(pki.NodeCredentials.load(chief, "chief"))
    listener = TlsListener("127.0.0.1", free_port("127.0.0.1"), server)
    accepted: list[str] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept().peer), daemon=True)
    thread.start()
    try:
        connection = connect_tls("127.0.0.1", listener.port, client_context(pki.NodeCredentials.load(worker, "pi-1")),
                                 server_hostname="10.0.0.5")
        assert connection.peer == "chief"
        connection.close()
        thread.join(timeout=30)
        assert accepted == ["pi-1"]
    finally:
        listener.close()


def test_a_matching_certificate_is_kept_and_renewal_re_signs_the_same_key(tmp_path: Path, controller: Path) -> None:
    node = _node(tmp_path, controller, "pi-1")
    assert sign_request(controller, "pi-1", node_request(node, "pi-1")) == "issued"
    cert = controller / "nodes" / "pi-1" / "tls.crt"
    first = cert.read_bytes()
    # a fresh request (ECDSA signatures differ each time) for the same key and names: nothing to do
    assert sign_request(controller, "pi-1", node_request(node, "pi-1"), renew_days=30) == "kept"
    assert sign_request(controller, "pi-1", node_request(node, "pi-1"), renew_days=400, dry_run=True) == "would issue"
    assert cert.read_bytes() == first
    assert sign_request(controller, "pi-1", node_request(node, "pi-1"), renew_days=400) == "issued"
    renewed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert renewed.serial_number != x509.load_pem_x509_certificate(first).serial_number
    assert renewed.public_key() == x509.load_pem_x509_certificate(first).public_key()  # the node's key stays
    # a new address for the node: its certificate follows
    assert sign_request(controller, "pi-1", node_request(node, "pi-1", ["pi-1.lan"]), ["pi-1.lan"]) == "issued"


def _tampered_request(node: Path) -> bytes:
    """pi-1's request with another key put in place of its own: the signature no longer matches."""
    der = x509.load_pem_x509_csr(node_request(node, "pi-1")).public_bytes(serialization.Encoding.DER)
    own = serialization.load_pem_private_key((node / "nodes" / "pi-1" / "tls.key").read_bytes(), None).public_key()
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    swapped = der.replace(own.public_bytes(*fmt), other.public_bytes(*fmt))
    return x509.load_der_x509_csr(swapped).public_bytes(serialization.Encoding.PEM)


def _request_with_ca_flag(node: Path) -> bytes:
    key = serialization.load_pem_private_key((node / "nodes" / "pi-1" / "tls.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pi-1")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("pi-1")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong name", "the request names 'CN=pi-1', not CN=pi-2"),
        ("extra san", "not allowed: 10.9.9.9"),
        ("other key", "is not signed by the key it carries"),
        ("ca flag", "which the signer sets itself"),
        ("garbage", "is not a PEM certificate signing request"),
    ],
)
def test_the_signer_refuses_a_request_in_one_line(tmp_path: Path, controller: Path, case: str, message: str) -> None:
    node = _node(tmp_path, controller, "pi-1")
    name, request = {
        "wrong name": ("pi-2", lambda: node_request(node, "pi-1")),
        "extra san": ("pi-1", lambda: node_request(node, "pi-1", ["10.9.9.9"])),
        "other key": ("pi-1", lambda: _tampered_request(node)),
        "ca flag": ("pi-1", lambda: _request_with_ca_flag(node)),
        "garbage": ("pi-1", lambda: b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"),
    }[case]
    result = _edgefed("pki", "sign", "--pki", str(controller), name, stdin=request())
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (controller / "nodes" / name / "tls.crt").exists()


def test_the_cli_round_trip_and_a_protected_ca(tmp_path: Path, controller: Path) -> None:
    node = tmp_path / "pi-1"
    made = _edgefed("pki", "keygen", "--pki", str(node), "pi-1")
    assert made.returncode == 0 and b"created tls.key" in made.stdout
    assert _edgefed("pki", "keygen", "--pki", str(node), "pi-1").stdout.strip() == b"pi-1: keys kept"
    request = _edgefed("pki", "csr", "--pki", str(node), "pi-1", "--san", "10.0.0.7")
    assert request.returncode == 0, request.stderr
    # the CA key encrypted: the passphrase comes from the environment, as the pki role hands it over
    ca_key = serialization.load_pem_private_key((controller / "ca.key").read_bytes(), None)
    (controller / "ca.key").write_bytes(ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    refused = _edgefed("pki", "sign", "--pki", str(controller), "pi-1", "--san", "10.0.0.7", stdin=request.stdout)
    assert refused.returncode == 2 and b"wrong or missing passphrase" in refused.stderr
    signed = subprocess.run([sys.executable, "-m", "edgefed", "pki", "sign", "--pki", str(controller), "pi-1",
                             "--san", "10.0.0.7"], input=request.stdout, capture_output=True, timeout=60,
                            env={**os.environ, "EDGEFED_CA_PASSPHRASE": "pw"})
    assert signed.stdout.strip() == b"pi-1: issued", signed.stderr


def test_a_revoked_name_is_never_signed_nor_issued_again(tmp_path: Path, controller: Path) -> None:
    node = _node(tmp_path, controller, "pi-1")
    request = node_request(node, "pi-1")
    assert sign_request(controller, "pi-1", request) == "issued"
    cert = controller / "nodes" / "pi-1" / "tls.crt"
    serial = pki.revoke(controller, "pi-1")
    revoked_pem = cert.read_bytes()
    # the same key, a new key, a renewal, the old `issue --force`: all refused in one line
    fresh = _node(tmp_path / "replacement", controller, "pi-1")
    for args, stdin in ((("sign", "pi-1", "--renew-days", "4000"), request),
                        (("sign", "pi-1"), node_request(fresh, "pi-1")),
                        (("issue", "pi-1", "--force"), b"")):
        result = _edgefed("pki", args[0], "--pki", str(controller), *args[1:], stdin=stdin)
        assert result.returncode == 2, result
        lines = result.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "pi-1 is revoked" in lines[0] and "new name" in lines[0], lines
        assert cert.read_bytes() == revoked_pem
    assert pki.load_revocations(controller).serials == {serial}
    # revoked.json lost: the certificate on file is still on the CRL, so still refused
    pki.revoked_index_path(controller).unlink()
    with pytest.raises(pki.PKIError, match="pi-1 is revoked"):
        sign_request(controller, "pi-1", request, renew_days=4000)
    # another name is signed as before
    assert sign_request(controller, "pi-2", node_request(_node(tmp_path, controller, "pi-2"), "pi-2")) == "issued"
