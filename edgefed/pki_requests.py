"""Node keys made on the node, certificates signed from a request: the controller never sees a private key.

On the node (`edgefed pki keygen`, `edgefed pki csr`): the TLS key and the ed25519 ledger key are
created once under PKI_DIR/nodes/NAME (0600) and a certificate signing request (CN=NAME, its
subjectAltNames) is made from the TLS key. On the machine holding the CA (`edgefed pki sign`): the
request is checked field by field against what the inventory says NAME may be, then signed; a
certificate that already matches the request's key and names and is outside the renewal window is kept.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefed.fsutil import atomic_write_bytes
from edgefed.pki import (
    NODE_DAYS,
    NodeCredentials,
    PKIError,
    _san_entries,
    _write_private_key,
    check_node_name,
    crl_path,
    days_until_expiry,
    load_revocations,
    public_key_hex,
)

MAX_REQUEST_BYTES = 16 * 1024  # a P-256 request with a few names is under 1 KiB
CA_PASSPHRASE_ENV = "EDGEFED_CA_PASSPHRASE"  # noqa: S105 - a variable's name, not a secret; how the pki role hands a protected ca.key's passphrase over


def ensure_node_keys(pki_dir: str | Path, name: str) -> list[str]:
    """Create NAME's TLS key, ledger key and ledger.pub where missing; returns the files created.

    An existing key is never replaced: a renewal signs a new request from the same TLS key, and the
    ledger key (whose public half the chief and the ledger know) stays for the node's life.
    """
    creds = NodeCredentials(Path(pki_dir), check_node_name(name))
    try:
        creds.node_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PKIError(f"cannot create {creds.node_dir}: {exc.strerror}") from None
    created: list[str] = []
    if not creds.key.is_file():
        _write_private_key(creds.key, ec.generate_private_key(ec.SECP256R1()))
        created.append(creds.key.name)
    if not creds.ledger_key.is_file():
        _write_private_key(creds.ledger_key, ed25519.Ed25519PrivateKey.generate())
        created.append(creds.ledger_key.name)
    public = public_key_hex(creds.ledger_signing_key()) + "\n"
    if not creds.ledger_pub.is_file() or creds.ledger_pub.read_text() != public:
        atomic_write_bytes(creds.ledger_pub, public.encode(), mode=0o644)
        created.append(creds.ledger_pub.name)
    return created


def _node_tls_key(creds: NodeCredentials) -> ec.EllipticCurvePrivateKey:
    if not creds.key.is_file():
        raise PKIError(f"no TLS key {creds.key}: run `edgefed pki keygen --pki {creds.pki_dir} {creds.name}` first")
    key = serialization.load_pem_private_key(creds.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise PKIError(f"{creds.key} is not an ECDSA P-256 private key")
    return key


def node_request(pki_dir: str | Path, name: str, sans: Sequence[str] = ()) -> bytes:
    """A PEM certificate signing request for NAME from its TLS key: CN=NAME and its subjectAltNames only."""
    creds = NodeCredentials(Path(pki_dir), check_node_name(name))
    entries = _san_entries(name, sans)
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName(entries), critical=False)
        .sign(_node_tls_key(creds), hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def check_request(pem: bytes, name: str, sans: Sequence[str] = ()) -> x509.CertificateSigningRequest:
    """The request, if it is exactly what NAME may ask for; PKIError naming the first field that is not."""
    check_node_name(name)
    expected = set(_san_entries(name, sans))
    if len(pem) > MAX_REQUEST_BYTES:
        raise PKIError(f"the request for {name} is {len(pem)} bytes, more than {MAX_REQUEST_BYTES}")
    try:
        request = x509.load_pem_x509_csr(pem)
    except ValueError:
        raise PKIError(f"the request for {name} is not a PEM certificate signing request") from None
    if not request.is_signature_valid:
        raise PKIError(f"the request for {name} is not signed by the key it carries")
    public = request.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise PKIError(f"the request for {name} carries a key that is not ECDSA P-256")
    subject = request.subject.rfc4514_string()
    if subject != f"CN={name}" or len(request.subject) != 1:
        raise PKIError(f"the request names {subject!r}, not CN={name}")
    for extension in request.extensions:
        if not isinstance(extension.value, x509.SubjectAlternativeName):
            raise PKIError(
                f"the request for {name} asks for {extension.oid.dotted_string}, which the signer sets itself"
            )
    try:
        asked = set(request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        asked = set()
    if asked != expected:
        extra = sorted(str(entry.value) for entry in asked - expected)
        missing = sorted(str(entry.value) for entry in expected - asked)
        raise PKIError(
            f"the request for {name} asks for other names than the inventory gives it"
            f" (not allowed: {', '.join(extra) or 'none'}; missing: {', '.join(missing) or 'none'})"
        )
    return request


def _load_ca_certificate(root: Path) -> x509.Certificate:
    if not (root / "ca.crt").is_file():
        raise PKIError(f"no CA in {root}: run `edgefed pki init --pki {root}` first")
    return x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())


def refuse_revoked(pki_dir: str | Path, name: str) -> None:
    """PKIError when NAME is revoked (named in revoked.json, or its certificate here is on the CRL).

    A revoked name is never certified again, whoever asks: a stolen device left in the inventory (or
    restarted by systemd) must not come back with a fresh certificate. A replacement gets a new name.
    """
    root = Path(pki_dir)
    creds = NodeCredentials(root, check_node_name(name))
    revocations = load_revocations(root)
    on_crl = creds.cert.is_file() and revocations.is_revoked(creds.certificate().serial_number)
    if name in revocations.revoked_names or on_crl:
        raise PKIError(
            f"{name} is revoked (on {crl_path(root)}) and is never issued a certificate again: retire it "
            f"(teardown.yml --limit {name}), remove it from the inventory, and give a replacement a new name"
        )


def _load_ca_key(root: Path, name: str) -> ec.EllipticCurvePrivateKey:
    """The CA key; a CA kept offline has none here, and only a certificate that is due needs it."""
    key_path = root / "ca.key"
    if not key_path.is_file():
        raise PKIError(f"no CA key in {root}: {name}'s certificate is due; sign its request where ca.key is kept")
    passphrase = os.environ.get(CA_PASSPHRASE_ENV, "")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=passphrase.encode() or None)
    except (TypeError, ValueError):
        raise PKIError(f"{key_path} cannot be read: wrong or missing passphrase (${CA_PASSPHRASE_ENV})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{key_path} is not an EC private key")
    return key


def _still_good(creds: NodeCredentials, request: x509.CertificateSigningRequest, ca: x509.Certificate,
                renew_days: float) -> bool:
    """The certificate on file already certifies the request's key and names, by this CA, for long enough."""
    if not creds.cert.is_file():
        return False
    cert = creds.certificate()
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        wanted = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return (cert.public_key() == request.public_key() and cert.issuer == ca.subject
            and cert.subject == request.subject and set(names) == set(wanted)
            and days_until_expiry(creds.cert) >= renew_days)


def sign_request(
    pki_dir: str | Path, name: str, pem: bytes, sans: Sequence[str] = (), days: int = NODE_DAYS,
    renew_days: float = 0, dry_run: bool = False,
) -> str:
    """Sign NAME's request into PKI_DIR/nodes/NAME/tls.crt; returns 'kept', 'issued' or 'would issue'."""
    if days < 1:
        raise PKIError(f"--days {days}: a certificate must be valid for at least 1 day")
    root = Path(pki_dir)
    creds = NodeCredentials(root, check_node_name(name))
    request = check_request(pem, name, sans)
    ca_cert = _load_ca_certificate(root)
    refuse_revoked(root, name)
    if _still_good(creds, request, ca_cert, renew_days):
        return "kept"
    if dry_run:
        return "would issue"
    ca_key = _load_ca_key(root, name)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(ca_cert.subject)
        .public_key(request.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a Pi without RTC may lag a little
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(_san_entries(name, sans)), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    creds.node_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(creds.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return "issued"
