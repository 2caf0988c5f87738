"""Misbehaving peers are refused with a clear reason while the chief keeps serving the others."""

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
from edgefed.federation.chief import ChiefSession
from edgefed.pki import NodeCredentials
from edgefed.trainers.softmax import SoftmaxTrainer
from edgefed.transport import TlsConnection, TransportError, client_context, connect_tls
from edgefed.wire import (
    FrameHeader,
    MessageType,
    encode_control_frame,
    encode_header,
    encode_tensor_frame,
)
from edgefed.wiring import build_chief
from tests.conftest import Processes, free_port, wait_for


class Mallory:
    """A worker with a valid certificate that sends whatever the test tells it to."""

    def __init__(self, pki_dir: Path, port: int, name: str = "mallory") -> None:
        self.conn: TlsConnection = connect_tls("127.0.0.1", port, client_context(NodeCredentials.load(pki_dir, name)))
        self.conn.send([encode_control_frame(MessageType.HELLO, 0, {"num_samples": 50})])

    def next_weights(self) -> tuple[int, list[np.ndarray]]:
        while (frame := self.conn.recv()).type is not MessageType.WEIGHTS:
            pass
        assert frame.tensors is not None
        return frame.round, frame.tensors

    def update(self, round_: int, tensors: list[np.ndarray]) -> None:
        self.conn.send(encode_tensor_frame(MessageType.UPDATE, round_, tensors, 50))

    def rejection(self) -> str:
        frame = self.conn.recv()
        assert frame.type is MessageType.REJECT, frame.type
        return str(frame.body["reason"])


@pytest.fixture
def chief_with_good_worker(
    make_config: Callable[..., NodeConfig], write_config: Callable[..., Path], processes: Processes, pki_dir: Path,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[ChiefSession, int]]:
    port = free_port()
    rules = getattr(request, "param", {})  # the chief's aggregation settings, when a test parametrizes them
    config = make_config("chief", "chief", port, min_workers=2, rounds=100, round_timeout=30.0, **rules)
    chief = build_chief(config, ledger=False)
    chief.listen()
    processes.edgefed("worker", "--config", str(write_config("worker1", "worker", port, rounds=100)),
                      log_name="worker1")
    yield chief, port
    chief.close()


def status_errors(chief: ChiefSession) -> list[str]:
    return [e["message"] for e in json.loads(chief.status.path.read_text())["errors"]]


def start_with_mallory(chief_with_good_worker: tuple[ChiefSession, int], pki_dir: Path
                       ) -> tuple[ChiefSession, Mallory, list[np.ndarray]]:
    """Mallory connected, then the training started: the chief, Mallory and the starting weights."""
    chief, port = chief_with_good_worker
    mallory = Mallory(pki_dir, port)
    weights = SoftmaxTrainer().get_weights()
    chief.start(weights)
    return chief, mallory, weights


def test_bad_updates_are_rejected_and_the_rounds_go_on(
    chief_with_good_worker: tuple[ChiefSession, int], pki_dir: Path
) -> None:
    chief, mallory, weights = start_with_mallory(chief_with_good_worker, pki_dir)
    round_, model = mallory.next_weights()

    mallory.update(round_, [model[0].T.copy(), model[1]])  # wrong shape
    assert "update does not fit the model: tensor 0 is float32[10, 64], expected float32[64, 10]" in mallory.rejection()
    result = chief.average(weights, 100)
    assert sorted(result.participants) == ["chief", "worker1"]

    round_, model = mallory.next_weights()
    mallory.update(round_, [model[0].astype(np.float64), model[1]])  # wrong dtype
    assert "tensor 0 is float64[64, 10], expected float32[64, 10]" in mallory.rejection()
    result = chief.average(result.weights, 100)
    assert sorted(result.participants) == ["chief", "worker1"]

    round_, model = mallory.next_weights()
    poisoned = model[0].copy()
    poisoned[3, 3] = np.nan
    mallory.update(round_, [poisoned, model[1]])
    assert mallory.rejection() == "tensor 0 contains NaN or Inf"
    result = chief.average(result.weights, 100)
    assert sorted(result.participants) == ["chief", "worker1"]

    round_, model = mallory.next_weights()
    mallory.update(round_ - 1, model)  # stale
    assert mallory.rejection() == f"stale update for round {round_ - 1}; the chief is at round {round_}"
    mallory.update(round_, model)  # and a good one is still taken
    result = chief.average(result.weights, 100)
    assert sorted(result.participants) == ["chief", "mallory", "worker1"]
    errors = status_errors(chief)
    assert any("rejected update from mallory: tensor 0 contains NaN or Inf" in e for e in errors)


@pytest.mark.parametrize("chief_with_good_worker", [{"aggregation": "clip"}, {"screen_factor": 3.0}],
                         indirect=True, ids=["clip", "screening"])
def test_nan_and_inf_are_refused_where_the_distance_stands_in_for_the_finite_check(
    chief_with_good_worker: tuple[ChiefSession, int], pki_dir: Path
) -> None:
    # Under clip and screening the chief measures each upload's distance, and a finite distance is its
    # finite check (edgefed/federation/chief.py): a NaN or an Inf must still be refused, nothing folded.
    chief, mallory, weights = start_with_mallory(chief_with_good_worker, pki_dir)
    for bad in (np.nan, np.inf, -np.inf):
        round_, model = mallory.next_weights()
        poisoned = model[1].copy()
        poisoned[-1] = bad
        mallory.update(round_, [model[0], poisoned])
        assert mallory.rejection() == "tensor 1 contains NaN or Inf"
        result = chief.average(weights, 100)
        # (worker1 may be screened out as an outlier beside the chief's untrained weights: screening's rule)
        assert "mallory" not in result.participants
        assert all(np.isfinite(tensor).all() for tensor in result.weights)
        weights = result.weights
    round_, model = mallory.next_weights()
    mallory.update(round_, model)  # and a good one is still taken
    assert "mallory" in chief.average(weights, 100).participants


def _raw_tls(pki_dir: Path, port: int, name: str) -> ssl.SSLSocket:
    context = client_context(NodeCredentials.load(pki_dir, name))
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="127.0.0.1")


def _handshake_refused(context: ssl.SSLContext, port: int) -> None:
    """The server must refuse: the handshake or the first read fails (TLS 1.3 reports client-cert
    refusals after the client's Finished)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, pytest.raises(
        (ssl.SSLError, ConnectionError)
    ):
        tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
        tls.sendall(encode_control_frame(MessageType.HELLO, 0, {"num_samples": 1}))
        if not tls.recv(1):
            raise ConnectionError("closed by the chief")


def test_refused_peers_and_broken_frames(
    chief_with_good_worker: tuple[ChiefSession, int], pki_dir: Path, tmp_path: Path
) -> None:
    chief, port = chief_with_good_worker
    weights = SoftmaxTrainer().get_weights()
    chief.start(weights)
    before = chief.average(weights, 100)
    assert "worker1" in before.participants

    # no client certificate
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.minimum_version = ssl.TLSVersion.TLSv1_3
    anonymous.load_verify_locations(str(pki_dir / "ca.crt"))
    _handshake_refused(anonymous, port)
    # a certificate from another CA
    other = tmp_path / "other-pki"
    pki.init_ca(other)
    pki.issue_node(other, "worker9")
    _handshake_refused(client_context(NodeCredentials.load(other, "worker9"), check_hostname=False), port)
    # TLS 1.2 is not spoken
    old = client_context(NodeCredentials.load(pki_dir, "worker2"))
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_2
    _handshake_refused(old, port)
    # and a worker refuses a chief whose certificate does not match the address it dialled
    with pytest.raises(TransportError, match="certificate verify failed"):
        connect_tls("127.0.0.1", port, client_context(NodeCredentials.load(pki_dir, "worker2")),
                    server_hostname="chief.elsewhere.example")

    # wrong magic
    with _raw_tls(pki_dir, port, "mallory") as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: chief\r\n\r\n")
        assert tls.recv(1) == b""
    # a truncated frame
    with _raw_tls(pki_dir, port, "mallory") as tls:
        tls.sendall(encode_header(FrameHeader(MessageType.HELLO, 0, 100)) + b'{"num_samples"')
    # a declared length over the limit, from a joined worker
    intruder = Mallory(pki_dir, port, "worker3")
    intruder.next_weights()
    intruder.conn.send([encode_header(FrameHeader(MessageType.UPDATE, 1, 1 << 40))])
    with pytest.raises(TransportError):
        intruder.conn.recv()

    wait_for(lambda: len(status_errors(chief)) >= 7, 10, "the chief to record every refusal")
    errors = "\n".join(status_errors(chief))
    assert errors.count("TLS handshake refused") >= 3, errors
    assert "bad magic b'GET '" in errors
    assert "closed the connection in the middle of a frame" in errors
    assert "UPDATE declares 1099511627776 payload bytes, over the limit" in errors

    after = chief.average(before.weights, 100)
    assert sorted(after.participants) == ["chief", "worker1"]
