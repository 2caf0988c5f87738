"""`edgefed p2p` as real processes on 127.0.0.1, with certificates issued by edgefed.pki in tmp dirs."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from edgefed.pki import init_ca, issue_node
from edgefed.transport import free_port as transport_free_port

CLI = [sys.executable, "-c", "import sys; from edgefed.cli import main; sys.exit(main())"]
MiB = 1 << 20


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    init_ca(root)
    for name in ("alice", "bob"):
        issue_node(root, name)
    return root


@pytest.fixture(scope="module")
def foreign_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("foreign-pki")
    init_ca(root, common_name="some other CA")
    issue_node(root, "mallory")
    return root


class Edgefed:
    """One `edgefed` process; its stdout and stderr go to files the test can read at any time."""

    def __init__(
        self, workdir: Path, label: str, *args: str | Path, stdin: int | None = None, sigint_ignored: bool = False
    ) -> None:
        self.out_path, self.err_path = workdir / f"{label}.out", workdir / f"{label}.err"
        self._out, self._err = self.out_path.open("w"), self.err_path.open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        # sigint_ignored: started as `cmd &` by a shell without job control (make or a script in the background).
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        self.process = subprocess.Popen(
            [*CLI, *map(str, args)], stdin=stdin, stdout=self._out, stderr=self._err, env=env, text=True,
            preexec_fn=ignore,
        )

    @property
    def stdin(self) -> IO[str]:
        assert self.process.stdin is not None
        return self.process.stdin

    def out(self) -> str:
        return self.out_path.read_text()

    def err(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self._out.close()
        self._err.close()
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self._out.close()
        self._err.close()

    def peak_rss(self) -> int:
        """Peak resident memory of the process so far (kernel high-water mark), in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        assert match, status
        return int(match.group(1)) * 1024


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def listening_port(process: Edgefed) -> int:
    wait_for(lambda: "listening on" in process.out() or process.process.poll() is not None, 60, "listening")
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", process.out())
    assert match, f"no listening line; stdout={process.out()!r} stderr={process.err()!r}"
    return int(match.group(1))


def free_port() -> int:
    return transport_free_port("127.0.0.1")


def receiver(tmp_path: Path, pki: Path, *extra: str, label: str = "receiver") -> tuple[Edgefed, int]:
    process = Edgefed(
        tmp_path, label, "-v", "p2p", "receive", "--listen", "127.0.0.1:0", "--dir", tmp_path / "inbox",
        "--pki", pki, "--name", "bob", *extra,
    )
    return process, listening_port(process)


def write_random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        for _ in range(size // MiB):
            block = os.urandom(MiB)
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def test_two_processes_chat_both_ways(pki: Path, tmp_path: Path) -> None:
    alice_port, bob_port = free_port(), free_port()
    common: list[str | Path] = ["--pki", pki, "--for", "2m", "--retry-for", "30s"]
    alice = Edgefed(tmp_path, "alice", "p2p", "chat", "--listen", f"127.0.0.1:{alice_port}",
                    "--peer", f"127.0.0.1:{bob_port}", "--name", "alice", "--peer-name", "bob", *common,
                    stdin=subprocess.PIPE)
    bob = Edgefed(tmp_path, "bob", "p2p", "chat", "--listen", f"127.0.0.1:{bob_port}",
                  "--peer", f"127.0.0.1:{alice_port}", "--name", "bob", "--peer-name", "alice", *common,
                  stdin=subprocess.PIPE)
    try:
        wait_for(lambda: "connected to bob" in alice.out(), 60, "alice to reach bob")
        wait_for(lambda: "connected to alice" in bob.out(), 60, "bob to reach alice")
        alice.stdin.write("hello bob, this is alice\n")
        alice.stdin.flush()
        wait_for(lambda: "alice: hello bob, this is alice" in bob.out(), 30, "bob to hear alice")
        bob.stdin.write("hi alice \x1b[31m\n")
        bob.stdin.flush()
        wait_for(lambda: "bob: hi alice \\x1b[31m" in alice.out(), 30, "alice to hear bob")
        # End of input ends each side's chat.
        alice.stdin.close()
        bob.stdin.close()
        assert alice.wait(30) == 0, alice.err()
        assert bob.wait(30) == 0, bob.err()
    finally:
        alice.stop()
        bob.stop()
    assert "chat over" in alice.out()


def test_a_200_mib_file_arrives_identical_and_receiver_memory_stays_flat(pki: Path, tmp_path: Path) -> None:
    size = 200 * MiB
    source = tmp_path / "big.bin"
    expected = write_random_file(source, size)
    rx, port = receiver(tmp_path, pki, "--for", "10m")
    try:
        before = rx.peak_rss()  # interpreter, numpy, cryptography, rich: loaded before "listening"
        tx = Edgefed(tmp_path, "sender", "p2p", "send", source, "--peer", f"127.0.0.1:{port}",
                     "--pki", pki, "--name", "alice")
        assert tx.wait(300) == 0, tx.err()
        peak = rx.peak_rss()
    finally:
        rx.stop()
    arrived = tmp_path / "inbox" / "big.bin"
    assert arrived.stat().st_size == size
    assert sha256_of(arrived) == expected
    assert f"received: big.bin (200.0 MiB, sha256 {expected}) by bob" in tx.out()
    assert f"received big.bin (200.0 MiB, sha256 {expected}) from alice" in rx.out()
    # The rich progress bars (stderr; drawn once at the end when it is not a terminal).
    assert re.search(r"big\.bin → bob .*200\.0/200\.0 MiB", tx.err())
    assert re.search(r"big\.bin ← alice .*200\.0/200\.0 MiB", rx.err())
    # A memory bound, not a timing: chunks are streamed to disk, so the receiver's peak resident
    # memory (interpreter and libraries included) stays far below the size of the file.
    print(f"receiver peak RSS: {before / MiB:.1f} MiB listening, {peak / MiB:.1f} MiB after {size // MiB} MiB")
    assert peak < size // 3
    assert peak - before < size // 10


def test_a_transfer_cut_by_killing_the_sender_resumes_and_completes(pki: Path, tmp_path: Path) -> None:
    size = 64 * MiB
    source = tmp_path / "data.bin"
    expected = write_random_file(source, size)
    part = tmp_path / "inbox" / ".data.bin.part"
    rx, port = receiver(tmp_path, pki, "--for", "10m", "--no-progress")
    try:
        # The rate cap only makes sure the kill lands in the middle of the file.
        first = Edgefed(tmp_path, "first", "p2p", "send", source, "--peer", f"127.0.0.1:{port}",
                        "--pki", pki, "--name", "alice", "--max-rate", "16M", "--no-progress")
        wait_for(lambda: part.exists() and part.stat().st_size >= 8 * MiB, 60, "the first 8 MiB to arrive")
        first.process.kill()
        first.wait(30)
        wait_for(lambda: "kept for resume" in rx.err(), 30, "the receiver to notice the cut")
        match = re.search(r"interrupted at (\d+) of (\d+) bytes; kept for resume", rx.err())
        assert match
        held = int(match.group(1))
        assert 0 < held < size
        assert part.stat().st_size == held
        assert not (tmp_path / "inbox" / "data.bin").exists()

        second = Edgefed(tmp_path, "second", "p2p", "send", source, "--peer", f"127.0.0.1:{port}",
                         "--pki", pki, "--name", "alice", "--no-progress")
        assert second.wait(120) == 0, second.err()
    finally:
        rx.stop()
    assert f"resumed at {held} bytes" in second.out()
    assert sha256_of(tmp_path / "inbox" / "data.bin") == expected
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["data.bin"]


def test_hostile_file_names_are_refused_with_a_clear_error(pki: Path, tmp_path: Path) -> None:
    source = tmp_path / "passwd"
    source.write_text("root::0:0::/root:/bin/sh\n")
    rx, port = receiver(tmp_path, pki, "--for", "5m")
    try:
        for hostile, reason in [("../../etc/passwd", "it contains a path separator"),
                                ("/etc/passwd", "absolute paths are not accepted")]:
            tx = Edgefed(tmp_path, "sender", "p2p", "send", source, "--as", hostile,
                         "--peer", f"127.0.0.1:{port}", "--pki", pki, "--name", "alice")
            assert tx.wait(60) == 2
            assert f"bob did not take '{hostile}': refused file name '{hostile}': {reason}" in tx.err()
    finally:
        rx.stop()
    assert "refused offer from alice" in rx.err()
    assert list((tmp_path / "inbox").iterdir()) == []


def test_a_peer_with_a_certificate_from_another_ca_is_refused(
    pki: Path, foreign_pki: Path, tmp_path: Path
) -> None:
    source = tmp_path / "payload.bin"
    source.write_bytes(b"payload")
    # mallory trusts our CA, so only the receiver's own check of mallory's certificate stops her.
    trusting_us = tmp_path / "mallory-pki"
    shutil.copytree(foreign_pki / "nodes", trusting_us / "nodes")
    shutil.copy(pki / "ca.crt", trusting_us / "ca.crt")
    rx, port = receiver(tmp_path, pki, "--for", "5m")
    try:
        intruder = Edgefed(tmp_path, "intruder", "p2p", "send", source, "--peer", f"127.0.0.1:{port}",
                           "--pki", trusting_us, "--name", "mallory", "--retry-for", "1s")
        assert intruder.wait(60) == 2
        wait_for(lambda: "refused peer" in rx.err(), 30, "the receiver's refusal")
        # A sender that only trusts another CA refuses our receiver at once, too.
        outsider = Edgefed(tmp_path, "outsider", "p2p", "send", source, "--peer", f"127.0.0.1:{port}",
                           "--pki", foreign_pki, "--name", "mallory")
        assert outsider.wait(60) == 2
    finally:
        rx.stop()
    assert "certificate" in rx.err()
    assert "payload.bin: not sent" in intruder.err()
    assert "refused as a peer" in outsider.err()
    assert "certificate verify failed" in outsider.err()
    assert list((tmp_path / "inbox").iterdir()) == []


def test_the_receiving_session_ends_by_itself_after_its_lifetime(pki: Path, tmp_path: Path) -> None:
    rx, _port = receiver(tmp_path, pki, "--for", "2s")
    try:
        assert rx.wait(60) == 0, rx.err()
    finally:
        rx.stop()
    assert "session ends after 2s" in rx.out()
    assert "session over: session lifetime of 2s is over" in rx.out()


def test_a_chat_ends_by_itself_after_its_lifetime(pki: Path, tmp_path: Path) -> None:
    alice = Edgefed(tmp_path, "alice", "p2p", "chat", "--listen", "127.0.0.1:0", "--peer",
                    f"127.0.0.1:{free_port()}", "--pki", pki, "--name", "alice", "--for", "2s",
                    stdin=subprocess.PIPE)
    try:
        assert alice.wait(60) == 0, alice.err()
    finally:
        alice.stop()
    assert "chat over: session lifetime of 2s is over" in alice.out()


def test_plain_text_needs_the_loud_option_and_warns(tmp_path: Path) -> None:
    missing = Edgefed(tmp_path, "missing", "p2p", "receive", "--listen", "127.0.0.1:0", "--dir",
                      tmp_path / "inbox", "--pki", tmp_path / "nowhere")
    assert missing.wait(60) == 2
    assert "--name is required" in missing.err()
    source = tmp_path / "note.txt"
    source.write_text("in the clear")
    rx = Edgefed(tmp_path, "receiver", "p2p", "receive", "--listen", "127.0.0.1:0", "--dir",
                 tmp_path / "inbox", "--insecure-plaintext", "--for", "5m")
    port = listening_port(rx)
    try:
        tx = Edgefed(tmp_path, "sender", "p2p", "send", source, "--peer", f"127.0.0.1:{port}",
                     "--insecure-plaintext")
        assert tx.wait(60) == 0, tx.err()
    finally:
        rx.stop()
    assert (tmp_path / "inbox" / "note.txt").read_text() == "in the clear"
    assert "INSECURE PLAINTEXT" in rx.err()
    assert "INSECURE PLAINTEXT" in tx.err()
    assert "by unauthenticated" in tx.out()


def test_sigint_ends_a_receiver_that_inherited_it_ignored(pki: Path, tmp_path: Path) -> None:
    """Started in the background by a shell without job control, the receiver still stops on SIGINT,
    closing its session with a peer connected, with exit status 130 (not left for a SIGKILL)."""
    rx = Edgefed(tmp_path, "receiver", "-v", "p2p", "receive", "--listen", "127.0.0.1:0", "--dir", tmp_path / "inbox",
                 "--pki", pki, "--name", "bob", "--for", "10m", sigint_ignored=True)
    port = listening_port(rx)
    chat = Edgefed(tmp_path, "alice", "p2p", "chat", "--listen", "127.0.0.1:0", "--peer", f"127.0.0.1:{port}",
                   "--pki", pki, "--name", "alice", "--for", "10m", stdin=subprocess.PIPE)
    try:
        chat.stdin.write("are you there?\n")
        chat.stdin.flush()
        wait_for(lambda: "alice: are you there?" in rx.out(), 60, "the receiver to hear alice")
        rx.process.send_signal(signal.SIGINT)
        assert rx.wait(60) == 130, rx.err()
    finally:
        rx.stop()
        chat.stop()
    assert "p2p receiver bob closed: stopped" in rx.err()
