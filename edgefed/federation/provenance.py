"""The chief's half of model provenance: after each round, one ModelEvent naming the new global model's
digest, the updates it was averaged from (each worker's update payload digest, as the chief's receive
record of it carries) and the digest of the model before it. The ledger (an EventBus model sink) signs
it as a `model` record; `edgefed ledger provenance` walks those records back to round 0.

Everything here runs only when payload digests are on (a ledger is configured): hashing a model costs
one pass over its bytes, done on the chief's checkpoint thread, off the training path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from edgefed.contracts.events import EventBus, ModelEvent, TransferEvent
from edgefed.federation.rounds import ClosedRound
from edgefed.wire.digest import weights_digest

log = logging.getLogger(__name__)


class ModelProvenance:
    """Remembers which update digest each worker's upload had; emits a ModelEvent per adopted model."""

    def __init__(self, name: str, events: EventBus, enabled: bool) -> None:
        self._name = name
        self._events = events
        self._enabled = enabled
        self._lock = threading.Lock()
        self._uploads: dict[int, dict[str, str]] = {}  # round -> worker -> sha256 of its (first) upload
        self._open = 0  # the round open when keep() last ran; the next one's uploads may arrive before it
        self._previous = ""
        if enabled:
            events.subscribe(self._transfer)

    def _transfer(self, event: TransferEvent) -> None:
        if event.kind != "update" or event.direction != "receive" or event.observer != self._name:
            return
        with self._lock:
            # Only uploads of the open round (or of the next: workers start on it while the chief still
            # checkpoints) can be folded; a hostile worker's other round numbers add nothing here. A second
            # upload for a round is refused, so the first one is what was folded.
            if self._open <= event.round <= self._open + 1:
                self._uploads.setdefault(event.round, {}).setdefault(event.sender, event.sha256)

    def started(self, round_number: int, weights: Sequence[np.ndarray]) -> None:
        """The model training starts from: recorded as round 0, or (after a restart) only remembered."""
        if not self._enabled:
            return
        digest, size = weights_digest(weights)
        with self._lock:
            self._open = round_number
        if round_number == 0:
            self._events.model(ModelEvent(0, digest, size, "", (), self._name))
        self._previous = digest

    def record(self, closed: ClosedRound) -> None:
        """Record the model the round adopted (on the chief's checkpoint thread, after its checkpoint)."""
        if not self._enabled:
            return
        with self._lock:
            uploads = self._uploads.pop(closed.next_round - 1, {})
            self._open = closed.next_round
            self._uploads = {r: names for r, names in self._uploads.items() if r >= self._open}
        if closed.refusal is not None:  # a refused average was not adopted: no new model
            return
        digest, size = weights_digest(closed.average)
        missing = sorted(set(closed.contributors) - set(uploads) - {self._name})
        if missing:  # every folded update was received (and its receive event emitted) first
            log.error("round %d: no upload digest for %s; left out of the model record", closed.next_round, missing)
        inputs = tuple(sorted((name, "" if name == self._name else uploads[name])
                              for name in closed.contributors if name not in missing))
        self._events.model(ModelEvent(closed.next_round, digest, size, self._previous, inputs, self._name))
        self._previous = digest
