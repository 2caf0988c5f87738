"""The chief's round logic without I/O: who sits in the federation, whom a round waits for, what an
upload may be, when a round closes and what it averages to.

Nothing here opens a socket, starts a thread, sleeps or takes a lock: the chief (chief.py) owns the
connections and the clock, calls these methods under its one lock and acts on what they decide. The
split follows Flower's strategy vs server and h11's state machine vs I/O: the rules can be read and
tested on their own, and a new aggregation rule changes this file, not the chief's threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from edgefed.config import FederationSection
from edgefed.federation.aggregation import StreamingAggregator, first_non_finite, spec_mismatch
from edgefed.wire import TensorSpec, specs_of


@dataclass(frozen=True)
class RoundRules:
    """The federation settings the round logic obeys."""

    rounds: int
    min_workers: int = 0
    allow_late_joiners: bool = True

    @classmethod
    def from_section(cls, federation: FederationSection) -> RoundRules:
        return cls(federation.rounds, federation.min_workers, federation.allow_late_joiners)


@dataclass(eq=False)
class Seat:
    """A worker's place in the federation (the chief's connection to it lives in a subclass)."""

    name: str
    task_index: int
    synced_round: int = -1  # the round whose global weights this worker last received
    alive: bool = True


@dataclass
class Round:
    number: int
    aggregator: StreamingAggregator
    submitted: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)  # submitted, or refused: the chief stops waiting
    open: bool = True
    bytes_received: int = 0


@dataclass(frozen=True)
class ClosedRound:
    """What closing a round decided: the new global weights and the round they start."""

    average: list[np.ndarray]
    next_round: int
    final: bool
    contributors: list[str]
    bytes_received: int


S = TypeVar("S", bound=Seat)


def freeze(weights: list[np.ndarray]) -> list[np.ndarray]:
    """The global weights are shared by broadcasts, checkpoints and the caller: make them read-only
    rather than copy them (a trainer's set_weights copies what it keeps)."""
    for array in weights:
        array.flags.writeable = False
    return weights


class RoundBook(Generic[S]):
    """The federation's state as the chief's rules see it; every method decides, none waits."""

    def __init__(self, rules: RoundRules, chief: str) -> None:
        self.rules = rules
        self.chief = chief
        self.seats: dict[str, S] = {}
        self.task_indices: dict[str, int] = {}
        self.started = False  # the starting weights went out: later joiners are late joiners
        self.finished = False
        self.global_weights: list[np.ndarray] = []
        self.specs: list[TensorSpec] = []
        self.current: Round | None = None  # None until begin()

    def begin(self, weights: list[np.ndarray], start_round: int, finished: bool) -> None:
        """Take the starting weights (the caller's, or a checkpoint's) and open start_round."""
        self.global_weights = freeze(weights)
        self.specs = specs_of(weights)
        self.finished = finished or start_round >= self.rules.rounds
        self.current = Round(start_round, StreamingAggregator(self.specs))

    @property
    def round_number(self) -> int:
        return self.current.number if self.current is not None else 0

    def _open_round(self) -> Round:
        if self.current is None:
            raise RuntimeError("the federation has no round yet: begin() first")
        return self.current

    # -- membership -------------------------------------------------------------------------------
    def alive(self) -> list[S]:
        return [seat for seat in self.seats.values() if seat.alive]

    def participants(self) -> list[str]:
        return sorted(seat.name for seat in self.alive())

    def total(self) -> int:
        """Participants, the chief included."""
        return len(self.alive()) + 1

    def enough_workers(self) -> bool:
        return bool(self.rules.min_workers) and len(self.alive()) >= self.rules.min_workers

    def admission_refusal(self, name: str) -> str | None:
        """Why a worker called name may not join now, or None."""
        if self.started and not self.rules.allow_late_joiners and name not in self.task_indices:
            return "late joiners are not allowed in this federation"
        if name == self.chief:
            return f"{name} is the chief's own name"
        return None

    def task_index_for(self, name: str) -> int:
        """A worker keeps its task index across reconnections."""
        return self.task_indices.setdefault(name, len(self.task_indices) + 1)

    def seat(self, seat: S) -> S | None:
        """Register seat; returns the live seat it replaces, if any (the caller drops that one)."""
        previous = self.seats.get(seat.name)
        self.seats[seat.name] = seat
        return previous if previous is not None and previous.alive else None

    def leave(self, seat: S) -> bool:
        """Mark seat gone; False if it already was."""
        if not seat.alive:
            return False
        seat.alive = False
        if self.seats.get(seat.name) is seat:
            del self.seats[seat.name]
        return True

    def is_alive(self, name: str) -> bool:
        seat = self.seats.get(name)
        return seat is not None and seat.alive

    def synced(self, seat: S, round_number: int) -> None:
        seat.synced_round = max(seat.synced_round, round_number)

    # -- uploads ----------------------------------------------------------------------------------
    def header_refusal(self, round_number: int, specs: Sequence[TensorSpec], num_samples: int) -> str | None:
        """Why an upload must be refused from its tensor header alone (before its data is taken)."""
        current = self.current.number if self.current is not None else -1
        mismatch = spec_mismatch(self.specs, specs)
        if round_number != current:
            return f"stale update for round {round_number}; the chief is at round {current}"
        if mismatch:
            return f"update does not fit the model: {mismatch}"
        if num_samples <= 0:
            return "update carries no samples"
        return None

    @staticmethod
    def content_refusal(tensors: Sequence[np.ndarray]) -> str | None:
        """Why an upload's received values must be refused (checked outside the lock: it reads them all)."""
        bad = first_non_finite(tensors)
        return None if bad is None else f"tensor {bad} contains NaN or Inf"

    def fold(self, name: str, round_number: int, tensors: list[np.ndarray], num_samples: int,
             wire_bytes: int) -> str | None:
        """Add a checked update to its round (scaling tensors in place); or say why it is refused."""
        current = self.current
        if current is None or current.number != round_number or not current.open:
            return f"stale update for round {round_number}; the round has closed"
        if name in current.submitted:
            return f"a second update for round {round_number}"
        current.aggregator.add_scaled_in_place(tensors, num_samples, name)
        current.submitted.add(name)
        current.answered.add(name)
        current.bytes_received += wire_bytes
        return None

    def refused(self, name: str, round_number: int) -> None:
        """A refused update still answers its round: the chief stops waiting for that worker."""
        if self.current is not None and self.current.number == round_number:
            self.current.answered.add(name)

    # -- closing a round --------------------------------------------------------------------------
    def own_weights_refusal(self, weights: Sequence[np.ndarray]) -> str | None:
        mismatch = spec_mismatch(self.specs, specs_of(weights))
        return None if mismatch is None else f"the chief's own weights do not fit the model: {mismatch}"

    def contribute_own(self, weights: Sequence[np.ndarray], num_samples: int) -> None:
        """The chief's own weights join the round it is closing (copied: the caller keeps them)."""
        self._open_round().aggregator.add(weights, num_samples, self.chief)

    def expected(self) -> set[str]:
        """The workers this round waits for: alive and holding this round's weights."""
        number = self._open_round().number
        return {seat.name for seat in self.alive() if seat.synced_round == number}

    def missing(self, expected: set[str]) -> set[str]:
        answered = self._open_round().answered
        return {name for name in expected if name not in answered and self.is_alive(name)}

    def close_round(self, final: bool | None) -> ClosedRound:
        """Average the round, adopt it and open the next; final defaults to "this was the last round"."""
        current = self._open_round()
        current.open = False
        average = freeze(current.aggregator.average())
        next_round = current.number + 1
        is_final = final if final is not None else next_round >= self.rules.rounds
        self.global_weights = average
        self.finished = is_final
        self.current = Round(next_round, StreamingAggregator(self.specs))
        return ClosedRound(average, next_round, is_final, list(current.aggregator.contributors),
                           current.bytes_received)
