"""The dialling half of a p2p session (BSMD's ``Sender(my_friends_host, my_friends_port)``).

Work is queued with send_message() and send_file(), each returning a Future, and carried out
in order by the thread. A broken connection is re-dialled with backoff; a file transfer then
continues where the receiver's part file ends (the FILE_ACCEPT of the new offer says where).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefed.p2p.errors import P2PError, PeerUnreachable, TransferFailed, TransferRefused
from edgefed.p2p.files import FileOffer, TransferCallback, file_sha256, notify_transfer, transfer_record
from edgefed.p2p.link import CHUNK_BYTES, P2P_LIMITS, resolve_transport
from edgefed.p2p.names import MAX_CHAT_CHARS, printable
from edgefed.p2p.parse import parse_port
from edgefed.p2p.progress import ProgressFactory, ProgressTask
from edgefed.pki import NodeCredentials
from edgefed.transport import Connection, PeerRefused, PlainTransport, Transport, TransportError
from edgefed.wire import (
    Bye,
    FileResult,
    Frame,
    MessageType,
    ProtocolError,
    ReasonCode,
    encode_control_frame,
    encode_message,
    encode_raw_frame,
    expect,
)

log = logging.getLogger("edgefed.p2p")

REPLY_TIMEOUT = 120.0  # the receiver may re-hash a large part file before accepting
MAX_ATTEMPTS = 20
_FIRST_BACKOFF, _MAX_BACKOFF = 0.25, 4.0


@dataclass
class _Job:
    future: Future[Any]
    text: str | None = None
    path: Path | None = None
    remote_name: str = ""
    offer: FileOffer | None = None
    stat: tuple[int, int] = (0, 0)
    attempts: int = 0
    progressed: bool = False  # the current attempt got the file further
    done_sent: bool = False  # FILE_DONE went out: an "already received" answer later means it arrived


class _Stopped(P2PError):
    """stop() was called while the sender was still dialling."""


class _Retry(Exception):
    """The receiver asked us to offer again after a pause (the file is busy there)."""


class Sender(threading.Thread):
    """Dial the peer's Receiver at my_friends_host:my_friends_port and deliver queued work.

    retry_for bounds, in seconds, how long the sender keeps re-dialling after the first dial
    or a broken connection before the pending job fails. max_rate caps bytes per second.
    Over TLS any node certificate of the deployment CA is accepted as the receiver unless
    expect_peer names the one node it must be.
    """

    def __init__(
        self,
        my_friends_host: str,
        my_friends_port: int | str,
        *,
        pki_dir: str | Path | None = None,
        name: str | None = None,
        credentials: NodeCredentials | None = None,
        insecure_plaintext: bool = False,
        transport: Transport | None = None,
        expect_peer: str | None = None,
        on_file_transfer: TransferCallback | None = None,
        progress: ProgressFactory | None = None,
        retry_for: float = 30.0,
        max_rate: int | None = None,
        chunk_size: int = CHUNK_BYTES,
    ) -> None:
        port = parse_port(my_friends_port)
        super().__init__(name=f"p2p-sender-{my_friends_host}:{port}", daemon=True)
        if max_rate is not None and max_rate <= 0:
            raise P2PError(f"max_rate must be positive, got {max_rate}")
        if not 0 < chunk_size <= CHUNK_BYTES * 4:
            raise P2PError(f"chunk_size must be between 1 and {CHUNK_BYTES * 4} bytes, got {chunk_size}")
        self.host, self.port = my_friends_host, port
        self._transport = resolve_transport(pki_dir, name, credentials, insecure_plaintext, transport)
        if expect_peer is not None and isinstance(self._transport, PlainTransport):
            raise P2PError(f"cannot require the peer to be {expect_peer} on a plain-text link: it has no identity")
        self._expect_peer = expect_peer
        self._on_file_transfer = on_file_transfer
        self._progress = progress
        self.retry_for = retry_for
        self.max_rate = max_rate
        self.chunk_size = chunk_size
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._stop_event = threading.Event()
        self._queue_lock = threading.Lock()
        self._ended = False
        self._connection: Connection | None = None
        self.connected = threading.Event()
        self.finished = threading.Event()  # run() is over (see Receiver.finished for why not join())
        self.peer_name = ""
        self.error: BaseException | None = None

    @property
    def own_name(self) -> str:
        return self._transport.local_name

    # -- public API --------------------------------------------------------------------------------
    def send_message(self, text: str) -> Future[None]:
        """Queue one chat line; the future completes once it has been written to the link."""
        if len(text) > MAX_CHAT_CHARS:
            raise P2PError(f"chat message of {len(text)} characters is over the limit of {MAX_CHAT_CHARS}")
        return self._queue(_Job(Future(), text=text))

    def send_file(self, path: str | Path, name: str | None = None) -> Future[dict[str, Any]]:
        """Queue a file; the future gives the transfer record once the receiver confirmed its sha256.

        name is the file name proposed to the receiver (default: the file's own name); the
        receiver accepts only a plain name, never a path.
        """
        source = Path(path)
        if not source.is_file():
            raise P2PError(f"cannot send {source}: not a readable file")
        return self._queue(_Job(Future(), path=source, remote_name=name if name is not None else source.name))

    def stop(self) -> None:
        """Finish queued chat lines, interrupt a file transfer (resumable), then say goodbye."""
        self._stop_event.set()
        self._jobs.put(None)

    def _queue(self, job: _Job) -> Future[Any]:
        with self._queue_lock:
            if self._ended:
                raise P2PError(f"sender to {self.host}:{self.port} has ended: {self.error or 'stopped'}")
            if self._stop_event.is_set():
                raise P2PError(f"sender to {self.host}:{self.port} is stopping")
            self._jobs.put(job)
        return job.future

    # -- thread --------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._ensure_connected(time.monotonic() + self.retry_for)
            while True:
                job = self._jobs.get()
                if job is None:
                    break
                if not job.future.set_running_or_notify_cancel():
                    continue
                if self._stop_event.is_set() and job.path is not None:
                    job.future.set_exception(P2PError(f"sender stopped before sending {job.path}"))
                    continue
                try:
                    job.future.set_result(self._execute(job))
                except TransferRefused as exc:  # a clean answer: the link is still in step
                    job.future.set_exception(exc)
                except Exception as exc:
                    if not isinstance(exc, (P2PError, ProtocolError, OSError)):
                        log.exception("p2p sender failed unexpectedly")  # a bug: still answer the caller
                    # The link may be mid-file: start the next job on a fresh one.
                    self._hang_up("transfer abandoned")
                    job.future.set_exception(exc)
        except _Stopped:
            pass  # stop() while still dialling: an ending, not a failure
        except (P2PError, TransportError) as exc:
            self.error = exc
            log.warning("p2p sender to %s:%d gave up: %s", self.host, self.port, exc)
        finally:
            with self._queue_lock:
                self._ended = True
            self._fail_pending()
            self._hang_up("sender finished")
            self.finished.set()

    def _fail_pending(self) -> None:
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None and job.future.set_running_or_notify_cancel():
                job.future.set_exception(self.error or P2PError("sender stopped before this was sent"))

    def _hang_up(self, reason: str) -> None:
        connection, self._connection = self._connection, None
        self.connected.clear()
        if connection is not None:
            with contextlib.suppress(TransportError, OSError):
                connection.send([encode_message(Bye(ReasonCode.LEAVING, reason))])
            connection.close()

    def _ensure_connected(self, deadline: float) -> Connection:
        backoff = _FIRST_BACKOFF
        while self._connection is None:
            try:
                self._connection = self._transport.connect(self.host, self.port, P2P_LIMITS, self._expect_peer)
            except TransportError as exc:
                if self._stop_event.is_set():
                    raise _Stopped(f"sender stopped before reaching {self.host}:{self.port}") from exc
                if isinstance(exc, PeerRefused):
                    # Not a peer of our deployment: dialling again cannot help.
                    raise P2PError(f"{self.host}:{self.port} refused as a peer: {exc}") from exc
                if time.monotonic() + backoff > deadline:
                    raise PeerUnreachable(f"{exc} (gave up after retrying for {self.retry_for:g}s)") from exc
                log.info("cannot reach %s:%d yet (%s); retrying in %.2fs", self.host, self.port, exc, backoff)
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            self.peer_name = self._connection.peer
            self.connected.set()
            log.info("connected to %s at %s:%d", self.peer_name, self.host, self.port)
        return self._connection

    def _execute(self, job: _Job) -> Any:
        """Run one job; after a broken link, re-dial for up to retry_for seconds.

        The window restarts whenever an attempt moved the file forward, so a long transfer over
        a flaky link keeps going as long as it progresses.
        """
        give_up_at = time.monotonic() + self.retry_for
        backoff = _FIRST_BACKOFF
        while True:
            job.attempts += 1
            job.progressed = False
            try:
                connection = self._ensure_connected(give_up_at)
                if job.text is not None:
                    connection.send([encode_control_frame(MessageType.CHAT, 0, {"text": job.text})])
                    return None
                return self._transfer(connection, job)
            except (TransportError, _Retry) as exc:
                if isinstance(exc, TransportError):
                    self._hang_up("link error")
                if self._stop_event.is_set():
                    raise
                if job.progressed:
                    job.attempts, backoff = 0, _FIRST_BACKOFF
                    give_up_at = time.monotonic() + self.retry_for
                if job.attempts >= MAX_ATTEMPTS or time.monotonic() + backoff > give_up_at:
                    raise TransportError(f"{exc} (gave up after {job.attempts} attempts)") from exc
                log.warning("%s; trying again in %.2fs", exc, backoff)
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    # -- file transfer -----------------------------------------------------------------------------
    def _prepare(self, job: _Job) -> FileOffer:
        assert job.path is not None
        stat = job.path.stat()
        current = (stat.st_size, stat.st_mtime_ns)
        if job.offer is None:
            job.stat = current
            job.offer = FileOffer(job.remote_name, stat.st_size, file_sha256(job.path))
        elif current != job.stat:
            raise TransferFailed(f"{job.path} changed while it was being sent; send it again")
        return job.offer

    def _transfer(self, connection: Connection, job: _Job) -> dict[str, Any]:
        assert job.path is not None
        offer = self._prepare(job)
        started = time.monotonic()
        connection.settimeout(REPLY_TIMEOUT)
        connection.send([encode_control_frame(MessageType.FILE_OFFER, 0, offer.to_body())])
        reply = self._reply(connection)
        if reply.type is MessageType.FILE_RESULT:
            return self._finished(reply, job, 0, "offer", time.monotonic() - started)
        if reply.type is not MessageType.FILE_ACCEPT:
            raise ProtocolError(f"expected FILE_ACCEPT or FILE_RESULT after FILE_OFFER, got {reply.type.name}")
        offset = reply.body.get("offset")
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= offer.size:
            raise ProtocolError(f"FILE_ACCEPT offset {offset!r} is outside 0..{offer.size}")
        if offset:
            log.info("resuming %s at %d of %d bytes", offer.name, offset, offer.size)
        task = self._progress(f"{offer.name} → {connection.peer}", offer.size, offset) if self._progress else None
        try:
            self._stream(connection, job, offset, offer.size, task)
        finally:
            if task is not None:
                task.close()
        connection.send([encode_control_frame(MessageType.FILE_DONE, 0, {})])
        job.done_sent = True
        return self._finished(self._reply(connection), job, offset, "FILE_DONE", time.monotonic() - started)

    def _stream(
        self, connection: Connection, job: _Job, offset: int, size: int, task: ProgressTask | None
    ) -> None:
        """Send bytes offset..size as FILE_CHUNK frames from one reused buffer."""
        assert job.path is not None
        path = job.path
        buffer = memoryview(bytearray(self.chunk_size))
        sent, started = 0, time.monotonic()
        with path.open("rb", buffering=0) as handle:
            handle.seek(offset)
            position = offset
            while position < size:
                if self._stop_event.is_set():
                    raise P2PError(f"sender stopped during {path.name} at {position} bytes (resumable)")
                count = handle.readinto(buffer[: min(self.chunk_size, size - position)])
                if not count:
                    raise TransferFailed(f"{path} shrank while it was being sent")
                connection.send(encode_raw_frame(MessageType.FILE_CHUNK, 0, buffer[:count]))
                job.progressed = True
                position += count
                sent += count
                if task is not None:
                    task.advance(count)
                if self.max_rate is not None:
                    # Pace to the cap: sleep until the bytes sent so far are due.
                    ahead = sent / self.max_rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)

    def _reply(self, connection: Connection) -> Frame:
        frame = connection.recv()
        if frame.type is MessageType.BYE:
            reason = printable(expect(frame, Bye).reason)
            raise TransportError(f"{connection.peer} closed the session: {reason}")
        return frame

    def _finished(self, reply: Frame, job: _Job, offset: int, after: str, seconds: float) -> dict[str, Any]:
        offer = job.offer
        assert offer is not None
        if reply.type is not MessageType.FILE_RESULT:
            raise ProtocolError(f"expected FILE_RESULT after {after}, got {reply.type.name}")
        result = expect(reply, FileResult)
        message = printable(result.message)
        if not result.ok:
            if result.retryable:
                raise _Retry(f"{self.peer_name} is busy: {message}")
            error = TransferRefused if after == "offer" else TransferFailed
            raise error(f"{self.peer_name} did not take {printable(offer.name)!r}: {message}")
        if result.offer is None or (result.offer.sha256, result.offer.size) != (offer.sha256, offer.size):
            raise ProtocolError(f"FILE_RESULT from {self.peer_name} confirms another file than {offer.name!r}")
        # A duplicate after our FILE_DONE: an earlier attempt delivered it and the link broke before
        # its FILE_RESULT arrived. A duplicate before it: the peer had the file already, nothing was sent.
        delivered = not result.duplicate or job.done_sent
        record = transfer_record(self.own_name, self.peer_name, offer, "send", offset, seconds)
        record["outcome"] = "received" if delivered and result.duplicate else message
        if delivered:
            notify_transfer(self._on_file_transfer, record)
        return record
