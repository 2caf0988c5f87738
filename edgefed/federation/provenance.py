"""The chief's half of model provenance: after each round, one ModelEvent naming the new global model's
digest, the updates it was averaged from (each worker's update payload digest, as the chief's receive
record of it carries) and the digest of the model before it. The ledger (an EventBus model sink) signs
it as a `model` record; `edgefed ledger provenance` walks those records back to round 0.

Everything here runs only when payload digests are on (a ledger is configured): hashing a model costs
one pass over its bytes, done on the chief's checkpoint thread, off the training path.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgefed.contracts.events import EventBus, ModelEvent, TransferEvent
from edgefed.federation.checkpoint import Checkpoint, save_checkpoint
from edgefed.federation.rounds import ClosedRound
from edgefed.wire.digest import weights_digest

MAX_ROUNDS_REMEMBERED = 4  # update digests of rounds that closed long ago are never asked for


class ModelProvenance:
    """Remembers which update digest each worker's upload had; emits a ModelEvent per adopted model."""

    def __init__(self, name: str, events: EventBus, enabled: bool) -> None:
        self._name = name
        self._events = events
        self._enabled = enabled
        self._lock = threading.Lock()
        self._uploads: dict[int, dict[str, str]] = {}  # round -> worker -> sha256 of its (first) upload
        self._previous = ""
        if enabled:
            events.subscribe(self._transfer)

    def _transfer(self, event: TransferEvent) -> None:
        if event.kind != "update" or event.direction != "receive" or event.observer != self._name:
            return
        with self._lock:
            # A second upload for a round is refused by the rules, so the first one is what was folded.
            self._uploads.setdefault(event.round, {}).setdefault(event.sender, event.sha256)
            for stale in sorted(self._uploads)[:-MAX_ROUNDS_REMEMBERED]:
                del self._uploads[stale]

    def started(self, round_number: int, weights: Sequence[np.ndarray]) -> None:
        """The model training starts from: recorded as round 0, or (after a restart) only remembered."""
        if not self._enabled:
            return
        digest, size = weights_digest(weights)
        if round_number == 0:
            self._events.model(ModelEvent(0, digest, size, "", (), self._name))
        self._previous = digest

    def keep(self, state_dir: str | Path, closed: ClosedRound) -> None:
        """Write the round's checkpoint, then record the model it holds (on the checkpoint thread)."""
        save_checkpoint(state_dir, Checkpoint(closed.next_round, closed.average, closed.final))
        if not self._enabled or closed.refusal is not None:  # a refused average was not adopted
            return
        digest, size = weights_digest(closed.average)
        with self._lock:
            uploads = self._uploads.pop(closed.next_round - 1, {})
        inputs = tuple(sorted((name, "" if name == self._name else uploads.get(name, ""))
                              for name in closed.contributors))
        self._events.model(ModelEvent(closed.next_round, digest, size, self._previous, inputs, self._name))
        self._previous = digest
