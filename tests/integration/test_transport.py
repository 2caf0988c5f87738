"""edgefed.transport on real loopback sockets: the plain and TLS transports, stoppable listeners, refusals.

Certificates come from edgefed.pki in temporary directories (tests/conftest.py's pki_dir: a chief valid
for 127.0.0.1, worker1..worker4, mallory) plus a second, foreign CA made here.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefed import pki
from edgefed.transport import (
    UNAUTHENTICATED,
    Connection,
    ConnectionClosed,
    Listener,
    ListenerClosed,
    PeerRefused,
    PlainTransport,
    TlsTransport,
    Transport,
    TransportError,
)
from edgefed.wire import Limits, MessageType, encode_control_frame

LOCALHOST = "127.0.0.1"
LIMITS = Limits()


class InThread:
    """Run fn on another thread; result() joins it (bounded, so a bug fails the test instead of hanging)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._outcome: list[Any] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._outcome.append(("value", fn()))
        except BaseException as exc:
            self._outcome.append(("error", exc))

    def result(self, timeout: float = 30) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call never returned"
        kind, value = self._outcome[0]
        if kind == "error":
            raise value
        return value


def node(pki_dir: Path, name: str) -> TlsTransport:
    return TlsTransport(pki.NodeCredentials.load(pki_dir, name))


@pytest.fixture
def foreign_pki(tmp_path: Path) -> Path:
    root = tmp_path / "foreign-pki"
    pki.init_ca(root, common_name="some other CA")
    pki.issue_node(root, "intruder", [LOCALHOST])
    return root


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    opened: list[Listener] = []
    yield opened
    for listener in opened:
        listener.close()


def chat(text: str) -> list[bytes | memoryview]:
    return [encode_control_frame(MessageType.CHAT, 0, {"text": text})]


def exchange(server: Transport, client: Transport, server_name: str | None, listeners: list[Listener]) -> tuple[
    Connection, Connection
]:
    """Listen on server, dial it from client, authenticate on this thread; one frame each way."""
    listener = server.listen(LOCALHOST, 0, LIMITS)
    listeners.append(listener)
    dialled = InThread(lambda: client.connect(LOCALHOST, listener.port, LIMITS, server_name))
    accepted = listener.accept_pending().authenticate()
    dialling = dialled.result()
    dialling.send(chat("hello from the client"))
    assert accepted.recv().body == {"text": "hello from the client"}
    accepted.send(chat("hello from the server"))
    assert dialling.recv().body == {"text": "hello from the server"}
    return accepted, dialling


def test_the_plain_transport_carries_frames_and_names_peers_by_address(listeners: list[Listener]) -> None:
    transport = PlainTransport()
    accepted, dialling = exchange(transport, transport, None, listeners)
    try:
        assert transport.local_name == UNAUTHENTICATED
        assert accepted.peer.startswith(f"{UNAUTHENTICATED}@{LOCALHOST}:")
        assert dialling.peer == f"{UNAUTHENTICATED}@{LOCALHOST}:{listeners[0].port}"
        dialling.close()
        with pytest.raises(ConnectionClosed):
            accepted.recv()
    finally:
        accepted.close()
        dialling.close()


def test_a_plain_link_cannot_promise_a_peer_name(listeners: list[Listener]) -> None:
    transport = PlainTransport()
    listener = transport.listen(LOCALHOST, 0, LIMITS)
    listeners.append(listener)
    with pytest.raises(TransportError, match=r"cannot check that .* is chief"):
        transport.connect(LOCALHOST, listener.port, LIMITS, "chief")
    assert listener.accept_pending(0.2) is None  # it did not even dial


def test_tls_peers_are_named_by_their_certificates(pki_dir: Path, listeners: list[Listener]) -> None:
    chief, worker = node(pki_dir, "chief"), node(pki_dir, "worker1")
    for server_name in ("127.0.0.1", None):  # the chief's address is in its certificate; or any node
        accepted, dialling = exchange(chief, worker, server_name, listeners)
        assert (accepted.peer, dialling.peer) == ("worker1", "chief")
        accepted.close()
        dialling.close()
    assert worker.local_name == "worker1"


def test_tls_refuses_a_server_that_is_not_the_name_asked_for(pki_dir: Path, listeners: list[Listener]) -> None:
    worker2 = node(pki_dir, "worker2")
    listener = worker2.listen(LOCALHOST, 0, LIMITS)
    listeners.append(listener)
    refused = InThread(lambda: listener.accept_pending().authenticate())
    with pytest.raises(PeerRefused, match="certificate verify failed"):
        node(pki_dir, "worker1").connect(LOCALHOST, listener.port, LIMITS, "chief")
    with pytest.raises(TransportError):
        refused.result()


def test_tls_refuses_a_peer_of_a_foreign_ca_on_both_sides(
    pki_dir: Path, foreign_pki: Path, listeners: list[Listener]
) -> None:
    chief = node(pki_dir, "chief")
    listener = chief.listen(LOCALHOST, 0, LIMITS)
    listeners.append(listener)
    intruder = node(foreign_pki, "intruder")
    # The intruder does not trust our CA: it refuses the chief's certificate (no retry can help).
    handshake = InThread(lambda: listener.accept_pending().authenticate())
    with pytest.raises(PeerRefused, match="certificate verify failed"):
        intruder.connect(LOCALHOST, listener.port, LIMITS, None)
    with pytest.raises(TransportError, match="TLS handshake refused"):
        handshake.result()
    # Our chief refuses the intruder's certificate even when the intruder dials without checking ours.
    foreign_server = intruder.listen(LOCALHOST, 0, LIMITS)
    listeners.append(foreign_server)
    served = InThread(lambda: foreign_server.accept_pending().authenticate())
    with pytest.raises(PeerRefused, match="certificate verify failed"):
        chief.connect(LOCALHOST, foreign_server.port, LIMITS, None)
    with pytest.raises(TransportError):
        served.result()


@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_close_wakes_a_thread_waiting_in_accept(kind: str, pki_dir: Path) -> None:
    transport: Transport = PlainTransport() if kind == "plain" else node(pki_dir, "chief")
    listener = transport.listen(LOCALHOST, 0, LIMITS)
    port = listener.port
    waiting = threading.Event()

    def accept() -> object:
        waiting.set()
        return listener.accept_pending()  # no timeout: only close() can end this wait

    accepting = InThread(accept)
    assert waiting.wait(30)
    listener.close()
    with pytest.raises(ListenerClosed):
        accepting.result()
    with pytest.raises(ListenerClosed):
        listener.accept_pending(0)
    assert listener.port == port
    with pytest.raises(TransportError, match="cannot connect"):
        transport.connect(LOCALHOST, port, LIMITS, None)
    listener.close()  # twice is harmless


def test_accept_with_a_timeout_returns_none_when_nobody_comes(listeners: list[Listener]) -> None:
    listener = PlainTransport().listen(LOCALHOST, 0, LIMITS)
    listeners.append(listener)
    assert listener.accept_pending(0.05) is None
    assert listener.accept_pending(0) is None
    dialling = PlainTransport().connect(LOCALHOST, listener.port, LIMITS, None)
    try:
        pending = listener.accept_pending(30)
        assert pending is not None
        assert pending.address[0] == LOCALHOST
        pending.authenticate().close()
    finally:
        dialling.close()


def test_a_silent_peer_never_blocks_the_next_handshake(pki_dir: Path, listeners: list[Listener]) -> None:
    """Accepting returns before any handshake; each pending peer is authenticated on its own thread."""
    chief = node(pki_dir, "chief")
    listener = chief.listen(LOCALHOST, 0, LIMITS)
    listeners.append(listener)
    with socket.create_connection((LOCALHOST, listener.port)):  # connects, never says a word
        silent = listener.accept_pending(30)
        assert silent is not None
        stuck = InThread(lambda: silent.authenticate(timeout=120))  # longer than the bounded wait below
        dialled = InThread(lambda: node(pki_dir, "worker3").connect(LOCALHOST, listener.port, LIMITS, None))
        second = listener.accept_pending(30)
        assert second is not None
        assert second.authenticate().peer == "worker3"
        dialled.result().close()
        # Hanging up on the silent one wakes its handshake at once.
        silent.close()
        with pytest.raises(TransportError, match="TLS handshake refused") as refused:
            stuck.result(timeout=60)
        assert "timed out" not in str(refused.value)
        with pytest.raises(TransportError):
            silent.authenticate()  # nothing left to authenticate


def test_a_pending_peer_hung_up_before_its_handshake_sees_the_link_close(
    pki_dir: Path, listeners: list[Listener]
) -> None:
    transport = PlainTransport()
    listener = transport.listen(LOCALHOST, 0, LIMITS)
    listeners.append(listener)
    dialling = transport.connect(LOCALHOST, listener.port, LIMITS, None)
    try:
        pending = listener.accept_pending(30)
        assert pending is not None
        pending.close()
        with pytest.raises(ConnectionClosed):
            dialling.recv()
    finally:
        dialling.close()


def test_a_port_in_use_is_a_clear_transport_error(listeners: list[Listener]) -> None:
    listener = PlainTransport().listen(LOCALHOST, 0, LIMITS)
    listeners.append(listener)
    with pytest.raises(TransportError, match=f"cannot listen on {LOCALHOST}:{listener.port}"):
        PlainTransport().listen(LOCALHOST, listener.port, LIMITS)
