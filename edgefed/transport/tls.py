"""TLS 1.3 mutual-authentication contexts built from the deployment's PKI, kept current.

`Trust` holds a node's contexts and the deployment CRL (PKI_DIR/crl.pem) and rebuilds both when one
of their files changes (checked at every handshake and by a watcher while a listener is open) or when
SIGHUP asked for it: a rotated certificate serves the next handshake, a new CRL refuses the next one.

Revocation is checked after the handshake, on the peer certificate's serial, rather than by OpenSSL
(VERIFY_CRL_CHECK_LEAF), because: the refusal can then name the peer (OpenSSL fails the handshake
before its certificate is readable); a node without crl.pem, or with a CRL past its nextUpdate, keeps
working instead of refusing everyone; and a reload swaps one set of serials instead of contexts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from edgefed.pki import NodeCredentials, PKIError, Revocations, crl_path, load_revocations, revoked_index_path

log = logging.getLogger(__name__)

WATCH_INTERVAL = 2.0  # seconds between the watcher's looks at the PKI files while a listener is open
_reload_requests = 0  # bumped by SIGHUP: every Trust rebuilds at its next look


def _base_context(purpose: ssl.Purpose, creds: NodeCredentials) -> ssl.SSLContext:
    protocol = ssl.PROTOCOL_TLS_SERVER if purpose is ssl.Purpose.CLIENT_AUTH else ssl.PROTOCOL_TLS_CLIENT
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=str(creds.ca_cert))
    context.load_cert_chain(certfile=str(creds.cert), keyfile=str(creds.key))
    return context


def server_context(creds: NodeCredentials) -> ssl.SSLContext:
    """Server side: present NAME's certificate, require a client certificate from the same CA."""
    return _base_context(ssl.Purpose.CLIENT_AUTH, creds)


def client_context(creds: NodeCredentials, check_hostname: bool = True) -> ssl.SSLContext:
    """Client side: present NAME's certificate; the server's must come from the same CA.

    check_hostname also ties the server's certificate to the address dialled (its SANs), which the
    chief's certificate carries for its public and private addresses.
    """
    context = _base_context(ssl.Purpose.SERVER_AUTH, creds)
    context.check_hostname = check_hostname
    return context


def peer_common_name(sock: ssl.SSLSocket) -> str:
    cert: Any = sock.getpeercert()
    if not cert:
        raise ssl.SSLError("peer presented no certificate")
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise ssl.SSLError("peer certificate has no common name")


def peer_serial(sock: ssl.SSLSocket) -> int:
    der = sock.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("peer presented no certificate")
    return x509.load_der_x509_certificate(der).serial_number


def request_reload(_signum: int = 0, _frame: object = None) -> None:
    """Ask every Trust to re-read its files at its next look (the SIGHUP handler; signal-safe)."""
    global _reload_requests
    _reload_requests += 1


def reload_requests() -> int:
    """How many reloads SIGHUP asked for so far (other watchers of their own files look at it too)."""
    return _reload_requests


def reload_on_sighup() -> bool:
    """Install request_reload for SIGHUP (main thread only); False where that is not possible."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGHUP"):
        return False
    signal.signal(signal.SIGHUP, request_reload)
    return True


@dataclass(frozen=True)
class TrustState:
    """One consistent set: the contexts built from the same files, and the CRL read with them."""

    server: ssl.SSLContext
    client: ssl.SSLContext
    client_any_node: ssl.SSLContext  # any node certificate of the CA: peers dialled without a name
    revocations: Revocations
    serial: int  # of this node's own certificate


def _fingerprint(paths: tuple[Path, ...]) -> tuple[object, ...]:
    marks: list[object] = [_reload_requests]
    for path in paths:
        try:
            stat = os.stat(path)
            marks.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
        except OSError:
            marks.append(None)
    return tuple(marks)


class Trust:
    """A node's TLS contexts and the CRL, rebuilt when their files change; checks peers against the CRL.

    Connections registered with track() are closed when a new CRL revokes their peer, so a revoked
    node that is still connected meets the CRL at its next handshake.
    """

    def __init__(self, creds: NodeCredentials) -> None:
        self.creds = creds
        # revoked.json too: it names the revoked nodes, and it may land after crl.pem (Ansible copies
        # one file at a time), so a reload on the CRL alone could miss a name and never look again
        self._paths = (creds.ca_cert, creds.cert, creds.key, crl_path(creds.pki_dir),
                       revoked_index_path(creds.pki_dir))
        self._lock = threading.Lock()
        self._seen = _fingerprint(self._paths)
        self._state = self._build()  # the first build fails loudly: a node cannot start without it
        self._tracked: weakref.WeakKeyDictionary[Any, tuple[str, int]] = weakref.WeakKeyDictionary()
        self._watchers = 0
        self._watch_stop = threading.Event()

    def _build(self) -> TrustState:
        ca = x509.load_pem_x509_certificate(self.creds.ca_cert.read_bytes())
        revocations = load_revocations(self.creds.pki_dir, ca)
        if revocations.stale:  # still enforced: a late CRL must not let revoked nodes back in
            log.warning("%s: the CRL is past its next-update date (%s); still enforced; re-sign it with "
                        "`edgefed pki crl`", self.creds.name, revocations.next_update)
        return TrustState(
            server_context(self.creds), client_context(self.creds), client_context(self.creds, False),
            revocations, self.creds.certificate().serial_number,
        )

    def current(self) -> TrustState:
        """The state for a new handshake, rebuilt first if a file changed or SIGHUP asked for it."""
        seen = _fingerprint(self._paths)
        if seen == self._seen:
            return self._state
        with self._lock:
            if seen == self._seen:
                return self._state
            try:
                state = self._build()
            except (OSError, ValueError, ssl.SSLError, PKIError) as exc:
                # e.g. tls.crt already new, tls.key not yet: keep serving with the old set, look again
                log.warning("%s: not reloading the TLS credentials yet (%s); keeping the current ones",
                            self.creds.name, exc)
                return self._state
            old, self._state, self._seen = self._state, state, seen
        self._announce(old, state)
        return state

    def _announce(self, old: TrustState, new: TrustState) -> None:
        if new.serial != old.serial:
            log.warning("%s: now presenting certificate serial %x (was %x)", self.creds.name, new.serial, old.serial)
        if new.revocations != old.revocations:  # serials or names: either may revoke a live connection
            log.warning("%s: CRL number %d loaded, %d certificate(s) revoked (%s)", self.creds.name,
                        new.revocations.number, len(new.revocations.serials),
                        ", ".join(sorted(new.revocations.revoked_names)) or "no names known")
            self._close_revoked(new.revocations)

    def check_peer(self, sock: ssl.SSLSocket, state: TrustState | None = None) -> str:
        """The peer's name, or PeerRevoked when the deployment CRL lists its certificate."""
        name = peer_common_name(sock)
        serial = peer_serial(sock)
        if (state or self.current()).revocations.is_revoked(serial, name):
            raise PeerRevoked(name, serial)
        return name

    def track(self, connection: object, name: str, sock: ssl.SSLSocket) -> None:
        """Close connection if a later CRL revokes its peer; PeerRevoked if the CRL in force already does.

        Checked again here, under the lock: a handshake can last seconds (the peer sets the pace), and a
        CRL loaded meanwhile has already closed what it found, so the state the handshake was checked
        against may be stale. Either this sees the new CRL, or the CRL's closing round sees this."""
        serial = peer_serial(sock)
        with self._lock:
            if self._state.revocations.is_revoked(serial, name):
                raise PeerRevoked(name, serial)
            self._tracked[connection] = (name, serial)

    def _close_revoked(self, revocations: Revocations) -> None:
        with self._lock:
            doomed = [(conn, name, serial) for conn, (name, serial) in list(self._tracked.items())
                      if revocations.is_revoked(serial, name)]
            for conn, _, _ in doomed:  # closed once: a later CRL (a re-signing) does not close it again
                del self._tracked[conn]
        for conn, name, serial in doomed:
            log.warning("closing the connection of %s: its certificate (serial %x) is now revoked", name, serial)
            with contextlib.suppress(OSError):
                conn.close()

    def watch(self, interval: float = WATCH_INTERVAL) -> Callable[[], None]:
        """Look at the files every interval seconds until the returned stop() (one thread per Trust)."""
        with self._lock:
            self._watchers += 1
            if self._watchers == 1:
                self._watch_stop = threading.Event()
                stop_event = self._watch_stop
                threading.Thread(target=self._watch_loop, args=(stop_event, interval),
                                 name=f"tls-trust-{self.creds.name}", daemon=True).start()

        def stop() -> None:
            with self._lock:
                self._watchers -= 1
                if self._watchers == 0:
                    self._watch_stop.set()

        return stop

    def _watch_loop(self, stop: threading.Event, interval: float) -> None:
        while not stop.wait(interval):
            try:
                self.current()
            except Exception:  # a watcher that died would silently stop revocations taking effect
                log.exception("%s: looking at the TLS credentials failed", self.creds.name)


class PeerRevoked(ssl.SSLError):
    """The peer's certificate is on the deployment CRL."""

    def __init__(self, name: str, serial: int) -> None:
        super().__init__(f"{name}'s certificate (serial {serial:x}) is revoked by the deployment CRL")
        self.name = name
        self.serial = serial

    def __str__(self) -> str:  # ssl.SSLError's own shows the args tuple, which went into the logs
        return str(self.args[0])
