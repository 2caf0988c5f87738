"""The deployment's own PKI: a CA, per-node TLS certificates and ed25519 ledger keys.

Layout (the same whether `edgefed pki` or the Ansible pki role wrote it; see docs/pki.md)::

    PKI_DIR/ca.crt                     the deployment CA certificate (every node)
    PKI_DIR/ca.key                     the CA private key (controller only, 0600)
    PKI_DIR/nodes/NAME/tls.crt         NAME's certificate, CN=NAME, signed by the CA
    PKI_DIR/nodes/NAME/tls.key         NAME's TLS private key (0600, only on NAME)
    PKI_DIR/nodes/NAME/ledger.key      NAME's ed25519 ledger signing key, PEM PKCS#8 (0600, only on NAME)
    PKI_DIR/nodes/NAME/ledger.pub      NAME's ed25519 public key, 64 hex characters (anyone)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgefed.errors import user_error
from edgefed.fsutil import atomic_write_bytes

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
CA_DAYS = 3650
NODE_DAYS = 365  # keep edgefed/commands/pki.py's copy in step


@user_error
class PKIError(Exception):
    """A PKI directory or request is not usable; the message names the file or value."""


def check_node_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise PKIError(
            f"node name {name!r} is not valid: use 1-63 letters, digits, '.', '_' or '-', starting alphanumeric"
        )
    return name


@dataclass(frozen=True)
class NodeCredentials:
    """Paths to one node's credentials inside a PKI directory."""

    pki_dir: Path
    name: str

    @property
    def ca_cert(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def node_dir(self) -> Path:
        return self.pki_dir / "nodes" / self.name

    @property
    def cert(self) -> Path:
        return self.node_dir / "tls.crt"

    @property
    def key(self) -> Path:
        return self.node_dir / "tls.key"

    @property
    def ledger_key(self) -> Path:
        return self.node_dir / "ledger.key"

    @property
    def ledger_pub(self) -> Path:
        return self.node_dir / "ledger.pub"

    @classmethod
    def load(cls, pki_dir: str | Path, name: str) -> NodeCredentials:
        """Credentials for NAME, after checking that the files TLS needs are there."""
        creds = cls(Path(pki_dir), check_node_name(name))
        for path in (creds.ca_cert, creds.cert, creds.key):
            if not path.is_file():
                raise PKIError(f"missing {path} (run `edgefed pki init` and `edgefed pki issue {name}`)")
        return creds

    def ledger_signing_key(self) -> ed25519.Ed25519PrivateKey:
        if not self.ledger_key.is_file():
            raise PKIError(f"missing ledger key {self.ledger_key}")
        key = serialization.load_pem_private_key(self.ledger_key.read_bytes(), password=None)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise PKIError(f"{self.ledger_key} is not an ed25519 private key")
        return key

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.read_bytes())


def ledger_public_keys(pki_dir: str | Path) -> dict[str, ed25519.Ed25519PublicKey]:
    """Every node's ledger public key found under PKI_DIR/nodes/*/ledger.pub."""
    keys: dict[str, ed25519.Ed25519PublicKey] = {}
    for pub in sorted(Path(pki_dir).glob("nodes/*/ledger.pub")):
        keys[pub.parent.name] = load_ledger_public_key(pub)
    return keys


def load_ledger_public_key(path: Path) -> ed25519.Ed25519PublicKey:
    text = path.read_text().strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise PKIError(f"{path} is not hex") from None
    if len(raw) != 32:
        raise PKIError(f"{path} must hold 32 bytes (64 hex characters), found {len(raw)} bytes")
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


def public_key_hex(key: ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write_bytes(path, pem, mode=0o600)


def _load_ca(pki_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = pki_dir / "ca.crt", pki_dir / "ca.key"
    if not cert_path.is_file() or not key_path.is_file():
        raise PKIError(f"no CA in {pki_dir}: run `edgefed pki init --pki {pki_dir}` first")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{key_path} is not an EC private key")
    return cert, key


def init_ca(pki_dir: str | Path, common_name: str = "edgefed deployment CA", force: bool = False) -> Path:
    """Create the deployment CA; refuse to overwrite an existing one unless force."""
    root = Path(pki_dir)
    _usable_directory(root)
    if (root / "ca.crt").exists() and not force:
        raise PKIError(f"{root / 'ca.crt'} already exists (use --force to replace the CA)")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private_key(root / "ca.key", key)
    atomic_write_bytes(root / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    return root / "ca.crt"


def _usable_directory(root: Path) -> None:
    """Create the PKI directory, or say in one line why it cannot be one."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise PKIError(f"--pki {root}: not a directory; give a directory for the PKI (it is created)") from None
    except NotADirectoryError:
        raise PKIError(f"--pki {root}: a parent of it is a file; give a directory for the PKI") from None
    except PermissionError:
        raise PKIError(f"--pki {root}: permission denied; give a directory you may write to") from None


def check_san(san: str) -> x509.GeneralName:
    """An IP address or a DNS name (RFC 1123 labels); anything else is refused."""
    try:
        return x509.IPAddress(ipaddress.ip_address(san))
    except ValueError:
        pass
    labels = san.rstrip(".").split(".")
    if len(san) > 253 or not all(DNS_LABEL.match(label) for label in labels):
        raise PKIError(
            f"--san {san!r} is neither an IP address nor a DNS name (letters, digits, '-' and dots)"
        )
    return x509.DNSName(san.rstrip("."))


def _san_entries(name: str, sans: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = [x509.DNSName(name)]
    entries.extend(check_san(san) for san in sans)
    return list(dict.fromkeys(entries))


def issue_node(
    pki_dir: str | Path, name: str, sans: Sequence[str] = (), days: int = NODE_DAYS, force: bool = False,
    keep_ledger_key: bool = False,
) -> NodeCredentials:
    """Issue NAME a TLS certificate (client and server use) and an ed25519 ledger key pair.

    keep_ledger_key: a renewal (new TLS key and certificate) keeps an existing ledger key, so the
    records it signed still verify against ledger.pub.
    """
    root = Path(pki_dir)
    creds = NodeCredentials(root, check_node_name(name))
    if days < 1:
        raise PKIError(f"--days {days}: a certificate must be valid for at least 1 day")
    sans_checked = _san_entries(name, sans)  # before anything is written
    if root.exists() and not root.is_dir():
        raise PKIError(f"--pki {root}: not a directory; give the PKI directory holding ca.crt")
    if creds.cert.exists() and not force:
        raise PKIError(f"{creds.cert} already exists (use --force to re-issue)")
    ca_cert, ca_key = _load_ca(root)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans_checked), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    creds.node_dir.mkdir(parents=True, exist_ok=True)
    _write_private_key(creds.key, key)
    atomic_write_bytes(creds.cert, cert.public_bytes(serialization.Encoding.PEM))
    if keep_ledger_key and creds.ledger_key.is_file():
        return creds
    ledger_key = ed25519.Ed25519PrivateKey.generate()
    _write_private_key(creds.ledger_key, ledger_key)
    atomic_write_bytes(creds.ledger_pub, (public_key_hex(ledger_key) + "\n").encode())
    return creds


def days_until_expiry(cert_path: Path) -> float:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return (cert.not_valid_after_utc - _now()).total_seconds() / 86400


# -- revocation: PKI_DIR/crl.pem (every node) and PKI_DIR/revoked.json (serial -> name, for people) --
CRL_DAYS = 30  # the CRL's nextUpdate; a stale CRL is still enforced (Revocations.stale tells)
_REASONS = {reason.name: reason for reason in x509.ReasonFlags}


@dataclass(frozen=True)
class Revocations:
    """The deployment CRL as a node enforces it: the revoked serials, and who they were issued to."""

    serials: frozenset[int] = frozenset()
    names: tuple[tuple[int, str], ...] = ()  # (serial, node name) for serials on the CRL, from revoked.json
    number: int = 0
    next_update: dt.datetime | None = None

    def is_revoked(self, serial: int, name: str | None = None) -> bool:
        """On the CRL, or held by a revoked name (never issued again): its pre-rotation certificates too."""
        return serial in self.serials or (name is not None and name in self.revoked_names)

    @property
    def revoked_names(self) -> frozenset[str]:
        return frozenset(name for _, name in self.names)

    @property
    def stale(self) -> bool:
        return self.next_update is not None and self.next_update < _now()


def crl_path(pki_dir: str | Path) -> Path:
    return Path(pki_dir) / "crl.pem"


def revoked_index_path(pki_dir: str | Path) -> Path:
    return Path(pki_dir) / "revoked.json"


def parse_crl(pem: bytes, ca_cert: x509.Certificate, where: str = "the CRL") -> x509.CertificateRevocationList:
    """A CRL issued and signed by the deployment CA, or PKIError saying what is wrong with it."""
    try:
        crl = x509.load_pem_x509_crl(pem)
    except ValueError:
        raise PKIError(f"{where} is not a PEM certificate revocation list") from None
    if crl.issuer != ca_cert.subject:
        raise PKIError(f"{where} was issued by {crl.issuer.rfc4514_string()}, not the deployment CA")
    public = ca_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(public):
        raise PKIError(f"{where} is not signed by the deployment CA")
    return crl


def _revoked_index(pki_dir: Path) -> dict[int, str]:
    """serial -> node name from revoked.json; a damaged index names nobody (the CRL still applies)."""
    import json
    try:
        raw = json.loads(revoked_index_path(pki_dir).read_text())
        return {int(serial, 16): str(name) for serial, name in raw.items() if NAME_PATTERN.match(str(name))}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def load_revocations(pki_dir: str | Path, ca_cert: x509.Certificate | None = None) -> Revocations:
    """The revocations in force under PKI_DIR: none without crl.pem; PKIError for a CRL not ours."""
    root = Path(pki_dir)
    path = crl_path(root)
    if not path.is_file():
        return Revocations()
    ca = ca_cert or x509.load_pem_x509_certificate((root / "ca.crt").read_bytes())
    crl = parse_crl(path.read_bytes(), ca, str(path))
    serials = frozenset(entry.serial_number for entry in crl)
    index = _revoked_index(root)
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = 0
    names = tuple(sorted((serial, name) for serial, name in index.items() if serial in serials))
    return Revocations(serials, names, number, crl.next_update_utc)


def revoke(pki_dir: str | Path, name: str, reason: str = "key_compromise") -> int:
    """Put NAME's certificate (PKI_DIR/nodes/NAME/tls.crt) on the CRL, re-signed; returns its serial."""
    import json

    root = Path(pki_dir)
    creds = NodeCredentials(root, check_node_name(name))
    if reason not in _REASONS:
        raise PKIError(f"--reason {reason!r}: use one of {', '.join(sorted(_REASONS))}")
    if not creds.cert.is_file():
        raise PKIError(f"no certificate {creds.cert} to revoke (the controller keeps every node's tls.crt)")
    serial = creds.certificate().serial_number
    ca_cert, ca_key = _load_ca(root)
    old = crl_path(root)
    entries = list(parse_crl(old.read_bytes(), ca_cert, str(old))) if old.is_file() else []
    if all(entry.serial_number != serial for entry in entries):
        entries.append(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(_now())
            .add_extension(x509.CRLReason(_REASONS[reason]), critical=False).build()
        )
    sign_crl(root, entries, ca_cert, ca_key)
    index = {f"{s:x}": n for s, n in _revoked_index(root).items()}
    index[f"{serial:x}"] = name
    atomic_write_bytes(revoked_index_path(root), (json.dumps(index, indent=1, sort_keys=True) + "\n").encode())
    return serial


def sign_crl(
    root: Path,
    entries: Sequence[x509.RevokedCertificate],
    ca_cert: x509.Certificate | None = None,
    ca_key: ec.EllipticCurvePrivateKey | None = None,
) -> Path:
    """Write PKI_DIR/crl.pem holding entries, numbered one above the current CRL, valid CRL_DAYS."""
    if ca_cert is None or ca_key is None:
        ca_cert, ca_key = _load_ca(root)
    number = load_revocations(root, ca_cert).number + 1
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=CRL_DAYS))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    atomic_write_bytes(crl_path(root), crl.public_bytes(serialization.Encoding.PEM))
    return crl_path(root)


def renewal_due(cert_path: Path, renew_days: float) -> bool:
    """True when the certificate expires within renew_days (the pki role's edgefed_pki_renew_days)."""
    return days_until_expiry(cert_path) < renew_days
