"""Sending the global weights to every worker at once: one encoding, one send per worker (the first on
the calling thread, the others on a long-lived thread pool: a round must not pay for starting
threads), one transfer event per send.

Under federation.broadcast_compression the frames come from the book's GlobalEncoder: fp16 of the
global weights for everyone; or, under int8, the delta from the previous round to each worker that
received it on its current connection (its seat's synced_round) and a float32 keyframe to every other
one. Each frame is encoded once and its digest (the ledger's) covers the bytes as sent."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np

from edgefed.compression import GlobalEncoder
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
        encoder: GlobalEncoder | None = None,
    ) -> None:
        self._name = name
        self._events = events
        self._hash_payloads = hash_payloads
        self._send = send
        self._delivered = delivered
        self._encoder = encoder or GlobalEncoder()
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="chief-send")

    def __call__(self, workers: list[W], round_number: int, weights: list[np.ndarray], final: bool) -> int:
        """Send the weights to every worker concurrently; returns the bytes sent."""
        if not workers:
            return 0
        flags = Flags.FINAL if final else Flags.NONE
        delta = self._encoder.delta_for(round_number)
        # decided before any send: a worker holds round_number - 1's model only if it was delivered to it
        takes_delta = {id(w): delta is not None and round_number > 0 and w.synced_round == round_number - 1
                       for w in workers}
        frames: dict[bool, tuple[Parts, Future[str]]] = {}
        for is_delta in set(takes_delta.values()):
            tensors = delta if is_delta and delta is not None else self._encoder.full(weights)
            parts = encode_tensor_frame(MessageType.WEIGHTS, round_number, tensors, 0, flags)
            frames[is_delta] = (parts, digest_while_sending(parts, self._hash_payloads))
        total = sum(1 for w in workers if w.alive) + 1

        def send_one(worker: W) -> int:
            parts, digest = frames[takes_delta[id(worker)]]
            started = time.monotonic()
            sent = self._send(worker, parts)
            if sent:
                self._delivered(worker, round_number)
                self._events.emit(
                    TransferEvent(round_number, self._name, worker.name, self._name, "send", total, sent,
                                  digest.result(), time.monotonic() - started, "weights")
                )
            return sent

        # the calling thread sends to the first worker itself: one pool thread fewer to wake and wait for
        others = [self._pool.submit(send_one, worker) for worker in workers[1:]]
        try:
            sent = send_one(workers[0])
        finally:
            sent_others = [future.result() for future in others]  # every send is over before this returns
        return sent + sum(sent_others)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
