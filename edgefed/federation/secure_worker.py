"""A worker's side of secure aggregation (federation.secure_aggregation, docs/privacy.md).

Instead of its weights, the worker sends its step from the global weights, clamped to the shared
bound, quantized with the shared scale, weighted by its sample count and masked (edgefed.secagg.
WorkerRound); the extra phases around that upload are exchanged with the chief here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.secagg import ring
from edgefed.secagg.errors import SecAggRefused
from edgefed.secagg.worker_round import WorkerRound
from edgefed.transport import Connection
from edgefed.wire import (
    ControlMessage,
    Frame,
    MessageType,
    ProtocolError,
    SecAggInbox,
    SecAggRoster,
    SecAggUnmaskRequest,
    encode_message,
    encode_tensor_frame,
    expect,
)

TO_WORKERS = frozenset({MessageType.SECAGG_ROSTER, MessageType.SECAGG_INBOX, MessageType.SECAGG_UNMASK_REQUEST})
M = TypeVar("M", bound=ControlMessage)
log = logging.getLogger(__name__)


def step_from(weights: Sequence[np.ndarray], start: Sequence[np.ndarray], number: int) -> np.ndarray:
    """The worker's step as one vector. Non-finite coordinates cannot be refused by the chief (it never
    sees one worker's step) and quantize to 0 (NaN) or the bound (Inf): say so here, once per round."""
    step = ring.flatten(weights) - ring.flatten(start)
    finite = int(np.count_nonzero(np.isfinite(step)))
    if finite != step.size:
        log.warning("round %d: %d of %d coordinates of this worker's step are NaN or Inf (has training "
                    "diverged?): they are sent as 0 (NaN) or +-bound (Inf)", number, step.size - finite, step.size)
    return step


@dataclass(frozen=True)
class SecAggIdentity:
    """The worker's long-lived signing key and every node's public one (the ledger's Ed25519 keys)."""

    key: ed25519.Ed25519PrivateKey
    directory: Mapping[str, ed25519.Ed25519PublicKey]


class SecureUploads:
    def __init__(self, name: str, identity: SecAggIdentity, threshold: int, bound: float) -> None:
        self.name, self.identity, self.threshold, self.bound = name, identity, threshold, bound
        self._global: list[np.ndarray] = []

    def received_global(self, weights: Sequence[np.ndarray]) -> None:
        self._global = [np.array(array) for array in weights]

    def exchange(self, conn: Connection, number: int, weights: Sequence[np.ndarray], num_samples: int,
                 recv: Callable[[Connection], Frame], send_update: Callable[[list[bytes | memoryview]], int],
                 ) -> tuple[int, Frame | None]:
        """Run round number's phases: (bytes sent, None), or the WEIGHTS frame of a later round when the
        chief closed this one without us (refused, or it dropped this worker's part)."""
        machine = WorkerRound(self.name, number, self.identity.key, self.identity.directory, self.threshold)
        try:
            sent = conn.send([encode_message(machine.advert(), number)])
            roster = self._await(conn, number, SecAggRoster, recv)
            if isinstance(roster, Frame):
                return sent, roster
            sent += conn.send([encode_message(machine.share(roster), number)])
            inbox = self._await(conn, number, SecAggInbox, recv)
            if isinstance(inbox, Frame):
                return sent, inbox
            weight = min(max(num_samples, 1), ring.MAX_TOTAL_WEIGHT)
            quantized = ring.quantize(step_from(weights, self._global, number), self.bound, weight)
            masked = machine.mask(inbox, quantized)
            sent += send_update(encode_tensor_frame(MessageType.UPDATE, number, [masked.view(np.int32)], weight))
            request = self._await(conn, number, SecAggUnmaskRequest, recv)
            if isinstance(request, Frame):
                return sent, request
            sent += conn.send([encode_message(machine.unmask(request), number)])
        except SecAggRefused as exc:  # what the chief relayed breaks the protocol: leave and rejoin
            raise ProtocolError(str(exc)) from None
        return sent, None

    @staticmethod
    def _await(conn: Connection, number: int, cls: type[M], recv: Callable[[Connection], Frame]) -> M | Frame:
        while True:
            frame = recv(conn)
            if frame.type is MessageType.WEIGHTS and frame.tensors is not None and frame.round > number:
                return frame  # None: a stale full model under broadcast_compression int8, ignored
            if frame.type is cls.TYPE and frame.round == number:
                return expect(frame, cls)
