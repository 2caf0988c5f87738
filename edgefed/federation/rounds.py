"""The chief's round logic without I/O: who sits in the federation, whom a round waits for, what an
upload may be, when a round closes and what it averages to.

Nothing here opens a socket, starts a thread, sleeps or takes a lock: the chief (chief.py) owns the
connections and the clock, calls these methods under its one lock and acts on what they decide. The
split follows Flower's strategy vs server and h11's state machine vs I/O: the rules can be read and
tested on their own, and a new aggregation rule changes this file, not the chief's threads.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from edgefed.compression import NONE, CompressionSetting, parse_compression, upload_specs
from edgefed.compression.broadcast import GlobalEncoder, parse_broadcast_compression
from edgefed.config import FederationSection
from edgefed.federation.aggregation import UpdateOutOfRange, first_non_finite, spec_mismatch
from edgefed.federation.compressed import Update, broadcast_mismatch, content_problem, fold_update, hello_mismatch
from edgefed.federation.joining import JoinPlan
from edgefed.federation.secure_sum import SecureSum, secure_mismatch
from edgefed.federation.strategies import Aggregator, make_aggregator
from edgefed.wire import Frame, Hello, MessageError, MessageType, ReasonCode, Tensor, TensorSpec, specs_of


@dataclass(frozen=True)
class RoundRules:
    """The federation settings the round logic obeys."""

    rounds: int
    min_workers: int = 0
    allow_late_joiners: bool = True
    aggregation: str = "fedavg"
    robust_fraction: float = 0.2
    clip_factor: float = 2.0
    screen_factor: float = 0.0
    max_buffered_updates: int = 64
    expected_workers: tuple[str, ...] = ()
    compression: CompressionSetting = NONE  # what uploads must be (edgefed.federation.compressed)
    broadcast_compression: str = "none"  # how the global weights travel (edgefed.compression.broadcast)
    secure_bound: float = 0.0  # > 0: secure aggregation; uploads are masked ring vectors (secure_sum.py)

    @classmethod
    def from_section(cls, federation: FederationSection) -> RoundRules:
        return cls(
            federation.rounds, federation.min_workers, federation.allow_late_joiners, federation.aggregation,
            federation.robust_fraction, federation.clip_factor, federation.screen_factor,
            federation.max_buffered_updates, tuple(federation.expected_workers),
            parse_compression(federation.compression), parse_broadcast_compression(federation.broadcast_compression),
            federation.secure_aggregation_bound if federation.secure_aggregation else 0.0,
        )

    @property
    def measures_distances(self) -> bool:  # clip's bound and screening are made of update distances
        return self.aggregation == "clip" or self.screen_factor > 0

    @property
    def buffered(self) -> bool:
        """Whether the aggregation keeps every update until the round closes."""
        return self.aggregation in ("trimmed-mean", "median", "krum")


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
    aggregator: Aggregator
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
    refusal: Refusal | None = None  # set when the average was not adopted
    samples: int | None = None  # the sample counts of every update averaged, the chief's own included


S = TypeVar("S", bound=Seat)

RECENT_DISTANCES = 64  # how many recent update distances set the scale for clip and screening
MIN_DISTANCES = 3  # fewer than this: no scale yet (the first updates are neither clipped nor screened)
PROTOCOL = 1  # the HELLO protocol version this chief speaks
MAX_NUM_SAMPLES = 10**12  # a sample count beyond this is a lie, not a data set (the codec's bound too)


@dataclass(frozen=True)
class Refusal:
    """Why the chief refuses something: a stable code for programs (a ReasonCode of the codec, or
    a chief-only code such as non-finite-average that never travels), a sentence for people."""

    code: str
    reason: str

    def __str__(self) -> str:
        return self.reason

    @property
    def wire_code(self) -> ReasonCode:
        """The code a REJECT or BYE carries (a chief-only code travels as `other`)."""
        try:
            return ReasonCode(self.code)
        except ValueError:
            return ReasonCode.OTHER


def read_hello(frame: Frame) -> Hello | Refusal:
    """The HELLO of a first frame, or the refusal a bad one earns (bad-hello, unsupported-protocol).
    The chief's rules come first, as before the typed messages: the protocol is checked before the
    sample count, and a HELLO without one counts 0 samples."""
    if frame.type is not MessageType.HELLO:
        return Refusal(ReasonCode.BAD_HELLO, f"expected HELLO, got {frame.type.name}")
    refusal = hello_refusal(frame.body)
    if refusal is not None:
        return refusal
    try:
        return Hello.from_body({"num_samples": 0, **frame.body})
    except MessageError as exc:
        return Refusal(exc.code, str(exc))


def hello_refusal(hello: Mapping[str, Any]) -> Refusal | None:
    """A HELLO body's fields, checked: protocol (absent means 1) and a non-negative sample count."""
    protocol = hello.get("protocol", PROTOCOL)
    if isinstance(protocol, bool) or protocol != PROTOCOL:
        return Refusal(ReasonCode.UNSUPPORTED_PROTOCOL,
                       f"HELLO speaks protocol {protocol!r}; this chief speaks {PROTOCOL}")
    samples = hello.get("num_samples", 0)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 0 <= samples <= MAX_NUM_SAMPLES:
        return Refusal(ReasonCode.BAD_HELLO,
                       f"HELLO.num_samples must be an integer in 0..{MAX_NUM_SAMPLES}, got {samples!r}")
    return None


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
        self.task_indices: dict[str, int] = {}  # every worker that ever joined
        self.plan = JoinPlan(rules.expected_workers, rules.min_workers)
        self.started = False  # the starting weights went out: later joiners are late joiners
        self.finished = False
        self.global_weights: list[np.ndarray] = []
        self.specs: list[TensorSpec] = []
        self.upload_specs: list[TensorSpec] = []  # what an upload must carry: the specs, or encoded ones
        self.current: Round | None = None  # None until begin()
        self.broadcast = GlobalEncoder(rules.broadcast_compression)  # the global is what the workers hold
        # distances from the global model of recently taken updates: the scale for clip and screening
        self.distances: deque[float] = deque(maxlen=RECENT_DISTANCES)

    def begin(self, weights: list[np.ndarray], start_round: int, finished: bool) -> list[np.ndarray]:
        """Take the starting weights (the caller's, or a checkpoint's) and open start_round; returns the
        global weights (what the workers will hold: broadcast_compression may round them)."""
        self.global_weights = freeze(self.broadcast.start(weights))
        self.specs = specs_of(weights)
        self.upload_specs = upload_specs(self.specs, self.rules.compression)
        if self.rules.secure_bound > 0:  # one masked vector of the ring's bits (edgefed.secagg)
            self.upload_specs = [TensorSpec("int32", (sum(int(np.prod(s.shape, dtype=np.int64)) for s in self.specs),))]
        self.finished = finished or start_round >= self.rules.rounds
        self.current = self._new_round(start_round)
        return self.global_weights

    def _new_round(self, number: int) -> Round:
        rules = self.rules
        if rules.secure_bound > 0:
            return Round(number, SecureSum(self.specs, self.global_weights, rules.secure_bound))
        aggregator = make_aggregator(
            rules.aggregation, self.specs, self.global_weights, rules.robust_fraction, self.clip_bound
        )
        return Round(number, aggregator)

    def clip_bound(self) -> float | None:
        typical = self.typical_distance()
        return None if typical is None else self.rules.clip_factor * typical

    def typical_distance(self) -> float | None:
        """The median distance of recent updates, once there are enough to trust it."""
        if len(self.distances) < MIN_DISTANCES:
            return None
        return float(statistics.median(self.distances))

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

    def set_expected_workers(self, names: Sequence[str]) -> tuple[list[str], list[str]]:
        """Membership changed: joining.JoinPlan.set_expected; returns (added, removed)."""
        return self.plan.set_expected(names)

    def enough_workers(self) -> bool:
        """Round 1 may start before wait_time ends (joining.JoinPlan.ready)."""
        return self.plan.ready({seat.name for seat in self.alive()})

    def shard_count(self) -> int:
        """The `total` of a WELCOME: above every task index handed out, whatever the join order."""
        return self.plan.shard_count(len(self.alive()))

    def admission_refusal(self, name: str, hello: Mapping[str, Any] | None = None) -> Refusal | None:
        """Why a worker called name, saying hello, may not join now, or None."""
        if self.started and not self.rules.allow_late_joiners and name not in self.task_indices:
            return Refusal(ReasonCode.LATE_JOINER, "late joiners are not allowed in this federation")
        if name == self.chief:
            return Refusal(ReasonCode.NAME_CONFLICT, f"{name} is the chief's own name")
        if self.is_alive(name):  # the same certificate twice: the live connection keeps its seat
            return Refusal(ReasonCode.DUPLICATE_IDENTITY, f"{name} is already connected; one connection per node")
        return hello_refusal(hello or {})

    def compression_refusal(self, hello: Hello) -> Refusal | None:
        """A worker whose federation.compression, broadcast_compression or secure_aggregation differs from
        the chief's is refused for good."""
        mismatch = hello_mismatch(hello, self.rules.compression) or broadcast_mismatch(
            hello, self.rules.broadcast_compression) or secure_mismatch(hello, self.rules.secure_bound > 0)
        return None if mismatch is None else Refusal(*mismatch)

    def task_index_for(self, name: str) -> int:
        """A worker keeps its task index across reconnections; an expected one has a fixed index."""
        return self.task_indices.setdefault(name, self.plan.task_index_for(name))

    def seat(self, seat: S) -> None:
        """Register an admitted worker (admission_refusal said yes: no live seat has its name)."""
        if self.is_alive(seat.name):
            raise ValueError(f"{seat.name} already holds a live seat")
        self.seats[seat.name] = seat

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
    def header_refusal(self, round_number: int, specs: Sequence[TensorSpec], num_samples: int) -> Refusal | None:
        """Why an upload must be refused from its tensor header alone (before its data is taken)."""
        current = self.current.number if self.current is not None else -1
        mismatch = spec_mismatch(self.upload_specs, specs)
        if round_number < current:
            return Refusal(ReasonCode.STALE, f"stale update for round {round_number}; the chief is at round {current}")
        if round_number > current:
            return Refusal(ReasonCode.FUTURE_ROUND,
                           f"update for round {round_number} is ahead of the chief's round {current}")
        if mismatch:
            return Refusal(ReasonCode.SHAPE_MISMATCH, f"update does not fit the model: {mismatch}")
        if num_samples <= 0:
            return Refusal(ReasonCode.NO_SAMPLES, "update carries no samples")
        if num_samples > MAX_NUM_SAMPLES:
            return Refusal(ReasonCode.PROTOCOL_ERROR,
                           f"update claims {num_samples} samples (at most {MAX_NUM_SAMPLES})")
        return None

    @staticmethod
    def content_refusal(tensors: Sequence[Tensor]) -> Refusal | None:
        """Why an upload's decoded values must be refused (checked outside the lock: it reads them all)."""
        bad = content_problem(tensors)
        return None if bad is None else Refusal(ReasonCode.NON_FINITE, f"tensor {bad} contains NaN or Inf")

    def fold(self, name: str, round_number: int, tensors: Update, num_samples: int,
             wire_bytes: int, span: float | None = None) -> Refusal | None:
        """Add a checked update to its round; or say why it is refused. span: the update's distance
        from the global weights it was trained from (strategies.distance), for screening and clip."""
        current = self.current
        if current is None or current.number != round_number or not current.open:
            return Refusal(ReasonCode.STALE, f"stale update for round {round_number}; the round has closed")
        if name in current.submitted:
            return Refusal(ReasonCode.DUPLICATE_UPDATE, f"a second update for round {round_number}")
        if self.rules.buffered and len(current.submitted) >= self.rules.max_buffered_updates:
            return Refusal(ReasonCode.BUSY, f"round {round_number} already holds {self.rules.max_buffered_updates} "
                           f"updates (federation.max_buffered_updates)")
        outlier = self.screen(span)
        if outlier is not None:
            return outlier
        if span is not None:
            self.distances.append(span)
        try:
            fold_update(current.aggregator, tensors, num_samples, name, self.global_weights, span)
        except UpdateOutOfRange as exc:  # nothing was folded: the round goes on without it
            if span is not None:
                self.distances.pop()
            return Refusal(ReasonCode.NON_FINITE, f"update refused: {exc}")
        current.submitted.add(name)
        current.answered.add(name)
        current.bytes_received += wire_bytes
        return None

    def screen(self, span: float | None) -> Refusal | None:
        """An update farther from the global model than screen_factor x the typical distance is refused."""
        typical = self.typical_distance()
        factor = self.rules.screen_factor
        if span is None or factor <= 0 or typical is None or span <= factor * typical:
            return None
        return Refusal(ReasonCode.OUTLIER, f"update is {span:.3g} from the global model, over {factor:g} x the "
                       f"median distance of recent updates ({typical:.3g})")

    def refused(self, name: str, round_number: int) -> None:
        """A refused update still answers its round: the chief stops waiting for that worker."""
        if self.current is not None and self.current.number == round_number:
            self.current.answered.add(name)

    # -- closing a round --------------------------------------------------------------------------
    def own_weights_refusal(self, weights: Sequence[np.ndarray]) -> str | None:  # a programming error
        mismatch = spec_mismatch(self.specs, specs_of(weights))
        return None if mismatch is None else f"the chief's own weights do not fit the model: {mismatch}"

    def contribute_own(self, weights: Sequence[np.ndarray], num_samples: int, span: float | None = None) -> None:
        """The chief's own weights join the round it is closing (copied: the caller keeps them)."""
        if span is not None:
            self.distances.append(span)
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
        average = current.aggregator.average()
        bad = first_non_finite(average)
        refusal = None
        secure_refusal = getattr(current.aggregator, "refusal", None)
        if secure_refusal is not None:  # secure aggregation could not unmask: the previous model stays
            refusal = Refusal("secure-aggregation", str(secure_refusal))
            average = self.global_weights
        elif bad is not None:  # never adopted, broadcast or checkpointed: the previous model stays
            refusal = Refusal("non-finite-average", f"the average of round {current.number} holds NaN or Inf "
                              f"in tensor {bad}; the previous global weights are kept")
            average = self.global_weights
        next_round = current.number + 1
        if refusal is None:  # what the workers will hold (the broadcast's residual stays in its encoder)
            average = self.broadcast.advance(average, next_round)
        is_final = final if final is not None else next_round >= self.rules.rounds
        self.global_weights = freeze(average)
        self.finished = is_final
        self.current = self._new_round(next_round)
        return ClosedRound(average, next_round, is_final, list(current.aggregator.contributors),
                           current.bytes_received, refusal, current.aggregator.total_samples)
