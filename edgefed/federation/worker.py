"""The worker: dials the chief's public address, trains locally, sends updates, adopts averages.

A lost connection is not fatal: the worker reconnects with exponential backoff and rejoins with the
chief's current global weights (the seed's hook dropped such a worker for good).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgefed.backoff import Backoff
from edgefed.config import FederationSection
from edgefed.contracts.events import EventBus, TransferEvent
from edgefed.contracts.status import StatusFile
from edgefed.federation.compressed import UploadFrame, WorkerBroadcasts, WorkerUploads
from edgefed.federation.digests import digest_while_sending
from edgefed.federation.model_push import MODEL_FRAMES, ModelReceiver
from edgefed.federation.secure_worker import TO_WORKERS, SecAggIdentity, SecureUploads
from edgefed.federation.session import RoundResult, StartInfo, limits_for
from edgefed.transport import Connection, PeerRefused, Transport, TransportError
from edgefed.wire import (
    PROTOCOL_VERSION,
    Bye,
    Flags,
    Frame,
    FrameHeader,
    Hello,
    MessageType,
    ProtocolError,
    ReasonCode,
    Reject,
    TensorSpec,
    Welcome,
    allocate_fresh,
    encode_message,
    expect,
)

log = logging.getLogger(__name__)


def fits_exactly(arrays: Sequence[np.ndarray], specs: Sequence[TensorSpec]) -> bool:
    """Whether a tensor frame of specs can be received straight into arrays (the reader's own rule)."""
    return len(arrays) == len(specs) and all(
        spec.encoding is None and a.shape == tuple(spec.shape) and a.dtype == np.dtype(spec.dtype).newbyteorder("<")
        and a.flags.c_contiguous and a.flags.writeable for a, spec in zip(arrays, specs, strict=True))


class FederationRefused(TransportError):
    """The chief refused this worker (e.g. late joiners not allowed); the message gives its reason."""


class WorkerSession:
    """The seed's worker (is_chief=False): connects to public_ip:public_port.

    Handed its federation settings, its name, a transport holding its credentials and its status file
    (edgefed.wiring builds them from a node's configuration).
    """

    def __init__(
        self,
        federation: FederationSection,
        *,
        name: str,
        transport: Transport,
        status: StatusFile,
        events: EventBus | None = None,
        hash_payloads: bool = False,
        on_close: Sequence[Callable[[], None]] = (),
        state_dir: str | Path | None = None,
        secagg: SecAggIdentity | None = None,  # needed with federation.secure_aggregation
    ) -> None:
        self.name = name
        self.federation = federation
        self.events = events or EventBus()
        self._transport = transport
        self._limits = limits_for(federation)
        self._hash_payloads = hash_payloads  # digests exist for the ledger's records
        self._uploads = WorkerUploads(federation.compression)  # weights, or compressed deltas
        self._broadcasts = WorkerBroadcasts(federation.broadcast_compression)  # WEIGHTS frames -> global weights
        self._secure: SecureUploads | None = None  # masked, quantized deltas (secure_worker.py)
        if federation.secure_aggregation:
            if secagg is None:
                raise ValueError("federation.secure_aggregation needs the node's signing key, and theirs")
            self._secure = SecureUploads(name, secagg, federation.secure_aggregation_threshold,
                                         federation.secure_aggregation_bound)
        self._on_close = list(on_close)  # run first in close(): e.g. the ledger flushes its outbox
        self.status = status
        self.events.subscribe(self.status.transfer)
        self._conn: Connection | None = None
        self._pinned_chief = ""  # the chief's certificate name, once a join succeeded
        self.chief = ""
        self.round = 0
        self.task_index = -1
        self.total = 0
        self.finished = False
        self.num_samples = 0
        self._gave_up = False  # a permanent error ended this worker (state: error)
        self.bytes_sent = 0
        self.bytes_received = 0
        # the chief's exported model, when it sends one (federation.push_model); None: FILE_* frames are refused
        self.models = ModelReceiver(state_dir, federation.max_model_bytes) if state_dir is not None else None
        self._unconfirmed: TransferEvent | None = None  # the update in flight, recorded once the chief answers
        self._receive_target: list[np.ndarray] | None = None  # receive_global_into(): for one average()

    # -- public API -------------------------------------------------------------------------------
    def start(self, weights: list[np.ndarray] | None = None, num_samples: int = 0) -> StartInfo:
        """Join the federation; returns the chief's starting weights and this worker's task index."""
        del weights  # a worker always starts from the chief's weights
        self.num_samples = num_samples
        try:
            global_weights = self._join()
        finally:
            self._receive_target = None
        return StartInfo(global_weights, self.round, self.task_index, self.total, finished=self.finished)

    def receive_global_into(self, arrays: list[np.ndarray]) -> None:
        """The next start() or average() may receive the chief's global weights straight into arrays
        (the trainer's, which the caller overwrites with them anyway: the driver's set_weights), so a
        worker holds no second model while they arrive. Only for plain broadcasts and arrays that fit
        the frame exactly; any other frame gets arrays of its own. A frame cut short leaves arrays
        partly written: the rejoin that follows returns whole weights to set."""
        self._receive_target = list(arrays)

    def average(self, weights: list[np.ndarray], num_samples: int, final: bool | None = None) -> RoundResult:
        """Send this round's local weights; return the chief's average (or, after a lost connection,
        the current global weights on rejoining)."""
        del final  # the chief decides when training ends
        self.num_samples = num_samples
        if self.finished:
            self._receive_target = None
            return RoundResult(weights, self.round, [], finished=True)
        try:
            return self._exchange(weights, num_samples)
        except (TransportError, ProtocolError) as exc:
            log.warning("lost the chief during round %d (%s); rejoining", self.round, exc)
            self.status.error(f"round {self.round}: {exc}; rejoining")
            self._forget_unconfirmed("the connection ended; the line above says why")
            self._disconnect()
            global_weights = self._join()
            return RoundResult(global_weights, self.round, [], finished=self.finished)
        finally:
            self._receive_target = None

    def wait_for_model(self, timeout: float) -> bool:
        """After the last round: read the chief's frames until a model was received whole (True) or
        timeout seconds passed, the chief left or the connection failed (False; the last good model stays)."""
        if self.models is None or self._conn is None:
            return False
        kept = self.models.completed
        deadline = time.monotonic() + timeout
        try:
            while self.models.completed == kept:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                self._conn.settimeout(remaining)
                self._recv_weights_or_control(self._conn)
        except (TransportError, ProtocolError, OSError) as exc:
            late = time.monotonic() >= deadline
            log.warning("no model from the chief %s", f"within {timeout:g}s" if late else f"({exc})")
            self._disconnect()  # a frame may have been cut short: this connection is done
            return False
        finally:
            if self._conn is not None:
                self._conn.settimeout(None)
        return True

    def close(self) -> None:
        if self.models is not None:
            self.models.close()
        try:
            for hook in self._on_close:
                hook()
        finally:
            self._leave()

    def _leave(self) -> None:
        self._forget_unconfirmed("leaving")
        if self._conn is not None:
            with contextlib.suppress(TransportError):
                self._conn.send([encode_message(Bye(ReasonCode.LEAVING, "leaving"), self.round)])
        self._disconnect()
        if not self._gave_up:
            self.status.update(state="finished" if self.finished else "stopped")

    # -- internals --------------------------------------------------------------------------------
    def _exchange(self, weights: list[np.ndarray], num_samples: int) -> RoundResult:
        conn = self._require_conn()
        submitted = self.round
        early: Frame | None = None  # a later round's weights that arrived during secure aggregation's phases
        if self._secure is not None:
            sent, early = self._secure.exchange(conn, submitted, weights, num_samples, self._recv_weights_or_control,
                                                lambda parts: self._send_update(conn, submitted, parts))
        else:
            sent = self._upload(conn, submitted, weights, num_samples)
        while True:
            frame, early = early or self._recv_weights_or_control(conn), None
            if frame.type is MessageType.WEIGHTS and frame.tensors is not None and frame.round > submitted:
                assert frame.tensors is not None
                self._received_global(frame.tensors)
                # rounds faster than the status file's write interval share one rewrite (contracts/status.py)
                self.status.update_soon(state="finished" if self.finished else "training", round=self.round)
                return RoundResult(frame.tensors, frame.round, [], self.finished, bytes=sent + frame.wire_bytes,
                                   bytes_sent=sent, bytes_received=frame.wire_bytes)

    def _received_global(self, weights: list[np.ndarray]) -> None:
        self._uploads.received_global(weights)
        if self._secure is not None:
            self._secure.received_global(weights)

    def _upload(self, conn: Connection, submitted: int, weights: list[np.ndarray], num_samples: int) -> int:
        """Send this round's update (the weights, or their compressed delta); the bytes sent."""
        parts = self._uploads.frame(weights, submitted, num_samples)
        if parts is None:  # NaN/Inf under compression: nothing to send; the chief's round timeout passes
            self.status.error(f"round {submitted}: the trained weights hold NaN or Inf; no update sent")
            return 0
        return self._send_update(conn, submitted, parts)

    def _send_update(self, conn: Connection, submitted: int, parts: UploadFrame) -> int:
        """Send an UPDATE frame, recorded as this round's upload (plain, compressed or masked)."""
        started = time.monotonic()
        digest = digest_while_sending(parts, self._hash_payloads)
        sent = conn.send(parts)
        self.bytes_sent += sent
        # Recorded once the chief has answered this round on this connection (_confirm_upload): a link
        # lost while the update is in flight leaves no send record the chief's receive can never match.
        self._unconfirmed = TransferEvent(submitted, self.name, self.chief, self.name, "send", self.total, sent,
                                          digest.result(), time.monotonic() - started, "update")
        return sent

    def _confirm_upload(self, frame: Frame) -> None:
        """The chief answered the round of the update in flight (later weights, or a REJECT of it):
        the update reached it, and the send record goes to the ledger."""
        pending = self._unconfirmed
        if pending is None:
            return
        if (frame.type is MessageType.WEIGHTS and frame.round > pending.round) or (
                frame.type is MessageType.REJECT and frame.round == pending.round):
            self._unconfirmed = None
            self.events.emit(pending)

    def _forget_unconfirmed(self, why: str) -> None:
        if self._unconfirmed is not None:
            log.warning("the update for round %d was not confirmed by the chief (%s); not recorded as sent",
                        self._unconfirmed.round, why)
            self._unconfirmed = None

    def _recv_weights_or_control(self, conn: Connection) -> Frame:
        started = time.monotonic()
        frame = conn.recv(allocator=self._allocate, hash_payload=self._hash_payloads)
        self._confirm_upload(frame)
        if frame.type is MessageType.WEIGHTS:
            frame.tensors = self._broadcasts.weights(frame)  # None: a stale full model, ignored
            self.bytes_received += frame.wire_bytes
            self.events.emit(
                TransferEvent(frame.round, self.chief, self.name, self.name, "receive", self.total,
                              frame.wire_bytes, frame.sha256, time.monotonic() - started, "weights")
            )
            if frame.tensors is not None and (frame.round > self.round or frame.flags & Flags.FINAL):
                self.round = frame.round
                self.finished = bool(frame.flags & Flags.FINAL)
        elif frame.type is MessageType.REJECT:
            reject = expect(frame, Reject)
            log.warning("chief rejected the update for round %d (%s): %s", frame.round, reject.code, reject.reason)
            self.status.error(f"update for round {frame.round} rejected ({reject.code}): {reject.reason}")
        elif frame.type is MessageType.BYE:
            raise TransportError(f"chief said goodbye: {expect(frame, Bye).reason}")
        elif frame.type in MODEL_FRAMES and self.models is not None:
            self.models.chief = self.chief
            self.models.feed(frame)
        elif frame.type is not MessageType.WELCOME and frame.type not in TO_WORKERS:  # secure aggregation's
            raise ProtocolError(f"unexpected {frame.type.name} from the chief")
        return frame

    def _allocate(self, header: FrameHeader, num_samples: int, specs: list[TensorSpec]) -> list[np.ndarray]:
        """Where a frame's tensors land: receive_global_into's arrays for plain global weights that fit."""
        target = self._receive_target
        if (target is not None and header.type is MessageType.WEIGHTS and self._secure is None
                and self._broadcasts.hello_value == "none" and fits_exactly(target, specs)):
            return target
        return allocate_fresh(header, num_samples, specs)

    def _join(self) -> list[np.ndarray]:
        """Connect (with backoff), say hello, take the welcome and the current global weights."""
        deadline = time.monotonic() + self.federation.reconnect_timeout
        backoff = Backoff(first=0.2, cap=max(0.2, self.federation.reconnect_max_delay))
        while True:
            try:
                return self._join_once()
            except (FederationRefused, PeerRefused) as exc:  # retrying cannot fix these: stop now
                self._give_up(exc)
                raise
            except (TransportError, ProtocolError) as exc:
                self._disconnect()
                if time.monotonic() + backoff.upcoming > deadline:
                    raise TransportError(
                        f"gave up joining {self.federation.public_ip}:{self.federation.public_port} "
                        f"after {self.federation.reconnect_timeout:.0f}s: {exc}"
                    ) from exc
                self.status.update(state="waiting")
                delay = backoff.next_delay()
                log.info("chief not reachable (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)

    def _join_once(self) -> list[np.ndarray]:
        federation = self.federation
        conn = self._transport.connect(
            federation.public_ip, federation.public_port, self._limits, federation.server_name or federation.public_ip
        )
        self._conn = conn
        # The CA vouches for every node; the chief is the one node with the chief's name: the configured
        # federation.chief_name, else the name this worker's first chief had (it may not change later).
        expected = federation.chief_name or self._pinned_chief
        if expected and conn.peer != expected:
            raise TransportError(f"the node at {federation.public_ip}:{federation.public_port} is {conn.peer!r}, "
                                 f"not the chief {expected!r}")
        self.chief = conn.peer
        self._broadcasts.new_connection()  # the chief sends a new connection a full model first
        conn.send([encode_message(Hello(num_samples=self.num_samples, protocol=PROTOCOL_VERSION,
                                        compression=self._uploads.hello_value,
                                        broadcast=self._broadcasts.hello_value,
                                        secure_aggregation=self._secure is not None))])
        while True:
            frame = conn.recv(allocator=self._allocate, hash_payload=self._hash_payloads)
            if frame.type is MessageType.BYE:
                bye = expect(frame, Bye)
                # refusals that retrying cannot change end the worker; duplicate-identity waits for the
                # chief to notice this node's previous connection is gone
                if bye.code.permanent:
                    raise FederationRefused(f"the chief refused {self.name} ({bye.code}): {bye.reason}")
                raise TransportError(f"chief said goodbye while joining ({bye.code}): {bye.reason}")
            if frame.type is MessageType.WELCOME:
                welcome = expect(frame, Welcome)
                self.task_index, self.total = welcome.task_index, welcome.total
                log.info("joined %s as task %d of %d", self.chief, self.task_index, self.total)
                self._pinned_chief = self.chief
                # joined: the status shows it (and its shard) while the chief waits for the rest of the fleet
                self.status.update(state="waiting", task_index=self.task_index, participants=[self.chief])
            elif frame.type is MessageType.WEIGHTS:
                frame.tensors = self._broadcasts.weights(frame)  # checked; never stale on a new connection
                self.round = frame.round
                self.finished = bool(frame.flags & Flags.FINAL)
                self.bytes_received += frame.wire_bytes
                self.events.emit(
                    TransferEvent(frame.round, self.chief, self.name, self.name, "receive", self.total,
                                  frame.wire_bytes, frame.sha256, 0.0, "weights")
                )
                assert frame.tensors is not None
                self._received_global(frame.tensors)
                self.status.update(
                    state="finished" if self.finished else "training", round=self.round,
                    task_index=self.task_index, participants=[self.chief],
                )
                return frame.tensors
            elif frame.type is MessageType.REJECT:
                expect(frame, Reject)  # a late answer to an update of the previous connection
            elif frame.type in MODEL_FRAMES and self.models is not None:  # a model sent to all as we joined
                self.models.chief = self.chief
                self.models.feed(frame)
            else:
                raise ProtocolError(f"unexpected {frame.type.name} while joining")

    def _give_up(self, exc: Exception) -> None:
        """The status file says state: error with the reason; close() keeps it (docs/status.md). The
        caller raises: the command's last line (`edgefed: gave up: ...`) says it once."""
        self._gave_up = True
        self.status.error(str(exc))
        self.status.update(state="error")

    def _require_conn(self) -> Connection:
        if self._conn is None:
            raise TransportError("not connected to the chief")
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

