"""The p2p Receiver and Sender threads over real sockets and real mutual TLS on 127.0.0.1."""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest

from edgefed.p2p import P2PError, PeerUnreachable, Receiver, Sender, TransferRefused, session
from edgefed.p2p.link import P2P_LIMITS
from edgefed.p2p.parse import Endpoint
from edgefed.pki import NodeCredentials, PKIError, init_ca, issue_node
from edgefed.transport import PlainTransport, TlsConnection, TransportError, client_context, connect_tls
from edgefed.wire import MessageType, encode_control_frame, encode_raw_frame

LOCALHOST = "127.0.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    init_ca(root)
    for name in ("alice", "bob"):
        issue_node(root, name)
    return root


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mallory: a node certificate from another CA (which mallory also trusts)."""
    root = tmp_path_factory.mktemp("foreign-pki")
    init_ca(root, common_name="some other CA")
    issue_node(root, "mallory")
    return root


@pytest.fixture(scope="module")
def foreign_trusting_us(tmp_path_factory: pytest.TempPathFactory, pki: Path, foreign_pki: Path) -> Path:
    """mallory's foreign certificate, but trusting our CA: only the receiver's check can stop it."""
    root = tmp_path_factory.mktemp("foreign-trusting-us")
    shutil.copytree(foreign_pki / "nodes", root / "nodes")
    shutil.copy(pki / "ca.crt", root / "ca.crt")
    return root


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def dial(pki_dir: Path, name: str, port: int) -> TlsConnection:
    """A raw client of the p2p protocol: lets a test speak like a hostile peer."""
    context = client_context(NodeCredentials.load(pki_dir, name), check_hostname=False)
    return connect_tls(LOCALHOST, port, context, limits=P2P_LIMITS)


def offer_body(name: str, data: bytes) -> dict[str, object]:
    return {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_bsmd_pair_of_threads_chat_both_ways_with_certificate_names(pki: Path) -> None:
    heard: queue.Queue[tuple[str, str, str]] = queue.Queue()
    alice_rx = Receiver(LOCALHOST, 0, pki_dir=pki, name="alice", on_chat=lambda p, t: heard.put(("alice", p, t)))
    bob_rx = Receiver(LOCALHOST, "0", pki_dir=pki, name="bob", on_chat=lambda p, t: heard.put(("bob", p, t)))
    alice_tx = Sender(LOCALHOST, bob_rx.port, pki_dir=pki, name="alice", expect_peer="bob")
    bob_tx = Sender(LOCALHOST, str(alice_rx.port), pki_dir=pki, name="bob", expect_peer="alice")
    threads = [alice_rx, bob_rx, alice_tx, bob_tx]
    for thread in threads:
        thread.start()
    try:
        alice_tx.send_message("hello bob").result(timeout=30)
        bob_tx.send_message("hi alice \x1b[2J").result(timeout=30)
        got = {heard.get(timeout=30), heard.get(timeout=30)}
        assert got == {("bob", "alice", "hello bob"), ("alice", "bob", "hi alice \\x1b[2J")}
        assert alice_tx.peer_name == "bob"
        assert bob_tx.peer_name == "alice"
    finally:
        for thread in threads:
            thread.stop()  # type: ignore[attr-defined]
        for thread in threads:
            thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)


def test_a_file_arrives_and_both_sides_report_the_record(pki: Path, tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    source = tmp_path / "model.npz"
    source.write_bytes(data)
    received: list[dict[str, object]] = []
    sent: list[dict[str, object]] = []
    receiver = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob", directory=tmp_path / "inbox",
                        on_file_transfer=received.append)
    sender = Sender(LOCALHOST, receiver.port, pki_dir=pki, name="alice", on_file_transfer=sent.append)
    receiver.start()
    sender.start()
    try:
        record = sender.send_file(source).result(timeout=60)
        again = sender.send_file(source).result(timeout=60)
    finally:
        sender.stop()
        receiver.stop()
        sender.join(10)
        receiver.join(10)
    assert (tmp_path / "inbox" / "model.npz").read_bytes() == data
    expected = {"sender": "alice", "receiver": "bob", "name": "model.npz", "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}
    assert {key: record[key] for key in expected} == expected
    assert [{key: r[key] for key in expected} for r in received] == [expected]
    assert sent == [record]
    # Offering the same file again is answered without a second transfer, and not recorded twice.
    assert again["outcome"] == "already received"
    assert len(received) == 1
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["model.npz"]


def test_a_transfer_cut_by_a_receiver_restart_resumes_and_completes(pki: Path, tmp_path: Path) -> None:
    data = os.urandom(24 << 20)
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    inbox = tmp_path / "inbox"
    part = inbox / ".data.bin.part"
    first = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob", directory=inbox)
    port = first.port
    # The rate cap only makes the cut land in the middle of the file.
    sender = Sender(LOCALHOST, port, pki_dir=pki, name="alice", retry_for=30, max_rate=8 << 20)
    first.start()
    sender.start()
    future = sender.send_file(source)
    try:
        wait_for(lambda: part.exists() and part.stat().st_size >= 4 << 20, 60, "the first 4 MiB")
        first.stop()
        first.join(10)
        held = part.stat().st_size
        assert 0 < held < len(data)
        assert not (inbox / "data.bin").exists()
        sender.max_rate = None
        second = Receiver(LOCALHOST, port, pki_dir=pki, name="bob", directory=inbox)
        second.start()
        record = future.result(timeout=90)
    finally:
        sender.stop()
        sender.join(10)
        first.stop()
    second.stop()
    second.join(10)
    assert record["resumed_from"] == held
    assert hashlib.sha256((inbox / "data.bin").read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in inbox.iterdir()) == ["data.bin"]


def test_hostile_offers_are_refused_and_nothing_leaves_the_directory(pki: Path, tmp_path: Path) -> None:
    inbox = tmp_path / "deep" / "inbox"
    receiver = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob", directory=inbox, max_file_size=1000)
    receiver.start()
    data = b"root::0:0::/root:/bin/sh\n"
    connection = dial(pki, "alice", receiver.port)
    try:
        hostile = ["../../etc/passwd", "/etc/passwd", "..", "a/b", "..\\..\\x", ".hidden", "x\x00y", "../inbox2"]
        for name in hostile:
            connection.send([encode_control_frame(MessageType.FILE_OFFER, 0, offer_body(name, data))])
            reply = connection.recv()
            assert reply.type is MessageType.FILE_RESULT
            assert reply.body["ok"] is False
            assert "refused file name" in reply.body["message"]
        too_big = offer_body("big.bin", b"x" * 1001)
        connection.send([encode_control_frame(MessageType.FILE_OFFER, 0, too_big)])
        reply = connection.recv()
        assert reply.body["ok"] is False
        assert "over this receiver's limit of 1000 bytes" in reply.body["message"]
        # Chunks without an accepted offer break the protocol: the receiver says why and hangs up.
        connection.send(encode_raw_frame(MessageType.FILE_CHUNK, 0, data))
        bye = connection.recv()
        assert bye.type is MessageType.BYE
        assert "FILE_CHUNK without an accepted FILE_OFFER" in bye.body["reason"]
    finally:
        connection.close()
        receiver.stop()
        receiver.join(10)
    assert list(inbox.iterdir()) == []
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "inbox"]


def test_a_sender_sees_the_receivers_refusal_as_an_error(pki: Path, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    receiver = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob", directory=tmp_path / "inbox")
    sender = Sender(LOCALHOST, receiver.port, pki_dir=pki, name="alice")
    receiver.start()
    sender.start()
    try:
        with pytest.raises(TransferRefused, match=r"bob did not take '\.\./\.\./etc/passwd': refused file name"):
            sender.send_file(source, name="../../etc/passwd").result(timeout=30)
    finally:
        sender.stop()
        receiver.stop()
        sender.join(10)
        receiver.join(10)


def test_a_peer_with_a_certificate_from_another_ca_is_refused_by_the_receiver(
    pki: Path, foreign_trusting_us: Path, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[str] = []
    receiver = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob", on_chat=lambda peer, text: heard.append(text))
    receiver.start()
    try:
        with caplog.at_level(logging.WARNING, logger="edgefed.p2p"), pytest.raises(TransportError):
            # TLS 1.3: the client finishes first; the server's verdict arrives on the next read.
            intruder = dial(foreign_trusting_us, "mallory", receiver.port)
            intruder.send([encode_control_frame(MessageType.CHAT, 0, {"text": "let me in"})])
            intruder.recv()
        wait_for(lambda: "refused peer" in caplog.text, 10, "the receiver's refusal in its log")
    finally:
        receiver.stop()
        receiver.join(10)
    assert "certificate" in caplog.text
    assert heard == []


def test_a_sender_refuses_a_receiver_from_another_ca_without_retrying(pki: Path, foreign_pki: Path) -> None:
    impostor = Receiver(LOCALHOST, 0, pki_dir=foreign_pki, name="mallory")
    impostor.start()
    sender = Sender(LOCALHOST, impostor.port, pki_dir=pki, name="alice", retry_for=300)
    sender.start()
    try:
        sender.join(timeout=60)
        assert not sender.is_alive()
        assert isinstance(sender.error, P2PError)
        assert "certificate verify failed" in str(sender.error)
        with pytest.raises(P2PError):
            sender.send_message("anyone there?")
    finally:
        sender.stop()
        impostor.stop()
        impostor.join(10)


def test_only_allowed_peers_get_in(pki: Path) -> None:
    receiver = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob", allowed_peers={"carol"})
    receiver.start()
    connection = dial(pki, "alice", receiver.port)
    try:
        bye = connection.recv()
        assert bye.type is MessageType.BYE
        assert bye.body["reason"] == "alice is not allowed on this session"
    finally:
        connection.close()
        receiver.stop()
        receiver.join(10)


def test_plain_text_only_when_asked_for_by_name(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(PKIError, match="insecure_plaintext=True"):
        Receiver(LOCALHOST, 0)
    with pytest.raises(P2PError, match="pick one"):
        Sender(LOCALHOST, 1, pki_dir=pki, name="alice", insecure_plaintext=True)
    heard: queue.Queue[tuple[str, str]] = queue.Queue()
    with caplog.at_level(logging.WARNING, logger="edgefed.p2p"):
        receiver = Receiver(LOCALHOST, 0, insecure_plaintext=True, on_chat=lambda p, t: heard.put((p, t)))
        sender = Sender(LOCALHOST, receiver.port, insecure_plaintext=True)
    assert caplog.text.count("INSECURE PLAINTEXT") == 2
    receiver.start()
    sender.start()
    try:
        sender.send_message("in the clear").result(timeout=30)
        peer, text = heard.get(timeout=30)
        assert text == "in the clear"
        assert peer.startswith("unauthenticated@127.0.0.1:")
    finally:
        sender.stop()
        receiver.stop()
        sender.join(10)
        receiver.join(10)


def test_a_plaintext_sender_cannot_talk_to_a_tls_receiver(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    heard: list[str] = []
    receiver = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob", on_chat=lambda p, t: heard.append(t))
    sender = Sender(LOCALHOST, receiver.port, insecure_plaintext=True, retry_for=1)
    receiver.start()
    sender.start()
    try:
        with caplog.at_level(logging.WARNING, logger="edgefed.p2p"):
            sender.send_message("in the clear")
            wait_for(lambda: "TLS handshake refused" in caplog.text, 10, "the receiver to refuse the link")
    finally:
        sender.stop()
        receiver.stop()
        sender.join(10)
        receiver.join(10)
    assert heard == []


def test_the_session_ends_by_itself_and_says_goodbye(pki: Path) -> None:
    receiver = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob", lifetime=1.0)
    receiver.start()
    connection = dial(pki, "alice", receiver.port)
    try:
        bye = connection.recv()  # blocks until the receiver closes the session
        assert bye.type is MessageType.BYE
        assert bye.body["reason"] == "session lifetime of 1s is over"
    finally:
        connection.close()
    receiver.join(timeout=30)
    assert not receiver.is_alive()
    with pytest.raises(TransportError, match="cannot connect"):
        dial(pki, "alice", receiver.port)


def test_an_unreachable_peer_ends_the_sender_with_a_clear_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind((LOCALHOST, 0))
        port = probe.getsockname()[1]
    sender = Sender(LOCALHOST, port, insecure_plaintext=True, retry_for=1)
    sender.start()
    sender.join(timeout=30)
    assert not sender.is_alive()
    assert isinstance(sender.error, PeerUnreachable)
    assert f"cannot connect to 127.0.0.1:{port}" in str(sender.error)
    assert "gave up after retrying for 1s" in str(sender.error)


def test_a_chat_only_receiver_refuses_files(pki: Path, tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_text("notes")
    receiver = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob")
    sender = Sender(LOCALHOST, receiver.port, pki_dir=pki, name="alice")
    receiver.start()
    sender.start()
    try:
        with pytest.raises(TransferRefused, match="does not accept files"):
            sender.send_file(source).result(timeout=30)
        sender.send_message("still talking").result(timeout=30)
    finally:
        sender.stop()
        receiver.stop()
        sender.join(10)
        receiver.join(10)


def test_a_sender_pinned_to_a_peer_name_refuses_another_node(pki: Path) -> None:
    receiver = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob")
    receiver.start()
    sender = Sender(LOCALHOST, receiver.port, pki_dir=pki, name="alice", expect_peer="carol", retry_for=300)
    sender.start()
    try:
        sender.join(timeout=60)
        assert not sender.is_alive()
        assert isinstance(sender.error, P2PError)
        assert "not valid for 'carol'" in str(sender.error)
    finally:
        sender.stop()
        receiver.stop()
        receiver.join(10)


def test_ctrl_c_ends_a_receiving_session_only_after_its_peers_got_their_goodbye(
    pki: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C in `edgefed p2p receive`: the command returns only once the receiver has closed.

    In Python 3.11 a KeyboardInterrupt landing in Thread.join() marks a running thread as stopped, so
    a session that joined its receiver let the process exit in the middle of the receiver's shutdown.
    """
    out = StringIO()
    terminal = session.Terminal(out=out, err=StringIO(), progress=False)
    goodbyes: list[str] = []

    def peer() -> None:
        wait_for(lambda: "listening on" in out.getvalue(), 30, "the receiver to listen")
        port = int(out.getvalue().split("listening on 127.0.0.1:")[1].split()[0].rstrip(";"))
        connection = dial(pki, "alice", port)
        try:
            connection.send([encode_control_frame(MessageType.CHAT, 0, {"text": "still here"})])
            wait_for(lambda: "alice: still here" in out.getvalue(), 30, "the chat line to arrive")
            os.kill(os.getpid(), signal.SIGINT)  # the main thread is waiting in session.receive()
            bye = connection.recv()
            goodbyes.append(f"{bye.type.name} {bye.body['reason']}")
        finally:
            connection.close()

    thread = threading.Thread(target=peer, daemon=True)
    thread.start()
    credentials = NodeCredentials.load(pki, "bob")
    with caplog.at_level(logging.INFO, logger="edgefed.p2p"), pytest.raises(KeyboardInterrupt):
        session.receive(Endpoint(LOCALHOST, 0), tmp_path / "inbox", terminal, credentials, lifetime=120)
    assert "p2p receiver bob closed: stopped" in caplog.text  # before receive() gave up the main thread
    thread.join(timeout=30)
    assert goodbyes == ["BYE stopped"]


def test_stop_hangs_up_on_a_peer_still_in_its_handshake(pki: Path) -> None:
    receiver = Receiver(LOCALHOST, 0, pki_dir=pki, name="bob")
    receiver.start()
    try:
        with socket.create_connection((LOCALHOST, receiver.port), timeout=30) as silent:  # never says hello
            handler = f"p2p-peer-127.0.0.1:{silent.getsockname()[1]}"
            wait_for(lambda: handler in {t.name for t in threading.enumerate()}, 30, "its handler")
            receiver.stop()
            assert receiver.finished.wait(30)
            # Hung up on (not left to the handshake's 15 s timeout), and its handler is gone.
            assert silent.recv(1) == b""
            assert handler not in {t.name for t in threading.enumerate()}
    finally:
        receiver.stop()
        receiver.join(30)


def test_a_given_transport_is_used_as_is(pki: Path) -> None:
    with pytest.raises(P2PError, match="not both"):
        Receiver(LOCALHOST, 0, pki_dir=pki, name="bob", transport=PlainTransport())
    with pytest.raises(P2PError, match="plain-text link"):
        Sender(LOCALHOST, 1, transport=PlainTransport(), expect_peer="bob")
    heard: queue.Queue[tuple[str, str]] = queue.Queue()
    receiver = Receiver(LOCALHOST, 0, transport=PlainTransport(), on_chat=lambda p, t: heard.put((p, t)))
    sender = Sender(LOCALHOST, receiver.port, transport=PlainTransport())
    receiver.start()
    sender.start()
    try:
        sender.send_message("over a transport made by the caller").result(timeout=30)
        peer, text = heard.get(timeout=30)
        assert (peer.split("@")[0], text) == ("unauthenticated", "over a transport made by the caller")
        assert receiver.own_name == sender.own_name == "unauthenticated"
    finally:
        sender.stop()
        receiver.stop()
        sender.join(10)
        receiver.join(10)
