"""Sending the global weights to every worker at once: one encoding, one send per worker on a
long-lived thread pool (a round must not pay for starting threads), one transfer event per send."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np

from edgefed.contracts.events import EventBus, TransferEvent
from edgefed.federation.digests import digest_while_sending
from edgefed.federation.rounds import Seat
from edgefed.wire import Flags, MessageType, encode_tensor_frame

W = TypeVar("W", bound=Seat)
Parts = list[bytes | memoryview]


class Broadcaster(Generic[W]):
    """send(worker, parts) returns the bytes sent (0 if that worker was lost); delivered(worker, round)
    is called after each successful send."""

    def __init__(
        self, name: str, events: EventBus, hash_payloads: bool,
        send: Callable[[W, Parts], int], delivered: Callable[[W, int], None],
    ) -> None:
        self._name = name
        self._events = events
        self._hash_payloads = hash_payloads
        self._send = send
        self._delivered = delivered
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="chief-send")

    def __call__(self, workers: list[W], round_number: int, weights: list[np.ndarray], final: bool) -> int:
        """Send the weights to every worker concurrently; returns the bytes sent."""
        if not workers:
            return 0
        flags = Flags.FINAL if final else Flags.NONE
        parts = encode_tensor_frame(MessageType.WEIGHTS, round_number, weights, 0, flags)
        digest = digest_while_sending(parts, self._hash_payloads)
        total = sum(1 for w in workers if w.alive) + 1

        def send_one(worker: W) -> int:
            started = time.monotonic()
            sent = self._send(worker, parts)
            if sent:
                self._delivered(worker, round_number)
                self._events.emit(
                    TransferEvent(round_number, self._name, worker.name, self._name, "send", total, sent,
                                  digest.result(), time.monotonic() - started, "weights")
                )
            return sent

        if len(workers) == 1:
            return send_one(workers[0])
        return sum(self._pool.map(send_one, workers))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
