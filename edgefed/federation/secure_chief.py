"""The chief's driver of secure aggregation (federation.secure_aggregation, docs/privacy.md).

The protocol's rules live in edgefed.secagg.ChiefRound; this class feeds it the workers' messages
(on their handler threads) and, on the training thread, walks a round through its phases: wait for
every expected worker's message or the round's deadline, then send the next phase's messages. A
message that breaks the rules drops its sender; too few workers refuse the round (nothing adopted).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.federation.rounds import Refusal, RoundBook, Seat
from edgefed.federation.secure_sum import SecureSum
from edgefed.secagg import ring
from edgefed.secagg.chief_round import ChiefRound
from edgefed.secagg.errors import PeerFault, SecAggRefused
from edgefed.wire import (
    ControlMessage,
    Frame,
    MessageError,
    MessageType,
    ReasonCode,
    SecAggAdvert,
    SecAggShares,
    SecAggUnmask,
    Tensor,
    decode_message,
    encode_message,
)

log = logging.getLogger(__name__)
FROM_WORKERS = frozenset({MessageType.SECAGG_ADVERT, MessageType.SECAGG_SHARES, MessageType.SECAGG_UNMASK})
W = TypeVar("W", bound=Seat)


class SecureChief(Generic[W]):
    def __init__(self, threshold: int, directory: Mapping[str, ed25519.Ed25519PublicKey],
                 cond: threading.Condition, book: RoundBook[W], send: Callable[[W, list[bytes | memoryview]], int],
                 drop: Callable[[W, str], None], closing: Callable[[], bool]) -> None:
        self.threshold = threshold
        self._directory = dict(directory)
        self._cond = cond
        self._book = book
        self._send = send
        self._drop = drop
        self._closing = closing
        self._machine: ChiefRound | None = None

    def _machine_for(self, number: int) -> ChiefRound | None:
        """This round's state machine (made on its first message); None for any other round."""
        current = self._book.current
        if current is None or current.number != number or not current.open:
            return None
        if not isinstance(current.aggregator, SecureSum):
            raise RuntimeError("secure aggregation without a SecureSum aggregator")
        if self._machine is None or self._machine.round != number:
            self._machine = ChiefRound(number, current.aggregator.length, self.threshold, self._directory)
        return self._machine

    # -- handler threads --------------------------------------------------------------------------
    def receive(self, worker: W, frame: Frame) -> None:
        """A SECAGG_* frame from a worker: fed to the round, or its sender dropped."""
        try:
            message = decode_message(frame)
        except MessageError as exc:
            self._drop(worker, f"secure aggregation: {exc}")
            return
        fault = None
        with self._cond:
            machine = self._machine_for(frame.round)
            if machine is None:
                return  # a late message of a round that has closed: nothing to do
            try:
                if isinstance(message, SecAggAdvert):
                    machine.add_advert(worker.name, message)
                elif isinstance(message, SecAggShares):
                    machine.add_shares(worker.name, message)
                elif isinstance(message, SecAggUnmask):
                    machine.add_unmask(worker.name, message)
            except PeerFault as exc:
                fault = exc
            self._cond.notify_all()
        if fault is not None:
            self._drop(worker, f"secure aggregation: {fault.reason}")

    def masked(self, name: str, frame: Frame, tensors: Sequence[Tensor]) -> Refusal | None:
        """A masked update (an UPDATE of one int32 vector), folded into the ring sum. Caller holds the lock."""
        round_number, num_samples = frame.round, frame.num_samples
        machine = self._machine_for(round_number)
        current = self._book.current
        if machine is None or current is None:
            return Refusal(ReasonCode.STALE, f"masked update for round {round_number}, which is not open")
        vector = np.asarray(tensors[0]).reshape(-1).view(ring.RING_DTYPE)
        try:
            machine.add_masked(name, vector, num_samples)
        except PeerFault as fault:
            return Refusal(ReasonCode.PROTOCOL_ERROR, f"secure aggregation: {fault.reason}")
        current.submitted.add(name)
        current.answered.add(name)
        current.bytes_received += frame.wire_bytes
        return None

    # -- the training thread ----------------------------------------------------------------------
    def drive(self, number: int, expected: set[str], deadline: float) -> None:
        """Walk round number through its phases; its SecureSum gets the workers' sum or a refusal."""
        with self._cond:
            machine = self._machine_for(number)
            current = self._book.current
        if machine is None or current is None or not isinstance(current.aggregator, SecureSum):
            return
        aggregator = current.aggregator
        try:
            self._wait(lambda: machine.advertised, expected, deadline)
            with self._cond:
                roster = machine.roster()
            members = {advert["name"] for advert in roster.adverts}
            self._tell({name: roster for name in members}, number)
            self._wait(lambda: machine.shared, members, deadline)
            with self._cond:
                inboxes = machine.inboxes()
            self._tell(dict(inboxes), number)
            self._wait(lambda: machine.masked_by, set(inboxes), deadline)
            with self._cond:
                request = machine.unmask_request()
            self._tell({name: request for name in request.survivors}, number)
            self._wait(lambda: machine.answered, set(request.survivors), deadline)
            with self._cond:
                total, weight = machine.result()
                aggregator.take_sum(total, weight, sorted(machine.masked_by))
        except SecAggRefused as exc:
            log.error("%s", exc)
            with self._cond:
                aggregator.refuse(str(exc))

    def _wait(self, done: Callable[[], set[str]], names: set[str], deadline: float) -> None:
        with self._cond:
            while not self._closing():
                pending = {name for name in names - done() if self._book.is_alive(name)}
                remaining = deadline - time.monotonic()
                if not pending or remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _tell(self, messages: Mapping[str, ControlMessage], number: int) -> None:
        with self._cond:
            seats = {name: self._book.seats.get(name) for name in messages}
        for name, message in messages.items():
            seat = seats[name]
            if seat is not None and seat.alive:
                self._send(seat, [encode_message(message, number)])
