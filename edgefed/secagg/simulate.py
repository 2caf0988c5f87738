"""One secure-aggregation round in one process: N workers and the chief, every message through the
real codec (encoded to frame bytes, read back by a FrameReader), no sockets.

Tests use it for the protocol's properties (exact sums, dropouts, the threshold, hostile messages);
bench/bench_secagg.py for what the protocol costs: messages, bytes and seconds per round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.secagg import ring
from edgefed.secagg.chief_round import ChiefRound
from edgefed.secagg.errors import PeerFault
from edgefed.secagg.worker_round import WorkerRound
from edgefed.wire import ControlMessage, FrameReader, MessageType, decode_message, encode_message, encode_tensor_frame

# when: a phase name ("advert", "share", "mask", "unmask"): the worker leaves before sending it
Dropouts = Mapping[str, str]


@dataclass
class Traffic:
    messages: int = 0
    bytes: int = 0
    decoded: list[np.ndarray] = field(default_factory=list)  # every array the chief's side decoded

    def relay(self, message: ControlMessage, round_number: int) -> ControlMessage:
        """message as the receiver decodes it from its frame bytes."""
        data = encode_message(message, round_number)
        self.messages += 1
        self.bytes += len(data)
        (frame,) = FrameReader().feed(data)
        return decode_message(frame)

    def upload(self, masked: np.ndarray, round_number: int, num_samples: int) -> tuple[np.ndarray, int]:
        """A masked update as an UPDATE frame: one int32 tensor (the ring's bits), read back."""
        parts = encode_tensor_frame(MessageType.UPDATE, round_number, [masked.view(np.int32)], num_samples)
        data = b"".join(bytes(part) for part in parts)
        self.messages += 1
        self.bytes += len(data)
        (frame,) = FrameReader().feed(data)
        assert frame.tensors is not None
        received = np.asarray(frame.tensors[0]).view(ring.RING_DTYPE)
        self.decoded.append(received)
        return received, frame.num_samples


@dataclass
class SimRound:
    sum: np.ndarray
    total_weight: int
    survivors: list[str]
    traffic: Traffic
    seconds: float
    faults: list[PeerFault]


def identities(names: list[str]) -> tuple[dict[str, ed25519.Ed25519PrivateKey], dict[str, ed25519.Ed25519PublicKey]]:
    private = {name: ed25519.Ed25519PrivateKey.generate() for name in names}
    return private, {name: key.public_key() for name, key in private.items()}


def run_round(updates: Mapping[str, np.ndarray], samples: Mapping[str, int], threshold: int = 2,
              round_number: int = 1, dropouts: Dropouts | None = None,
              tamper: Callable[[str, str, ControlMessage], ControlMessage] | None = None) -> SimRound:
    """A whole round over the quantized ring vectors in updates; raises SecAggRefused below the threshold.
    tamper(sender, phase, message) may replace what a worker sends (a hostile worker)."""
    dropouts = dropouts or {}
    names = sorted(updates)
    private, directory = identities(names)
    length = next(iter(updates.values())).size
    chief = ChiefRound(round_number, length, threshold, directory)
    workers = {name: WorkerRound(name, round_number, private[name], directory, threshold) for name in names}
    traffic, faults = Traffic(), []
    started = time.perf_counter()

    def send(sender: str, phase: str, message: ControlMessage, take: Callable[[str, ControlMessage], None]) -> None:
        if tamper is not None:
            message = tamper(sender, phase, message)
        try:
            take(sender, traffic.relay(message, round_number))
        except PeerFault as fault:  # the chief drops the sender from the round
            faults.append(fault)
        except ValueError as bad:  # a body the codec refused: it costs only its sender as well
            faults.append(PeerFault(sender, str(bad)))

    def still_in(names: list[str], phase: str) -> list[str]:
        gone = {fault.sender for fault in faults}
        return [name for name in names if dropouts.get(name) != phase and name not in gone]

    live = still_in(names, "advert")
    for name in live:
        send(name, "advert", workers[name].advert(), chief.add_advert)  # type: ignore[arg-type]
    roster = chief.roster()
    live = still_in(live, "share")
    for name in live:
        shares = workers[name].share(traffic.relay(roster, round_number))  # type: ignore[arg-type]
        send(name, "share", shares, chief.add_shares)  # type: ignore[arg-type]
    inboxes = chief.inboxes()
    live = [name for name in still_in(live, "mask") if name in inboxes]
    for name in live:
        masked = workers[name].mask(traffic.relay(inboxes[name], round_number), updates[name])  # type: ignore[arg-type]
        received, num_samples = traffic.upload(masked, round_number, samples[name])
        try:
            chief.add_masked(name, received, num_samples)
        except PeerFault as fault:
            faults.append(fault)
    request = chief.unmask_request()
    for name in still_in(live, "unmask"):
        answer = workers[name].unmask(traffic.relay(request, round_number))  # type: ignore[arg-type]
        send(name, "unmask", answer, chief.add_unmask)  # type: ignore[arg-type]
    total, weight = chief.result()
    return SimRound(total, weight, sorted(chief.weights), traffic, time.perf_counter() - started, faults)
