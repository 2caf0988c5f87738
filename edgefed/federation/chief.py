"""The chief: accepts workers on its private address, runs the rounds, averages and broadcasts.

Threads: one accept loop; one handler per connection (handshake, then that peer's frames); the
training thread calls start() and average(). Shared state is guarded by one condition variable.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgefed.config import FederationSection
from edgefed.contracts.events import EventBus, TransferEvent
from edgefed.contracts.status import StatusFile
from edgefed.federation.broadcast import Broadcaster
from edgefed.federation.checkpoint import load_checkpoint
from edgefed.federation.compressed import needs_finite_pass, received_update, update_distance
from edgefed.federation.intake import ExtraHandler, Intake, described
from edgefed.federation.provenance import ModelProvenance
from edgefed.federation.refusals import report_refusal
from edgefed.federation.round_end import RoundEnd
from edgefed.federation.rounds import Refusal, RoundBook, RoundRules, read_hello
from edgefed.federation.seat import WorkerSeat as _Worker
from edgefed.federation.secure_chief import FROM_WORKERS as SECURE_FRAMES
from edgefed.federation.secure_chief import SecureChief
from edgefed.federation.session import RoundResult, StartInfo, limits_for
from edgefed.federation.staging import StagingPool, staging_pool
from edgefed.federation.timeline import RoundTimeline
from edgefed.federation.upload_slots import UploadSlots
from edgefed.transport import Connection, Listener, Transport, TransportError
from edgefed.wire import (
    Bye,
    Frame,
    Hello,
    MessageType,
    ReasonCode,
    Reject,
    Welcome,
    encode_message,
    expect,
)

log = logging.getLogger(__name__)


class ChiefSession:
    """The seed's chief (is_chief=True): serves on private_ip:private_port and trains too.

    It is handed what it needs (edgefed.wiring builds these from a node's configuration): the federation settings,
    its own name, a transport that already holds its credentials, its status file and state directory. The rules
    of a round live in rounds.RoundBook; this class owns the threads, the sockets and the clock.
    """

    def __init__(
        self, federation: FederationSection, *, name: str, transport: Transport, status: StatusFile,
        state_dir: str | Path, events: EventBus | None = None,
        extra_handlers: dict[MessageType, ExtraHandler] | None = None, hash_payloads: bool = False,
        on_close: Sequence[Callable[[], None]] = (),
        secagg_directory: Mapping[str, Ed25519PublicKey] | None = None,  # with federation.secure_aggregation
    ) -> None:
        self.name = name
        self.federation = federation
        self.events = events or EventBus()
        self.status = status
        self._transport = transport
        self._state_dir = state_dir
        self._extra_handlers = dict(extra_handlers or {})
        self._limits = limits_for(federation)
        self._hash_payloads = hash_payloads  # payload digests exist for the ledger's records
        self._on_close = list(on_close)  # run first in close(): e.g. the ledger ends its push connections
        self.events.subscribe(self.status.transfer)
        self.events.subscribe_refusals(self.status.refused)
        self._refused = functools.partial(report_refusal, status, self.events, name)  # log, status, EventBus
        self._cond = threading.Condition()  # guards _book and every seat
        self._book: RoundBook[_Worker] = RoundBook(RoundRules.from_section(federation), name)
        self._closing = False
        self.staging: StagingPool | None = None  # its counters are what tests and benchmarks read
        self._listener: Listener | None = None
        self._intake: Intake | None = None
        self.timeline = RoundTimeline()
        self._slots = UploadSlots(federation, self._cond, self._book, self.timeline, lambda: self.staging, self._drop)
        self._secure: SecureChief[_Worker] | None = None if secagg_directory is None else SecureChief(
            federation.secure_aggregation_threshold, secagg_directory, self._cond, self._book, self._send,
            self._drop, lambda: self._closing)
        self._counter_lock = threading.Lock()
        # Long-lived pools: a round must not pay for starting threads.
        self._broadcast = Broadcaster(name, self.events, hash_payloads, self._send, self._synced, self._book.broadcast)
        self._provenance = ModelProvenance(name, self.events, hash_payloads)  # model records for the ledger
        self._round_end = RoundEnd(state_dir, federation.checkpoint_every, status, self.timeline,
                                   self._broadcast, self.participants)
        self.bytes_sent = self.bytes_received = 0

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the chief is not listening yet")
        return self._listener.port

    def listen(self) -> int:
        """Open the listener (start() does this too); returns the bound port."""
        if self._listener is None:
            self._listener = self._transport.listen(
                self.federation.private_ip, self.federation.private_port, self._limits
            )
            self._intake = Intake(
                self._listener, self._serve_worker, self.status, self._extra_handlers,
                max_pending=self.federation.max_pending_connections, hello_timeout=self.federation.hello_timeout,
            )
            self._intake.start()
            self._slots.deadlines.start()
            log.info("chief %s listening on %s:%d", self.name, self.federation.private_ip, self._listener.port)
        return self._listener.port

    def _extends(self, finished_round: int) -> bool:
        """A finished training goes on when federation.rounds was raised since (the operator asked for more
        rounds), except under differential privacy: the nodes' noise was planned for the old total."""
        rounds = self.federation.rounds
        if rounds <= finished_round:
            return False
        if self.federation.dp_epsilon > 0:
            log.warning("training finished at round %d; not extended to %d rounds: dp_epsilon's noise was planned "
                        "for the old total (start a new training instead)", finished_round, rounds)
            return False
        log.info("training finished at round %d is extended to %d rounds", finished_round, rounds)
        return True

    def start(self, weights: list[np.ndarray] | None, num_samples: int = 0) -> StartInfo:
        """Wait for workers, then broadcast the starting weights (the checkpoint's, after a restart)."""
        del num_samples  # the chief's weight is given with each average()
        checkpoint = load_checkpoint(self._state_dir)
        if checkpoint is not None:
            log.info("resuming from checkpoint at round %d", checkpoint.round)
            weights, start_round, finished = checkpoint.weights, checkpoint.round, checkpoint.finished
            finished = finished and not self._extends(start_round)
        elif weights is None:
            raise ValueError("the chief needs initial weights (no checkpoint to resume from)")
        else:
            weights, start_round, finished = [np.array(w) for w in weights], 0, False
        with self._cond:
            book = self._book
            weights = book.begin(weights, start_round, finished)  # federation.broadcast_compression may round them
            self.staging = staging_pool(book.specs, self.federation, book.upload_specs, self._transport.streams)
        self._provenance.started(start_round, weights)
        self.listen()
        self.status.update(state="waiting", round=start_round)
        self._wait_for_workers()
        with self._cond:
            book.started = True
            joined, total, finished, weights = book.alive(), book.shard_count(), book.finished, book.global_weights
        for worker in joined:
            self._welcome(worker, total)
        self._broadcast(joined, start_round, weights, final=finished)
        self.timeline.broadcast_done(start_round)
        self.status.update(state="finished" if finished else "training", participants=self.participants())
        return StartInfo(weights, start_round, 0, total, finished=finished)

    def average(
        self, weights: list[np.ndarray], num_samples: int, final: bool | None = None
    ) -> RoundResult:
        """Contribute the chief's weights, gather the workers' until all are in or the deadline
        passes, average, checkpoint, broadcast. final defaults to "this was the last round"."""
        book = self._book
        measure = book.rules.measures_distances and book.current is not None and not book.own_weights_refusal(weights)
        span = update_distance(weights, book.global_weights) if measure else None  # only this thread writes them
        with self._cond:
            if book.current is None or not book.started:
                raise RuntimeError("average() before start()")
            if book.finished:
                return RoundResult(book.global_weights, book.round_number, [], finished=True)
            refusal = book.own_weights_refusal(weights)
            if refusal:
                raise ValueError(refusal)
            book.contribute_own(weights, num_samples, span)
            number = book.round_number
            expected = book.expected()
            deadline = time.monotonic() + self.federation.round_timeout
            gathering = time.perf_counter()
        if self._secure is not None:  # its phases, each waiting until this deadline (secure_chief.py)
            self._secure.drive(number, expected, deadline)
        with self._cond:
            while True:
                missing = book.missing(expected)
                remaining = deadline - time.monotonic()
                if not missing or remaining <= 0 or self._closing or self._secure is not None:
                    break
                self._cond.wait(remaining)
            self.timeline.add(number, "gather", time.perf_counter() - gathering)
            if missing:
                log.warning("round %d deadline passed without %s", number, sorted(missing))
                self.status.error(f"round {number}: no update from {', '.join(sorted(missing))}")
            with self.timeline.span(number, "average"):
                closed = book.close_round(final)
            recipients = book.alive()
        if closed.refusal is not None:
            log.error("%s", closed.refusal)
            self.status.error(str(closed.refusal))
        # checkpoint (when due, while the broadcast runs), then the model's provenance record, broadcast,
        # status file: round_end.py
        broadcast_bytes = self._round_end.finish(number, recipients, closed.next_round, closed.average, closed.final,
                                                 after_checkpoint=lambda: self._provenance.record(closed))
        log.info("round %d averaged %s", closed.next_round, closed.contributors)
        return RoundResult(
            closed.average, closed.next_round, closed.contributors, closed.final,
            closed.bytes_received + broadcast_bytes, broadcast_bytes, closed.bytes_received, samples=closed.samples,
            phases=self.timeline.take(number),
        )

    def participants(self) -> list[str]:
        with self._cond:
            return self._book.participants()

    def push_to_workers(self, parts: list[bytes | memoryview]) -> int:
        """Send frames to every connected worker (the exported model: model_push.model_frames); bytes sent."""
        with self._cond:
            workers = self._book.alive()
        return sum(self._send(worker, parts) for worker in workers)

    def close(self) -> None:
        try:
            for hook in self._on_close:
                hook()
        finally:
            self._shut_down()

    def _shut_down(self) -> None:
        with self._cond:
            self._closing = True
            workers = self._book.alive()
            self._cond.notify_all()
        for worker in workers:
            with contextlib.suppress(TransportError):
                worker.conn.send([encode_message(Bye(ReasonCode.SHUTDOWN, "chief shutting down"))])
            worker.conn.close()
        if self._intake is not None:
            self._intake.close()
        if self.staging is not None:
            self.staging.close()
        self._slots.deadlines.close()
        self._round_end.close()
        self._broadcast.close()

    def set_expected_workers(self, names: Sequence[str]) -> None:
        """A membership reload (no restart): round 1, or a resumed chief's first round, waits for these."""
        with self._cond:
            self._book.set_expected_workers(names)
            self._cond.notify_all()  # _wait_for_workers looks again

    # -- joining ----------------------------------------------------------------------------------
    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.federation.wait_time
        with self._cond:
            while time.monotonic() < deadline and not self._book.enough_workers():
                self._cond.wait(deadline - time.monotonic())

    def _welcome(self, worker: _Worker, total: int) -> None:
        with self._cond:
            round_number = self._book.round_number
        welcome = Welcome(task_index=worker.task_index, total=total, round=round_number, chief=self.name)
        self._send(worker, [encode_message(welcome, round_number)])

    def _register(self, conn: Connection, hello: Frame) -> _Worker | None:
        book = self._book
        greeting = read_hello(hello)
        with self._cond:
            refusal = greeting if isinstance(greeting, Refusal) else (
                book.admission_refusal(conn.peer) or book.compression_refusal(greeting))
            if refusal is None:
                worker = _Worker(conn.peer, book.task_index_for(conn.peer), conn=conn)
                book.seat(worker)
                started = book.started
                total = book.shard_count()
                self._cond.notify_all()
            round_number = book.round_number
        if refusal is not None:
            self._refused(conn.peer, round_number, refusal, "admission", f"refused {conn.peer}")
            with contextlib.suppress(TransportError):
                conn.send([encode_message(Bye(refusal.wire_code, refusal.reason))])
            conn.close()
            return None
        assert isinstance(greeting, Hello)  # read_hello gave a Refusal otherwise
        log.info("%s joined (task index %d, samples %d)", conn.peer, worker.task_index, greeting.num_samples)
        if started:  # a late joiner or a rejoin: current global weights right away
            self._welcome(worker, total)
            with self._cond:
                round_number, weights, final = book.round_number, book.global_weights, book.finished
            self._broadcast([worker], round_number, weights, final=final)
        self.status.update(participants=self.participants())
        return worker

    # -- a worker's connection --------------------------------------------------------------------
    def _serve_worker(self, conn: Connection, hello: Frame) -> None:
        """Runs on the connection's own thread (Intake's) for the worker's whole life."""
        worker = self._register(conn, hello)
        if worker is not None:
            self._worker_loop(worker)

    def _worker_loop(self, worker: _Worker) -> None:
        while worker.alive and not self._closing:
            started = time.monotonic()
            try:
                frame = worker.conn.recv(
                    allocator=lambda h, n, s: self._slots.allocate(worker, h, n, s),
                    hash_payload=self._hash_payloads,
                )
                bye = expect(frame, Bye) if frame.type is MessageType.BYE else None
            except Exception as exc:  # whatever the decoder raised: this worker leaves, the rounds go on
                self._slots.release(worker)
                self._drop(worker, described(exc))
                return
            if frame.type is MessageType.UPDATE:
                try:
                    self._accept_update(worker, frame, time.monotonic() - started)
                finally:
                    self._slots.release(worker)
            elif frame.type in SECURE_FRAMES and self._secure is not None:
                self._secure.receive(worker, frame)
            else:  # a BYE (the worker finished or was stopped) or a frame a worker never sends
                why = f"said goodbye: {bye.reason}" if bye else f"unexpected {frame.type.name} from a worker"
                self._drop(worker, why, orderly=bye is not None)
                return

    def _accept_update(self, worker: _Worker, frame: Frame, seconds: float) -> None:
        if worker.staging is not None:  # the upload's data, from its staging buffer to its last byte
            self.timeline.add(frame.round, "receive", time.perf_counter() - worker.staged_at)
        with self._cond:
            participants = self._book.total()
        self._count(received=frame.wire_bytes)
        self.events.emit(
            TransferEvent(frame.round, worker.name, self.name, self.name, "receive", participants,
                          frame.wire_bytes, frame.sha256, seconds, "update")
        )
        reason, timeline, validated = worker.reject_reason, self.timeline, time.perf_counter()
        if reason is None and frame.decoded is not None and self._secure is not None:  # a masked ring vector
            reason = self._book.content_refusal(frame.decoded)
            with self._cond:
                reason = reason or self._secure.masked(worker.name, frame, frame.decoded)
                self._cond.notify_all()
        elif reason is None and frame.decoded is not None:
            with self._cond:
                trained_from = self._book.global_weights
            update, span = received_update(frame.decoded, self._book.rules.compression, trained_from,
                                           self._book.rules.measures_distances)  # unlocked
            if needs_finite_pass(update, span):  # plain weights at a finite distance hold no NaN or Inf
                reason = self._book.content_refusal(frame.decoded)
            timeline.add(frame.round, "validate", time.perf_counter() - validated)
            if reason is None:
                with self._cond, timeline.span(frame.round, "add"):
                    reason = self._book.fold(worker.name, frame.round, update, frame.num_samples,
                                             frame.wire_bytes, span)
                    self._cond.notify_all()
        if reason is not None:
            with self._cond:
                self._book.refused(worker.name, frame.round)
                self._cond.notify_all()
            self._refused(worker.name, frame.round, reason, "update", f"rejected update from {worker.name}")
            self._send(worker, [encode_message(Reject(reason.wire_code, reason.reason), frame.round)])

    def _synced(self, worker: _Worker, round_number: int) -> None:
        with self._cond:
            self._book.synced(worker, round_number)
            self._cond.notify_all()

    def _send(self, worker: _Worker, parts: list[bytes | memoryview]) -> int:
        try:
            sent = worker.conn.send(parts)
        except TransportError as exc:
            self._drop(worker, str(exc))
            return 0
        self._count(sent=sent)
        return sent

    def _count(self, sent: int = 0, received: int = 0) -> None:
        with self._counter_lock:
            self.bytes_sent, self.bytes_received = self.bytes_sent + sent, self.bytes_received + received

    def _drop(self, worker: _Worker, reason: str, orderly: bool = False) -> None:
        with self._cond:
            if not self._book.leave(worker):
                return
            if not orderly and not self._closing:  # on file before a round waiting for this worker wakes
                self.status.error(f"{worker.name} left: {reason}")
            self._cond.notify_all()
        worker.conn.close()
        if orderly:  # a BYE: the worker finished or was stopped; not an error
            log.info("worker %s left: %s", worker.name, reason)
        elif not self._closing:
            log.warning("worker %s left: %s", worker.name, reason)
        if not self._closing:
            self.status.update(participants=self.participants())
