"""The chief: accepts workers on its private address, runs the rounds, averages and broadcasts.

Threads: one accept loop; one handler per connection (handshake, then that peer's frames); the
training thread calls start() and average(). Shared state is guarded by one condition variable.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edgefed.config import NodeConfig
from edgefed.contracts.events import EventBus, TransferEvent
from edgefed.contracts.status import StatusFile
from edgefed.federation.aggregation import StreamingAggregator, UploadSlots, first_non_finite, spec_mismatch
from edgefed.federation.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from edgefed.federation.digests import digest_while_sending
from edgefed.federation.session import RoundResult, StartInfo, limits_for
from edgefed.pki import NodeCredentials
from edgefed.transport import Connection, Listener, PendingConnection, TlsTransport, Transport, TransportError
from edgefed.wire import (
    Flags,
    Frame,
    FrameHeader,
    MessageType,
    ProtocolError,
    TensorSpec,
    encode_control_frame,
    encode_tensor_frame,
    specs_of,
)

log = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT = 15.0
ExtraHandler = Callable[[Connection, Frame], None]


@dataclass(eq=False)
class _Worker:
    name: str
    conn: Connection
    task_index: int
    synced_round: int = -1  # the round whose global weights this worker last received
    alive: bool = True
    reject_reason: str | None = None  # set by the allocator when an upload is refused before its data
    staging: list[np.ndarray] | None = None


@dataclass
class _Round:
    number: int
    aggregator: StreamingAggregator
    submitted: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)  # submitted, or rejected: the chief stops waiting
    open: bool = True
    bytes_received: int = 0


def _freeze(weights: list[np.ndarray]) -> list[np.ndarray]:
    """The global weights are shared by broadcasts, checkpoints and the caller: make them read-only
    rather than copy them (a trainer's set_weights copies what it keeps)."""
    for array in weights:
        array.flags.writeable = False
    return weights


class ChiefSession:
    """The seed's chief (is_chief=True): serves on private_ip:private_port and trains too."""

    def __init__(
        self,
        config: NodeConfig,
        events: EventBus | None = None,
        extra_handlers: dict[MessageType, ExtraHandler] | None = None,
        status: StatusFile | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.config = config
        self.name = config.node.name
        self.federation = config.federation
        self.events = events or EventBus()
        self._extra_handlers = dict(extra_handlers or {})
        self._limits = limits_for(self.federation)
        # Payload digests exist for the ledger's records: without a ledger, no hashing.
        self._hash_payloads = config.ledger.enabled
        self._transport = transport or TlsTransport(NodeCredentials.load(config.node.pki_dir, self.name))
        self._state_dir = config.node.state_dir
        self.status = status or StatusFile(
            self._state_dir, "chief", self.name, role="chief", task_index=0, round=0,
            rounds_total=self.federation.rounds, participants=[],
        )
        self.events.subscribe(self.status.transfer)
        self._cond = threading.Condition()
        self._workers: dict[str, _Worker] = {}
        self._task_indices: dict[str, int] = {}
        self._started = False
        self._finished = False
        self._closing = False
        self._global: list[np.ndarray] = []
        self._specs: list[TensorSpec] = []
        self._round: _Round | None = None
        self._slots: UploadSlots | None = None
        self._listener: Listener | None = None
        self._threads: list[threading.Thread] = []
        self._counter_lock = threading.Lock()
        # Long-lived pools: a round must not pay for starting threads.
        self._senders = ThreadPoolExecutor(max_workers=32, thread_name_prefix="chief-send")
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chief-checkpoint")
        self.bytes_sent = 0
        self.bytes_received = 0

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
            self._spawn(self._accept_loop, "chief-accept")
            log.info("chief %s listening on %s:%d", self.name, self.federation.private_ip, self._listener.port)
        return self._listener.port

    def start(self, weights: list[np.ndarray] | None, num_samples: int = 0) -> StartInfo:
        """Wait for workers, then broadcast the starting weights (the checkpoint's, after a restart)."""
        del num_samples  # the chief's weight is given with each average()
        checkpoint = load_checkpoint(self._state_dir)
        if checkpoint is not None:
            log.info("resuming from checkpoint at round %d", checkpoint.round)
            weights, start_round, finished = checkpoint.weights, checkpoint.round, checkpoint.finished
        elif weights is None:
            raise ValueError("the chief needs initial weights (no checkpoint to resume from)")
        else:
            weights, start_round, finished = [np.array(w) for w in weights], 0, False
        _freeze(weights)
        specs = specs_of(weights)
        with self._cond:
            self._global, self._specs = weights, specs
            self._slots = UploadSlots(specs, self.federation.max_concurrent_uploads)
            self._round = _Round(start_round, StreamingAggregator(specs))
            self._finished = finished or start_round >= self.federation.rounds
        self.listen()
        self.status.update(state="waiting", round=start_round)
        self._wait_for_workers()
        with self._cond:
            self._started = True
            joined = [w for w in self._workers.values() if w.alive]
            total = len(joined) + 1
        for worker in joined:
            self._welcome(worker, total)
        self._broadcast(joined, start_round, weights, final=self._finished)
        self.status.update(state="finished" if self._finished else "training", participants=self.participants())
        return StartInfo(weights, start_round, 0, total, finished=self._finished)

    def average(
        self, weights: list[np.ndarray], num_samples: int, final: bool | None = None
    ) -> RoundResult:
        """Contribute the chief's weights, gather the workers' until all are in or the deadline
        passes, average, checkpoint, broadcast. final defaults to "this was the last round"."""
        with self._cond:
            current = self._round
            if current is None or not self._started:
                raise RuntimeError("average() before start()")
            if self._finished:
                return RoundResult(self._global, current.number, [], finished=True)
            mismatch = spec_mismatch(self._specs, specs_of(weights))
            if mismatch:
                raise ValueError(f"the chief's own weights do not fit the model: {mismatch}")
            current.aggregator.add(weights, num_samples, self.name)
            expected = {w.name for w in self._workers.values() if w.alive and w.synced_round == current.number}
            deadline = time.monotonic() + self.federation.round_timeout
            while True:
                missing = {n for n in expected if n not in current.answered and self._is_alive(n)}
                remaining = deadline - time.monotonic()
                if not missing or remaining <= 0 or self._closing:
                    break
                self._cond.wait(remaining)
            if missing:
                log.warning("round %d deadline passed without %s", current.number, sorted(missing))
                self.status.error(f"round {current.number}: no update from {', '.join(sorted(missing))}")
            current.open = False
            average = _freeze(current.aggregator.average())
            next_round = current.number + 1
            is_final = final if final is not None else next_round >= self.federation.rounds
            self._global = average
            self._finished = is_final
            self._round = _Round(next_round, StreamingAggregator(self._specs))
            recipients = [w for w in self._workers.values() if w.alive]
            contributors = list(current.aggregator.contributors)
        # The checkpoint is written while the broadcast runs (a crash in between only repeats a round),
        # and is on disk before average() returns.
        checkpointing = self._background.submit(
            save_checkpoint, self._state_dir, Checkpoint(next_round, average, is_final)
        )
        broadcast_bytes = self._broadcast(recipients, next_round, average, final=is_final)
        checkpointing.result()  # a failed write (disk full) stops the chief with its error
        self.status.update(
            state="finished" if is_final else "training", round=next_round, participants=self.participants()
        )
        log.info("round %d averaged %s", next_round, contributors)
        return RoundResult(
            average, next_round, contributors, is_final,
            bytes=current.bytes_received + broadcast_bytes,
        )

    def participants(self) -> list[str]:
        with self._cond:
            return sorted(w.name for w in self._workers.values() if w.alive)

    def serve_until(self, stop: threading.Event) -> None:
        """Keep accepting (late joiners get the final weights; ledger deliveries land) until stop is set."""
        stop.wait()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            workers = list(self._workers.values())
            self._cond.notify_all()
        for worker in workers:
            with contextlib.suppress(TransportError):
                worker.conn.send([encode_control_frame(MessageType.BYE, 0, {"reason": "chief shutting down"})])
            worker.conn.close()
        if self._listener is not None:
            self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._senders.shutdown(wait=True)
        self._background.shutdown(wait=True)

    # -- joining ----------------------------------------------------------------------------------
    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.federation.wait_time
        with self._cond:
            while time.monotonic() < deadline:
                alive = sum(1 for w in self._workers.values() if w.alive)
                if self.federation.min_workers and alive >= self.federation.min_workers:
                    break
                self._cond.wait(deadline - time.monotonic())

    def _welcome(self, worker: _Worker, total: int) -> None:
        with self._cond:
            round_number = self._round.number if self._round else 0
        body = {"task_index": worker.task_index, "total": total, "round": round_number, "chief": self.name}
        self._send(worker, [encode_control_frame(MessageType.WELCOME, round_number, body)])

    def _register(self, conn: Connection, hello: Frame) -> _Worker | None:
        with self._cond:
            if self._started and not self.federation.allow_late_joiners and conn.peer not in self._task_indices:
                refusal = "late joiners are not allowed in this federation"
            elif conn.peer == self.name:
                refusal = f"{conn.peer} is the chief's own name"
            else:
                refusal = None
            if refusal is None:
                index = self._task_indices.setdefault(conn.peer, len(self._task_indices) + 1)
                previous = self._workers.get(conn.peer)
                worker = _Worker(conn.peer, conn, index)
                self._workers[conn.peer] = worker
                started = self._started
                total = sum(1 for w in self._workers.values() if w.alive) + 1
                self._cond.notify_all()
        if refusal is not None:
            log.warning("refused %s: %s", conn.peer, refusal)
            conn.send([encode_control_frame(MessageType.BYE, 0, {"reason": refusal})])
            conn.close()
            return None
        if previous is not None and previous.alive:
            log.info("%s reconnected; dropping its old connection", conn.peer)
            self._drop(previous, "replaced by a new connection")
        log.info("%s joined (task index %d, samples %s)", conn.peer, index, hello.body.get("num_samples"))
        if started:  # a late joiner or a rejoin: current global weights right away
            self._welcome(worker, total)
            with self._cond:
                round_number, weights, final = self._round.number if self._round else 0, self._global, self._finished
            self._broadcast([worker], round_number, weights, final=final)
        self.status.update(participants=self.participants())
        return worker

    # -- connections ------------------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closing:
            try:
                pending = self._listener.accept_pending()
            except OSError:
                if self._closing:
                    return
                log.exception("accept failed")
                time.sleep(0.1)
                continue
            host, port = pending.address
            self._spawn(self._serve_connection, f"chief-conn-{host}:{port}", pending)

    def _serve_connection(self, pending: PendingConnection) -> None:
        try:
            conn = pending.authenticate()
        except TransportError as exc:
            host = pending.address[0]
            log.warning("refused connection from %s:%d: %s", host, pending.address[1], exc)
            self.status.error(f"refused {host}: {exc}")
            return
        try:
            conn.settimeout(FIRST_FRAME_TIMEOUT)
            first = conn.recv()
            conn.settimeout(None)
        except (TransportError, ProtocolError) as exc:
            log.warning("dropped %s before it said hello: %s", conn.peer, exc)
            self.status.error(f"{conn.peer}: {exc}")
            conn.close()
            return
        handler = self._extra_handlers.get(first.type)
        if handler is not None:
            try:
                handler(conn, first)
            finally:
                conn.close()
            return
        if first.type is not MessageType.HELLO:
            log.warning("%s opened with %s instead of HELLO", conn.peer, first.type.name)
            conn.close()
            return
        worker = self._register(conn, first)
        if worker is not None:
            self._worker_loop(worker)

    def _worker_loop(self, worker: _Worker) -> None:
        while worker.alive and not self._closing:
            started = time.monotonic()
            try:
                frame = worker.conn.recv(
                    allocator=lambda h, n, s: self._allocate_upload(worker, h, n, s),
                    hash_payload=self._hash_payloads,
                )
            except (ProtocolError, TransportError) as exc:
                self._release_staging(worker)
                prefix = "protocol error: " if isinstance(exc, ProtocolError) else ""
                self._drop(worker, f"{prefix}{exc}")
                return
            if frame.type is MessageType.UPDATE:
                try:
                    self._accept_update(worker, frame, time.monotonic() - started)
                finally:
                    self._release_staging(worker)
            elif frame.type is MessageType.BYE:
                self._drop(worker, f"said goodbye: {frame.body.get('reason', '')}")
                return
            else:
                self._drop(worker, f"unexpected {frame.type.name} from a worker")
                return

    def _release_staging(self, worker: _Worker) -> None:
        staging, worker.staging = worker.staging, None
        if staging is not None and self._slots is not None:
            self._slots.release(staging)

    def _allocate_upload(
        self, worker: _Worker, header: FrameHeader, num_samples: int, specs: list[TensorSpec]
    ) -> list[np.ndarray] | None:
        """Decide from the tensor header alone whether to take the upload; reserve a staging slot."""
        worker.reject_reason = None
        if header.type is not MessageType.UPDATE:
            worker.reject_reason = f"{header.type.name} cannot carry tensors from a worker"
            return None
        with self._cond:
            current = self._round.number if self._round else -1
        mismatch = spec_mismatch(self._specs, specs)
        if header.round != current:
            worker.reject_reason = f"stale update for round {header.round}; the chief is at round {current}"
        elif mismatch:
            worker.reject_reason = f"update does not fit the model: {mismatch}"
        elif num_samples <= 0:
            worker.reject_reason = "update carries no samples"
        if worker.reject_reason is not None or self._slots is None:
            return None
        worker.staging = self._slots.acquire()
        return worker.staging

    def _accept_update(self, worker: _Worker, frame: Frame, seconds: float) -> None:
        with self._cond:
            participants = sum(1 for w in self._workers.values() if w.alive) + 1
        self._count(received=frame.wire_bytes)
        self.events.emit(
            TransferEvent(frame.round, worker.name, self.name, self.name, "receive", participants,
                          frame.wire_bytes, frame.sha256, seconds, "update")
        )
        reason = worker.reject_reason
        if reason is None and frame.tensors is not None:
            bad = first_non_finite(frame.tensors)
            if bad is not None:
                reason = f"tensor {bad} contains NaN or Inf"
        if reason is None and frame.tensors is not None:
            with self._cond:
                current = self._round
                if current is None or current.number != frame.round or not current.open:
                    reason = f"stale update for round {frame.round}; the round has closed"
                elif worker.name in current.submitted:
                    reason = f"a second update for round {frame.round}"
                else:
                    current.aggregator.add_scaled_in_place(frame.tensors, frame.num_samples, worker.name)
                    current.submitted.add(worker.name)
                    current.answered.add(worker.name)
                    current.bytes_received += frame.wire_bytes
                    self._cond.notify_all()
        if reason is not None:
            with self._cond:
                if self._round is not None and self._round.number == frame.round:
                    self._round.answered.add(worker.name)
                    self._cond.notify_all()
            log.warning("rejected update from %s: %s", worker.name, reason)
            self.status.error(f"rejected update from {worker.name}: {reason}")
            self._send(worker, [encode_control_frame(MessageType.REJECT, frame.round, {"reason": reason})])

    def _broadcast(self, workers: list[_Worker], round_number: int, weights: list[np.ndarray], final: bool) -> int:
        """Send the weights to every worker concurrently; returns the bytes sent."""
        if not workers:
            return 0
        flags = Flags.FINAL if final else Flags.NONE
        parts = encode_tensor_frame(MessageType.WEIGHTS, round_number, weights, 0, flags)
        digest = digest_while_sending(parts, self._hash_payloads)
        total = sum(1 for w in workers if w.alive) + 1

        def send_one(worker: _Worker) -> int:
            started = time.monotonic()
            sent = self._send(worker, parts)
            if sent:
                with self._cond:
                    worker.synced_round = max(worker.synced_round, round_number)
                    self._cond.notify_all()
                self.events.emit(
                    TransferEvent(round_number, self.name, worker.name, self.name, "send", total, sent, digest.result(),
                                  time.monotonic() - started, "weights")
                )
            return sent

        if len(workers) == 1:
            return send_one(workers[0])
        return sum(self._senders.map(send_one, workers))

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
            self.bytes_sent += sent
            self.bytes_received += received

    def _is_alive(self, name: str) -> bool:
        worker = self._workers.get(name)
        return worker is not None and worker.alive

    def _drop(self, worker: _Worker, reason: str) -> None:
        with self._cond:
            if not worker.alive:
                return
            worker.alive = False
            if self._workers.get(worker.name) is worker:
                del self._workers[worker.name]
            self._cond.notify_all()
        worker.conn.close()
        if not self._closing:
            log.warning("worker %s left: %s", worker.name, reason)
            self.status.error(f"{worker.name} left: {reason}")
            self.status.update(participants=self.participants())
