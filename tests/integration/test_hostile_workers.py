"""A worker holding a valid certificate of the deployment CA, turned hostile: each case of issue 13
reproduced against a real chief over real mutual-TLS sockets on loopback."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edgefed import pki
from edgefed.config import NodeConfig
from edgefed.federation.checkpoint import load_checkpoint
from edgefed.federation.chief import ChiefSession
from edgefed.pki import NodeCredentials
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.transport import TransportError, client_context, connect_tls
from edgefed.wire import FrameHeader, MessageType, encode_control_frame, encode_header, encode_tensor_frame
from edgefed.wiring import build_chief, build_worker
from tests.conftest import Processes, free_port, wait_for
from tests.integration.test_refusals import Mallory

ChiefFactory = Callable[..., tuple[ChiefSession, int]]


@pytest.fixture
def chief_with(
    make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], processes: Processes
) -> Iterator[ChiefFactory]:
    """start(**settings): a chief in this process, listening, and worker1 as a process dialling it."""
    chiefs: list[ChiefSession] = []

    def start(**settings: object) -> tuple[ChiefSession, int]:
        port = free_port()
        merged = {"min_workers": 2, "rounds": 100, "round_timeout": 60.0, **settings}
        chief = build_chief(make_config("chief", "chief", port, **merged), ledger=False)
        chiefs.append(chief)
        chief.listen()
        processes.edgefed("worker", "--config", str(write_config("worker1", "worker", port, rounds=100)),
                          log_name="worker1")
        return chief, port

    yield start
    for chief in chiefs:
        chief.close()


def errors_of(chief: ChiefSession) -> list[str]:
    try:
        document = json.loads(chief.status.path.read_text())
    except json.JSONDecodeError:  # seen once under load 20 (cause not found; the writes are atomic
        return []                 # renames): the pollers retry, the one-shot callers fail on []
    return [e["message"] for e in document["errors"]]


def test_a_huge_finite_update_does_not_poison_the_model(
    chief_with: ChiefFactory, pki_dir: Path, tmp_path: Path
) -> None:
    chief, port = chief_with()
    mallory = Mallory(pki_dir, port)
    weights = SoftmaxTrainer().get_weights()
    chief.start(weights)
    round_, model = mallory.next_weights()
    mallory.conn.send(encode_tensor_frame(
        MessageType.UPDATE, round_, [np.full_like(model[0], 3e38), np.full_like(model[1], 3e38)], 1000))
    result = chief.average(weights, 100)
    assert "mallory" in result.participants  # finite, so taken (screening is what refuses it)
    assert all(np.isfinite(w).all() for w in result.weights)
    checkpoint = load_checkpoint(tmp_path / "state" / "chief")
    assert checkpoint is not None and all(np.isfinite(w).all() for w in checkpoint.weights)
    # a finite update on the (damaged but finite) model is still taken: before the fix every later
    # update was refused against an Inf model. (worker1's trainer may itself overflow on such weights;
    # update screening, not the sum, is what keeps the huge update out in the first place.)
    round_, model = mallory.next_weights()
    assert all(np.isfinite(w).all() for w in model)
    mallory.update(round_, model)
    after = chief.average(result.weights, 100)
    assert "mallory" in after.participants and all(np.isfinite(w).all() for w in after.weights)


def test_a_stalled_upload_delays_its_round_by_its_upload_deadline_only(chief_with: ChiefFactory, pki_dir: Path) -> None:
    chief, port = chief_with(upload_grace=1.0, min_upload_rate=1 << 20, round_timeout=300.0)
    mallory = Mallory(pki_dir, port)
    weights = SoftmaxTrainer().get_weights()
    chief.start(weights)
    round_, model = mallory.next_weights()
    frame = b"".join(bytes(p) for p in encode_tensor_frame(MessageType.UPDATE, round_, model, 50))
    mallory.conn.send([frame[: len(frame) // 2]])  # half, then silence: holds the only upload slot
    result = chief.average(weights, 100)
    assert sorted(result.participants) == ["chief", "worker1"]  # worker1's upload got the slot after all
    errors = errors_of(chief)
    assert any("mallory left: upload too slow" in e for e in errors), errors
    assert not any("deadline passed" in e for e in errors), errors  # round_timeout (300 s) never reached
    assert "worker1" in chief.average(result.weights, 100).participants


def test_updates_for_a_future_round_and_hello_lies_are_refused_with_their_own_codes(
    chief_with: ChiefFactory, pki_dir: Path
) -> None:
    chief, port = chief_with()
    mallory = Mallory(pki_dir, port)
    chief.start(SoftmaxTrainer().get_weights())
    round_, model = mallory.next_weights()
    mallory.update(round_ + 5, model)
    reject = mallory.conn.recv()
    assert reject.type is MessageType.REJECT and reject.body["code"] == "future-round"
    assert reject.body["reason"] == f"update for round {round_ + 5} is ahead of the chief's round {round_}"

    lies = (({"num_samples": -3}, "bad-hello"), ({"protocol": 7, "num_samples": 1}, "unsupported-protocol"))
    for hello, code in lies:
        liar = connect_tls("127.0.0.1", port, client_context(NodeCredentials.load(pki_dir, "worker2")))
        liar.send([encode_control_frame(MessageType.HELLO, 0, hello)])
        bye = liar.recv()
        assert bye.type is MessageType.BYE and bye.body["code"] == code, bye.body
        liar.close()
    assert "worker2" not in chief.participants()


def test_the_same_certificate_twice_is_refused_and_the_live_worker_keeps_its_seat(
    chief_with: ChiefFactory, pki_dir: Path
) -> None:
    chief, port = chief_with()
    mallory = Mallory(pki_dir, port)
    weights = SoftmaxTrainer().get_weights()
    chief.start(weights)
    round_, model = mallory.next_weights()
    twin = connect_tls("127.0.0.1", port, client_context(NodeCredentials.load(pki_dir, "mallory")))
    twin.send([encode_control_frame(MessageType.HELLO, 0, {"num_samples": 50, "protocol": 1})])
    bye = twin.recv()
    assert bye.type is MessageType.BYE and bye.body["code"] == "duplicate-identity"
    mallory.update(round_, model)  # the first connection was not replaced: its update counts
    assert sorted(chief.average(weights, 100).participants) == ["chief", "mallory", "worker1"]


def _vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _raw_tls(pki_dir: Path, port: int, name: str) -> ssl.SSLSocket:
    context = client_context(NodeCredentials.load(pki_dir, name))
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="127.0.0.1")


def _closed_by_peer(tls: ssl.SSLSocket) -> bool:
    try:
        return tls.recv(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True


def test_a_tensor_frame_before_hello_gets_no_memory(
    write_config: Callable[..., Path], processes: Processes, pki_dir: Path
) -> None:
    port = free_port()
    chief = processes.edgefed("chief", "--config", str(write_config("chief", "chief", port, wait_time=600.0)),
                              log_name="chief")
    wait_for(lambda: "listening on" in processes.log("chief"), 60, "the chief to listen")
    before = _vm_rss_kib(chief.pid)
    tensor = np.ones(32 << 20, np.float32)  # 128 MiB declared and sent as the very first frame
    parts = encode_tensor_frame(MessageType.UPDATE, 0, [tensor], 1)
    payload = b"".join(bytes(p) for p in parts)
    with _raw_tls(pki_dir, port, "mallory") as tls:
        tls.sendall(payload[:-1])  # all but the last byte: the chief still holds whatever it allocated
        grown_mib = (_vm_rss_kib(chief.pid) - before) / 1024
        assert grown_mib < 48, f"the chief grew by {grown_mib:.0f} MiB for a frame before HELLO"
        tls.sendall(payload[-1:])
        assert _closed_by_peer(tls)  # and the connection is closed: UPDATE is no way to open
    assert "opened with UPDATE instead of HELLO" in processes.log("chief")


def test_a_trickled_first_frame_does_not_extend_its_deadline(chief_with: ChiefFactory, pki_dir: Path) -> None:
    chief, port = chief_with(hello_timeout=2.0)
    hello = encode_control_frame(MessageType.HELLO, 0, {"num_samples": 1, "protocol": 1, "pad": "x" * 200})
    with _raw_tls(pki_dir, port, "mallory") as tls:
        tls.settimeout(0.5)
        closed = False
        for byte in hello:  # one byte every 0.5 s: each gap is under the deadline, the sum is far over
            try:
                tls.sendall(bytes([byte]))
                closed = tls.recv(1) == b""
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError):
                closed = True
            if closed:
                break
        assert closed, "the chief waited for the whole trickled HELLO"
    wait_for(lambda: any("no whole first frame within 2s" in e for e in errors_of(chief)), 10, "the refusal")
    assert "mallory" not in chief.participants()


def test_connections_before_hello_are_capped(chief_with: ChiefFactory, pki_dir: Path) -> None:
    chief, port = chief_with(max_pending_connections=2)
    wait_for(lambda: chief.participants() == ["worker1"], 60, "worker1 to join")
    silent = [_raw_tls(pki_dir, port, "mallory") for _ in range(2)]  # handshake, then say nothing
    try:  # both handshakes are done, so the chief has accepted (and counted) both
        extra = _raw_tls(pki_dir, port, "worker2")
        extra.settimeout(30)
        assert _closed_by_peer(extra)
        wait_for(lambda: any("too many connections before HELLO (cap 2)" in e for e in errors_of(chief)), 10,
                 "the refusal to be recorded")
        extra.close()
    finally:
        for tls in silent:
            tls.close()
    # the cap frees as the silent ones go: a real worker joins again
    wait_for(lambda: sum("mallory: mallory closed the connection" in e for e in errors_of(chief)) == 2, 10,
             "the chief to see both silent connections go")
    worker2 = Mallory(pki_dir, port, "worker2")
    wait_for(lambda: "worker2" in chief.participants(), 30, "worker2 to join once the cap freed")
    worker2.conn.close()


def test_a_worker_dials_only_its_chief_by_name(make_config: Callable[..., NodeConfig], pki_dir: Path) -> None:
    """Any node of the CA whose certificate matches the dialled address could pose as the chief."""
    pki.issue_node(pki_dir, "impostor", ["127.0.0.1"])
    port = free_port()
    real = build_chief(make_config("chief", "chief", port, wait_time=0.0, rounds=100), ledger=False)
    real.listen()
    worker = build_worker(make_config("worker2", "worker", port, reconnect_timeout=2.0), ledger=False)
    impostor = None
    try:
        real.start(SoftmaxTrainer().get_weights())
        info = worker.start(None, 10)  # no chief_name configured: the first chief's name is pinned
        assert worker.chief == "chief"
        real.close()
        impostor = build_chief(make_config("impostor", "chief", port, rounds=100), ledger=False)
        impostor.listen()  # same address, a valid certificate of the same CA
        with pytest.raises(TransportError, match="is 'impostor', not the chief 'chief'"):
            worker.average(info.weights, 10)
    finally:
        worker.close()
        real.close()
        if impostor is not None:
            impostor.close()

    configured = build_worker(make_config("worker3", "worker", port, chief_name="chief", reconnect_timeout=1.0),
                              ledger=False)
    second = build_chief(make_config("impostor", "chief", port, rounds=100), ledger=False)
    second.listen()
    try:
        with pytest.raises(TransportError, match="is 'impostor', not the chief 'chief'"):
            configured.start(None, 10)  # federation.chief_name: refused on the very first join
    finally:
        configured.close()
        second.close()


def _deeply_nested_control_frame(message_type: MessageType) -> bytes:
    body = b'{"a":' * 100_000 + b"1" + b"}" * 100_000  # 600 KB: under the control limit, 100,000 deep
    return encode_header(FrameHeader(message_type, 0, len(body))) + body


def test_a_body_that_chokes_the_decoder_costs_one_connection_before_and_after_hello(
    chief_with: ChiefFactory, pki_dir: Path
) -> None:
    chief, port = chief_with(round_timeout=300.0)
    with _raw_tls(pki_dir, port, "worker3") as tls:  # as the very first frame
        tls.sendall(_deeply_nested_control_frame(MessageType.HELLO))
        assert _closed_by_peer(tls)
    wait_for(lambda: any(e.startswith("worker3: ") for e in errors_of(chief)), 10, "a one-line error")
    mallory = Mallory(pki_dir, port)
    weights = SoftmaxTrainer().get_weights()
    chief.start(weights)
    mallory.next_weights()
    mallory.conn.send([_deeply_nested_control_frame(MessageType.BYE)])  # after HELLO, from a joined worker
    result = chief.average(weights, 100)  # not round_timeout: mallory is dropped, not left registered
    assert sorted(result.participants) == ["chief", "worker1"]
    errors = errors_of(chief)
    assert any(e.startswith("mallory left: ") for e in errors), errors
    assert not any("deadline passed" in e for e in errors), errors
