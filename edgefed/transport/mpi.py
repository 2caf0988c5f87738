"""Frames over MPI (mpi4py on OpenMPI): rank 0 is the chief, ranks 1..N the workers.

Every rank names itself once at start (an allgather of node names): a connection's peer is the name
its rank announced. MPI itself authenticates nothing and encrypts nothing (docs/mpi.md).

Each encoded frame part travels as one MPI message, sent straight from the part's buffer (tensors
from their arrays). A message that fits the reader's next buffer (a tensor part always fits its
array) is received straight into it; smaller parts (header, control body) go through a scratch
buffer bounded by the frame limits. Every wait polls a non-blocking request, so timeouts hold.

A connection is a tag: the worker's connect() announces a generation on CONNECT_TAG and both sides
then talk on DATA_TAG_BASE + generation; an empty message on that tag closes it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable
from typing import Any, overload

from mpi4py import MPI

from edgefed.transport.base import ConnectionClosed, ListenerClosed, PeerRefused, TransportError
from edgefed.wire import Frame, FrameReader, Limits
from edgefed.wire.frame import HEADER_SIZE
from edgefed.wire.reader import Allocator, allocate_fresh

CHIEF_RANK = 0
CONNECT_TAG = 1
DATA_TAG_BASE = 16
GENERATIONS = 1 << 12  # tags in use stay well below MPI_TAG_UB (at least 32767)
MAX_NAME = 255

# One lock around every MPI call: correct under any thread level, and the calls never block.
_MPI_LOCK = threading.Lock()


def _poll(request: MPI.Request, deadline: float | None, what: str) -> None:
    """Wait for a non-blocking request without blocking inside MPI; TransportError past deadline."""
    pause = 0.0002
    while True:
        with _MPI_LOCK:
            if request.Test():
                return
        if deadline is not None and time.monotonic() > deadline:
            with _MPI_LOCK:
                request.Cancel()
            raise TransportError(f"timed out {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.005)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class MpiConnection:
    """Frames to one rank on one tag. send() may run on another thread than recv()."""

    def __init__(self, comm: Any, rank: int, tag: int, peer: str, limits: Limits | None) -> None:
        self._comm = comm
        self._rank = rank
        self._tag = tag
        self._peer = peer
        self._reader = FrameReader(limits)
        self._limits = self._reader.limits
        self._timeout: float | None = None
        self._send_lock = threading.Lock()
        self._closed = False

    @property
    def peer(self) -> str:
        return self._peer

    def settimeout(self, seconds: float | None) -> None:
        self._timeout = seconds

    def send(self, parts: Iterable[bytes | memoryview]) -> int:
        total = 0
        deadline = _deadline(self._timeout)
        with self._send_lock:
            if self._closed:
                raise TransportError(f"send to {self._peer}: connection closed")
            for part in parts:
                view = memoryview(part).cast("B")  # a byte view of the same memory: no copy
                if view.nbytes == 0:
                    continue  # an empty message means "closed"
                with _MPI_LOCK:
                    request = self._comm.Isend([view, MPI.BYTE], dest=self._rank, tag=self._tag)
                _poll(request, deadline, f"sending to {self._peer}")
                total += view.nbytes
        return total

    def _next_message(self, deadline: float | None) -> tuple[Any, int]:
        status = MPI.Status()
        pause = 0.0002
        while True:
            with _MPI_LOCK:
                message = self._comm.improbe(source=self._rank, tag=self._tag, status=status)
            if message is not None:
                return message, status.Get_count(MPI.BYTE)
            if deadline is not None and time.monotonic() > deadline:
                raise TransportError(f"timed out waiting for {self._peer}")
            time.sleep(pause)
            pause = min(pause * 2, 0.005)

    def recv(self, allocator: Allocator | None = None, hash_payload: bool = True) -> Frame:
        reader = self._reader
        reader.allocator = allocator or allocate_fresh
        reader.hash_payloads = hash_payload
        deadline = _deadline(self._timeout)
        while True:
            message, size = self._next_message(deadline)
            if size == 0:
                with _MPI_LOCK:
                    message.Recv([bytearray(0), MPI.BYTE])
                where = "" if reader.at_frame_boundary else " in the middle of a frame"
                raise ConnectionClosed(f"{self._peer} closed the connection{where}")
            if size > self._limits.max_frame_bytes + HEADER_SIZE:
                raise TransportError(f"{self._peer} sent a {size}-byte message, over the frame limit")
            target = reader.buffer()
            if size <= len(target):  # straight into the reader's buffer (a tensor's array)
                with _MPI_LOCK:
                    request = message.Irecv([target[:size], MPI.BYTE])
                _poll(request, deadline, f"receiving from {self._peer}")
                frame = reader.advance(size)
                if frame is not None:
                    return frame
                continue
            scratch = bytearray(size)
            with _MPI_LOCK:
                request = message.Irecv([scratch, MPI.BYTE])
            _poll(request, deadline, f"receiving from {self._peer}")
            frame = self._feed(memoryview(scratch))
            if frame is not None:
                return frame

    def _feed(self, data: memoryview) -> Frame | None:
        offset = 0
        while offset < len(data):
            target = self._reader.buffer()
            count = min(len(target), len(data) - offset)
            target[:count] = data[offset : offset + count]
            offset += count
            frame = self._reader.advance(count)
            if frame is not None:
                if offset != len(data):
                    raise TransportError(f"{self._peer} sent a message spanning two frames")
                return frame
        return None

    def close(self) -> None:
        with self._send_lock:
            if self._closed:
                return
            self._closed = True
            with _MPI_LOCK:
                request = self._comm.Isend([bytearray(0), MPI.BYTE], dest=self._rank, tag=self._tag)
        with contextlib.suppress(TransportError):  # the peer is gone: nothing left to tell it
            _poll(request, _deadline(5.0), f"closing the link to {self._peer}")


class MpiPending:
    """A worker rank that announced a connection; its identity is the name its rank gave at start."""

    def __init__(self, comm: Any, rank: int, tag: int, peer: str, limits: Limits | None) -> None:
        self._args = (comm, rank, tag, peer, limits)
        self.address = (f"mpi-rank-{rank}", rank)

    def authenticate(self) -> MpiConnection:
        return MpiConnection(*self._args)

    def close(self) -> None:
        MpiConnection(*self._args).close()


class MpiListener:
    """The chief's side: waits for CONNECT announcements from worker ranks."""

    def __init__(self, transport: MpiTransport, limits: Limits) -> None:
        self._transport = transport
        self._limits = limits
        self._closed = threading.Event()

    @property
    def port(self) -> int:
        return 0

    @overload
    def accept_pending(self, timeout: None = None) -> MpiPending: ...

    @overload
    def accept_pending(self, timeout: float) -> MpiPending | None: ...

    def accept_pending(self, timeout: float | None = None) -> MpiPending | None:
        comm = self._transport.comm
        deadline = _deadline(timeout)
        status = MPI.Status()
        while not self._closed.is_set():
            with _MPI_LOCK:
                message = comm.improbe(source=MPI.ANY_SOURCE, tag=CONNECT_TAG, status=status)
            if message is not None:
                generation = bytearray(8)
                with _MPI_LOCK:
                    request = message.Irecv([generation, MPI.BYTE])
                rank = status.Get_source()
                _poll(request, _deadline(5.0), f"reading rank {rank}'s connect")
                tag = DATA_TAG_BASE + int.from_bytes(generation, "little") % GENERATIONS
                return MpiPending(comm, rank, tag, self._transport.names[rank], self._limits)
            if deadline is not None and time.monotonic() > deadline:
                return None
            self._closed.wait(0.005)
        raise ListenerClosed("the listener is closed")

    def close(self) -> None:
        self._closed.set()


class MpiTransport:
    """The Transport of one rank of an MPI job; constructed on every rank at once (a collective)."""

    streams = False  # whole messages: a tensor part lands in one array or in a scratch of its size

    def __init__(self, local_name: str, comm: Any = None) -> None:
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        if not local_name or len(local_name) > MAX_NAME:
            raise TransportError(f"node name {local_name!r}: 1 to {MAX_NAME} characters")
        self._name = local_name
        with _MPI_LOCK:
            self.rank = int(self.comm.Get_rank())
            names = self.comm.allgather(local_name)
        if len(set(names)) != len(names):
            raise TransportError(f"the ranks' node names are not distinct: {names}")
        self.names: list[str] = [str(name) for name in names]
        self._generation = 0

    @property
    def local_name(self) -> str:
        return self._name

    def listen(self, host: str, port: int, limits: Limits) -> MpiListener:
        del host, port  # ranks are addressed by number, not by address
        if self.rank != CHIEF_RANK:
            raise TransportError(f"only rank {CHIEF_RANK} (the chief) listens; this is rank {self.rank}")
        return MpiListener(self, limits)

    def connect(self, host: str, port: int, limits: Limits, server_name: str | None) -> MpiConnection:
        del port
        chief = self.names[CHIEF_RANK]
        # The worker passes its chief's address when no server_name is configured: only a name counts.
        if server_name is not None and server_name not in (chief, host):
            raise PeerRefused(f"rank {CHIEF_RANK} is {chief}, not {server_name}")
        self._generation += 1
        generation = self._generation.to_bytes(8, "little")
        with _MPI_LOCK:
            request = self.comm.Isend([generation, MPI.BYTE], dest=CHIEF_RANK, tag=CONNECT_TAG)
        _poll(request, _deadline(15.0), f"connecting to {chief}")
        tag = DATA_TAG_BASE + self._generation % GENERATIONS
        return MpiConnection(self.comm, CHIEF_RANK, tag, chief, limits)


    def barrier(self, timeout: float) -> bool:
        """Wait until every rank reached this point (a non-blocking barrier, polled); False past timeout.

        A barrier cannot be cancelled: past the deadline the rank goes on, and a rank that never comes
        is mpirun's business (it ends the job when a rank dies)."""
        deadline = time.monotonic() + timeout
        with _MPI_LOCK:
            request = self.comm.Ibarrier()
        pause = 0.0002
        while True:
            with _MPI_LOCK:
                if request.Test():
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)


def rank_of_this_process() -> int:
    """This process's rank in the job (0 when started without mpirun: a one-rank job)."""
    with _MPI_LOCK:
        return int(MPI.COMM_WORLD.Get_rank())
