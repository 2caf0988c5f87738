"""Filters for the pki role (run on the controller).

- ed25519_public_hex: an ed25519 public key PEM -> the 64 hex characters stored in ledger.pub
  (the format edgefed.pki.load_ledger_public_key reads);
- pki_serial_hex: a certificate serial number -> lower-case hex, as edgefed.pki keys revoked.json;
- pki_san_entries: a node name plus extra addresses -> subjectAltName entries, the same rule as
  edgefed.pki (DNS:name first, IP: for addresses, DNS: for everything else, no duplicates).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable

from ansible.errors import AnsibleFilterError

# DER SubjectPublicKeyInfo of an ed25519 key: a fixed 12-byte prefix (RFC 8410), then the 32 raw bytes.
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def ed25519_public_hex(pem: str) -> str:
    """Raw ed25519 public key as 64 lowercase hex characters, from a 'PUBLIC KEY' PEM block."""
    lines = [line.strip() for line in str(pem).strip().splitlines()]
    if not lines or lines[0] != "-----BEGIN PUBLIC KEY-----" or lines[-1] != "-----END PUBLIC KEY-----":
        raise AnsibleFilterError("ed25519_public_hex: expected a PEM 'PUBLIC KEY' block")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AnsibleFilterError(f"ed25519_public_hex: the PEM body is not base64: {exc}") from None
    if len(der) != len(_ED25519_SPKI_PREFIX) + 32 or not der.startswith(_ED25519_SPKI_PREFIX):
        raise AnsibleFilterError("ed25519_public_hex: the key is not an ed25519 public key")
    return der[len(_ED25519_SPKI_PREFIX) :].hex()


def pki_serial_hex(serial: int | str) -> str:
    try:
        return f"{int(serial):x}"
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"pki_serial_hex: {serial!r} is not a serial number") from None


def pki_san_entries(name: str, sans: Iterable[str] = ()) -> list[str]:
    """subjectAltName entries for a node: DNS:name, then IP:/DNS: for each extra address."""
    if isinstance(sans, str):
        raise AnsibleFilterError(f"pki_san_entries: sans must be a list, got the string {sans!r}")
    entries = [f"DNS:{name}"]
    for san in sans:
        value = str(san).strip()
        if not value:
            raise AnsibleFilterError(f"pki_san_entries: empty subjectAltName for node {name!r}")
        try:
            entries.append(f"IP:{ipaddress.ip_address(value)}")
        except ValueError:
            entries.append(f"DNS:{value}")
    return list(dict.fromkeys(entries))


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"ed25519_public_hex": ed25519_public_hex, "pki_san_entries": pki_san_entries,
                "pki_serial_hex": pki_serial_hex}
