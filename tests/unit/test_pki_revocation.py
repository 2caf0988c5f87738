"""The deployment CRL (edgefed.pki), certificate expiry windows, and how a node's Trust reloads them."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgefed import pki
from edgefed.transport import Trust, request_reload
from edgefed.transport.tls import PeerRevoked


@pytest.fixture
def deployment(tmp_path: Path) -> Path:
    root = tmp_path / "pki"
    pki.init_ca(root)
    for name in ("chief", "pi1", "pi2"):
        pki.issue_node(root, name)
    return root


def _serial(root: Path, name: str) -> int:
    return pki.NodeCredentials(root, name).certificate().serial_number


def _der(root: Path, name: str) -> bytes:
    return pki.NodeCredentials(root, name).certificate().public_bytes(serialization.Encoding.DER)


def test_no_crl_revokes_nothing(deployment: Path) -> None:
    assert pki.load_revocations(deployment) == pki.Revocations()


def test_revoke_puts_the_serial_on_a_signed_crl_and_names_it(deployment: Path) -> None:
    serial = pki.revoke(deployment, "pi2")
    assert serial == _serial(deployment, "pi2")
    revocations = pki.load_revocations(deployment)
    assert revocations.is_revoked(serial)
    assert not revocations.is_revoked(_serial(deployment, "pi1"))
    assert revocations.revoked_names == {"pi2"}
    assert revocations.number == 1 and not revocations.stale
    crl = x509.load_pem_x509_crl(pki.crl_path(deployment).read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(serial)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is x509.ReasonFlags.key_compromise


def test_revoking_a_name_also_revokes_its_certificates_from_before_a_rotation(deployment: Path) -> None:
    before_rotation = _serial(deployment, "pi2")
    pki.issue_node(deployment, "pi2", force=True)  # rotated: the old certificate is still unexpired
    pki.revoke(deployment, "pi2")
    revocations = pki.load_revocations(deployment)
    assert revocations.serials == {_serial(deployment, "pi2")} and before_rotation not in revocations.serials
    assert revocations.is_revoked(before_rotation, "pi2")
    assert not revocations.is_revoked(before_rotation)  # by serial alone it is not on the CRL
    assert not revocations.is_revoked(_serial(deployment, "pi1"), "pi1")


def test_revoking_again_keeps_one_entry_and_numbers_the_crl_up(deployment: Path) -> None:
    pki.revoke(deployment, "pi2")
    pki.revoke(deployment, "pi1", reason="cessation_of_operation")
    pki.revoke(deployment, "pi2")
    revocations = pki.load_revocations(deployment)
    assert revocations.serials == {_serial(deployment, "pi1"), _serial(deployment, "pi2")}
    assert revocations.number == 3
    assert revocations.revoked_names == {"pi1", "pi2"}


def test_a_crl_from_another_ca_is_refused(deployment: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_ca(other, common_name="edgefed deployment CA")  # same name, different key
    pki.issue_node(other, "pi2")
    pki.revoke(other, "pi2")
    pki.crl_path(deployment).write_bytes(pki.crl_path(other).read_bytes())
    with pytest.raises(pki.PKIError, match="not signed by the deployment CA"):
        pki.load_revocations(deployment)


@pytest.mark.parametrize("text", [b"", b"garbage", b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"])
def test_a_damaged_crl_is_one_clear_error(deployment: Path, text: bytes) -> None:
    pki.crl_path(deployment).write_bytes(text)
    with pytest.raises(pki.PKIError, match="is not a PEM certificate revocation list"):
        pki.load_revocations(deployment)


def test_the_index_names_only_serials_on_the_crl(deployment: Path) -> None:
    pki.revoke(deployment, "pi2")
    index = pki.revoked_index_path(deployment)
    index.write_text(index.read_text().replace("}", f', "{_serial(deployment, "pi1"):x}": "pi1"}}'))
    assert pki.load_revocations(deployment).revoked_names == {"pi2"}  # pi1 is not on the signed CRL
    index.write_text("not json")
    revocations = pki.load_revocations(deployment)
    assert revocations.revoked_names == set() and revocations.is_revoked(_serial(deployment, "pi2"))


def test_revoking_an_unknown_node_or_reason_is_refused(deployment: Path) -> None:
    with pytest.raises(pki.PKIError, match="no certificate"):
        pki.revoke(deployment, "pi9")
    with pytest.raises(pki.PKIError, match="--reason 'stolen'"):
        pki.revoke(deployment, "pi1", reason="stolen")


def test_a_crl_past_its_next_update_is_stale_but_still_enforced(deployment: Path) -> None:
    serial = pki.revoke(deployment, "pi2")
    revocations = pki.load_revocations(deployment)
    old = pki.Revocations(revocations.serials, revocations.names, revocations.number,
                          dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    assert old.stale and old.is_revoked(serial)


@pytest.mark.parametrize(
    ("days", "renew_days", "due"), [(10, 30, True), (29, 30, True), (31, 30, False), (365, 30, False)]
)
def test_renewal_window(deployment: Path, days: int, renew_days: int, due: bool) -> None:
    creds = pki.issue_node(deployment, "pi1", days=days, force=True)
    assert 0 < days - pki.days_until_expiry(creds.cert) < 0.01
    assert pki.renewal_due(creds.cert, renew_days) is due


def test_trust_reloads_a_new_crl(deployment: Path) -> None:
    trust = Trust(pki.NodeCredentials.load(deployment, "chief"))
    first = trust.current()
    assert first.revocations.serials == frozenset()
    assert trust.current() is first  # nothing changed: the same contexts
    pki.revoke(deployment, "pi2")
    reloaded = trust.current()
    assert reloaded is not first and reloaded.revocations.is_revoked(_serial(deployment, "pi2"))


def test_trust_reloads_a_rotated_certificate(deployment: Path) -> None:
    trust = Trust(pki.NodeCredentials.load(deployment, "chief"))
    old_serial = trust.current().serial
    pki.issue_node(deployment, "chief", force=True)
    assert trust.current().serial == _serial(deployment, "chief") != old_serial


def test_trust_reloads_on_request_even_without_a_visible_change(deployment: Path) -> None:
    trust = Trust(pki.NodeCredentials.load(deployment, "chief"))
    first = trust.current()
    request_reload()  # what SIGHUP does
    assert trust.current() is not first


def test_trust_keeps_the_old_set_while_the_new_one_is_half_written(deployment: Path) -> None:
    creds = pki.NodeCredentials.load(deployment, "chief")
    trust = Trust(creds)
    first = trust.current()
    key = creds.key.read_bytes()
    pki.issue_node(deployment, "pi1", force=True)  # a key that does not match chief's certificate
    creds.key.write_bytes(pki.NodeCredentials(deployment, "pi1").key.read_bytes())
    assert trust.current() is first  # mismatched pair: not loaded
    creds.key.write_bytes(key)
    os.utime(creds.key)
    assert trust.current().serial == first.serial
    pki.crl_path(deployment).write_bytes(b"half a CRL")
    assert trust.current().revocations == first.revocations  # unreadable CRL: the old one stays


class _ConnectionDouble:
    """Test double of a connection as Trust.track sees it: the peer's certificate and close()."""

    def __init__(self, der: bytes) -> None:
        self._der = der
        self.closed = False

    def getpeercert(self, binary_form: bool = False) -> bytes:
        return self._der

    def close(self) -> None:
        self.closed = True


def test_names_arriving_after_the_crl_still_close_a_pre_rotation_connection(deployment: Path) -> None:
    # The trust lab's order: pi2 connected, then rotated (its old certificate stays unexpired), then
    # revoked; Ansible copies crl.pem first and revoked.json a moment later.
    old_der = _der(deployment, "pi2")
    pki.issue_node(deployment, "pi2", force=True)
    trust = Trust(pki.NodeCredentials.load(deployment, "chief"))
    connection = _ConnectionDouble(old_der)
    trust.track(connection, "pi2", connection)  # type: ignore[arg-type]
    index = pki.revoked_index_path(deployment)
    pki.revoke(deployment, "pi2")
    names = index.read_bytes()
    index.unlink()  # not there yet: the CRL alone lists only pi2's new serial
    assert not trust.current().revocations.revoked_names and not connection.closed
    index.write_bytes(names)  # the names land: pi2's connection on its old certificate is closed
    assert trust.current().revocations.is_revoked(x509.load_der_x509_certificate(old_der).serial_number, "pi2")
    assert connection.closed


def test_a_crl_loaded_during_the_handshake_refuses_the_connection_at_track(deployment: Path) -> None:
    # The listener checked pi2 against the state it took before the handshake; the CRL arrived and
    # its closing round ran while the handshake went on: tracking it now must refuse it.
    trust = Trust(pki.NodeCredentials.load(deployment, "chief"))
    checked_against = trust.current()
    pki.revoke(deployment, "pi2")
    assert trust.current() is not checked_against  # the reload, and its closing round, ran
    late = _ConnectionDouble(_der(deployment, "pi2"))
    with pytest.raises(PeerRevoked, match=r"^pi2's certificate \(serial [0-9a-f]+\) is revoked by the deployment CRL$"):
        trust.track(late, "pi2", late)  # type: ignore[arg-type]
    fine = _ConnectionDouble(_der(deployment, "pi1"))
    trust.track(fine, "pi1", fine)  # type: ignore[arg-type]
    pki.revoke(deployment, "pi1")
    trust.current()
    assert fine.closed
