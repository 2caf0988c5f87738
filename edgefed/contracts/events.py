"""Transfer events: one per weight send or receive, for the ledger, the status file and any other sink;
refusal events: one per admission or update the chief refused; model events: one per global model the
chief adopted (its digest, the updates it was averaged from and the model before it: provenance).

A contract shared by federation (which emits them), ledger (which records them) and ops.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

Direction = Literal["send", "receive"]
Stage = Literal["admission", "update"]  # what the chief refused: a HELLO, or an update


@dataclass(frozen=True)
class TransferEvent:
    """One side's view of one weight transfer (the sender and the receiver each emit one)."""

    round: int
    sender: str
    receiver: str
    observer: str  # the node that saw it: the sender for "send", the receiver for "receive"
    direction: Direction
    participants: int
    bytes: int
    sha256: str  # of the frame payload
    seconds: float
    kind: Literal["weights", "update"]  # weights: chief -> worker; update: worker -> chief
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RefusalEvent:
    """The chief refused a worker's admission (HELLO) or one of its updates."""

    worker: str  # the refused peer's certificate name
    round: int  # the update's round; for an admission, the chief's round at the time
    code: str  # a ReasonCode value of the codec (stale, non-finite, outlier, late-joiner...)
    message: str  # the sentence sent with the REJECT or BYE
    observer: str  # the node that refused: the chief
    stage: Stage
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelEvent:
    """The chief adopted a global model: the one round `round` starts from."""

    round: int  # the round this model starts (0: the initial weights)
    sha256: str  # the model's digest (edgefed.wire.weights_digest: the payload of its WEIGHTS frame)
    bytes: int  # the size of that payload
    previous: str  # the digest of the model it was averaged from ("" for round 0)
    inputs: tuple[tuple[str, str], ...]  # (contributor, sha256 of its update payload; "" for the chief's own)
    observer: str  # the chief
    timestamp: float = field(default_factory=time.time)


EventSink = Callable[[TransferEvent], None]
RefusalSink = Callable[[RefusalEvent], None]
ModelSink = Callable[[ModelEvent], None]


class EventBus:
    """Fans events out to sinks; a failing sink is logged and never breaks training."""

    def __init__(self, *sinks: EventSink) -> None:
        self._sinks: list[EventSink] = list(sinks)
        self._refusal_sinks: list[RefusalSink] = []
        self._model_sinks: list[ModelSink] = []

    def subscribe(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def subscribe_refusals(self, sink: RefusalSink) -> None:
        self._refusal_sinks.append(sink)

    def subscribe_models(self, sink: ModelSink) -> None:
        self._model_sinks.append(sink)

    def model(self, event: ModelEvent) -> None:
        """The chief adopted a global model: the ledger signs a provenance record of it."""
        for sink in self._model_sinks:
            try:
                sink(event)
            except Exception:
                log.exception("model sink %r failed on round %d", sink, event.round)

    def refused(self, event: RefusalEvent) -> None:
        """The chief refused an admission or an update: history and metrics count it, the status
        file lists it, the ledger signs a record of a refused update."""
        for sink in self._refusal_sinks:
            try:
                sink(event)
            except Exception:
                log.exception("refusal sink %r failed on %s", sink, event)

    def emit(self, event: TransferEvent) -> None:
        for sink in self._sinks:
            try:
                sink(event)
            except Exception:
                log.exception("event sink %r failed on %s", sink, event)
