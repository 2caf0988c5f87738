"""The pki role's filters agree with edgefed.pki on ledger.pub and subjectAltNames."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from ansible.errors import AnsibleFilterError
from ansible_helpers import REPO
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from edgefed import pki


def _filters() -> ModuleType:
    path = REPO / "roles/pki/filter_plugins/pki_filters.py"
    spec = importlib.util.spec_from_file_location("pki_filters", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FILTERS = _filters()


def _public_pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_ledger_hex_matches_edgefed_pki() -> None:
    for _ in range(20):
        key = ed25519.Ed25519PrivateKey.generate()
        assert FILTERS.ed25519_public_hex(_public_pem(key)) == pki.public_key_hex(key)


def test_ledger_hex_rejects_other_keys() -> None:
    with pytest.raises(AnsibleFilterError, match="not an ed25519 public key"):
        FILTERS.ed25519_public_hex(_public_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(AnsibleFilterError, match="PUBLIC KEY"):
        FILTERS.ed25519_public_hex("not a pem")


def test_san_entries_follow_edgefed_pki(tmp_path: Path) -> None:
    assert FILTERS.pki_san_entries("chief", ["203.0.113.10", "chief.example.org", "10.0.0.5", "203.0.113.10"]) == [
        "DNS:chief", "IP:203.0.113.10", "DNS:chief.example.org", "IP:10.0.0.5"]
    assert FILTERS.pki_san_entries("chief", ["chief"]) == ["DNS:chief"]
    assert FILTERS.pki_san_entries("chief", ["2001:db8::1"]) == ["DNS:chief", "IP:2001:db8::1"]
    with pytest.raises(AnsibleFilterError, match="must be a list"):
        FILTERS.pki_san_entries("chief", "10.0.0.5")
