"""The LEDGER_PUSH / LEDGER_ACK protocol, both ends: how a worker's records reach the chief's chain.

A worker's ledger service (`RemoteChainBackend`) opens a connection through its `Transport` to the
chief's federation listener and sends ``LEDGER_PUSH {"records": [...]}`` (at most
MAX_RECORDS_PER_PUSH). The chief's listener hands that connection to `LedgerPushHandler`, which
appends what checks out to the embedded chain and answers each push with ``LEDGER_ACK {"accepted":
[ids], "duplicates": [ids], "refused": [{"id", "reason"}], "height": N}``, or ``{"error": "..."}``
when the push as a whole is malformed or the chain cannot take records now. The connection stays
open for the next batches until the worker says BYE or stays silent for PUSH_IDLE_TIMEOUT_S.

Every field of either message is checked on arrival: the peer at the other end may be hostile.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Sequence

from edgefed.ledger.backends import Delivery
from edgefed.ledger.background import lower_thread_priority
from edgefed.ledger.chain import EmbeddedLedger
from edgefed.ledger.errors import BackendUnavailable, LedgerError
from edgefed.ledger.records import TransferRecord
from edgefed.transport import Connection, Transport, TransportError
from edgefed.wire import (
    Bye,
    Frame,
    LedgerAck,
    LedgerPush,
    Limits,
    MessageType,
    ProtocolError,
    ReasonCode,
    encode_message,
    expect,
)
from edgefed.wire.messages import MAX_LEDGER_RECORDS, MAX_RECORD_ID_CHARS

log = logging.getLogger(__name__)

MAX_RECORDS_PER_PUSH = MAX_LEDGER_RECORDS
ACK_TIMEOUT_S = 60.0  # how long a worker waits for the chief's LEDGER_ACK
# A worker's ledger service keeps its connection open between batches; one idle for this long is closed
# (the service reconnects on its next batch) so dead peers never pin a thread.
PUSH_IDLE_TIMEOUT_S = 300.0


# -- the messages --------------------------------------------------------------------------------
def push_message(records: Sequence[TransferRecord]) -> LedgerPush:
    return LedgerPush(tuple(record.to_dict() for record in records))


def parse_push(push: LedgerPush) -> tuple[list[TransferRecord], list[tuple[str, str]]]:
    """The records of a LEDGER_PUSH (its shape checked by the codec), and a refusal for each one
    that does not parse as a record."""
    records: list[TransferRecord] = []
    refused: list[tuple[str, str]] = []
    for item in push.records:
        try:
            records.append(TransferRecord.from_dict(item))
        except LedgerError as exc:
            claimed = item.get("id")
            usable = isinstance(claimed, str) and 0 < len(claimed) <= MAX_RECORD_ID_CHARS
            refused.append((str(claimed) if usable else "?", str(exc)))
    return records, refused


def parse_ack(ack: LedgerAck, sent: Sequence[TransferRecord]) -> Delivery:
    """What the chief's LEDGER_ACK says about the records SENT; ProtocolError if it refused them all
    or names records that were not sent."""
    if ack.error is not None:
        raise ProtocolError(f"the chief refused the whole delivery: {ack.error}")
    acknowledged = [*ack.accepted, *ack.duplicates]
    refused = list(ack.refused)
    height = ack.height
    sent_ids = {record.id for record in sent}
    unexpected = (set(acknowledged) | {rid for rid, _ in refused}) - sent_ids
    if unexpected:
        raise ProtocolError(f"LEDGER_ACK names records that were not sent: {sorted(unexpected)[:3]}")
    return Delivery(acknowledged, refused, height)


# -- the worker's end ----------------------------------------------------------------------------
class RemoteChainBackend:
    """A worker's ledger service: pushes batches to the chief over one kept-open connection."""

    name = "embedded"

    def __init__(
        self,
        transport: Transport,
        host: str,
        port: int,
        server_name: str = "",
        timeout: float = ACK_TIMEOUT_S,
        limits: Limits | None = None,
    ) -> None:
        self._transport = transport
        self._host = host
        self._port = port
        self._server_name = server_name or host
        self._timeout = timeout
        self._limits = limits or Limits()
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None:
            try:
                self._conn = self._transport.connect(self._host, self._port, self._limits, self._server_name)
            except TransportError as exc:
                raise BackendUnavailable(f"chief ledger at {self._host}:{self._port}: {exc}") from exc
            self._conn.settimeout(self._timeout)
            log.info("ledger: connected to the chief %s at %s:%d", self._conn.peer, self._host, self._port)
        return self._conn

    def deliver(self, records: Sequence[TransferRecord]) -> Delivery:
        reused = self._conn is not None
        try:
            return self._exchange(records)
        except BackendUnavailable:
            if not reused:
                raise
            # The chief may have closed a connection that sat idle: one fresh attempt before backing off
            # (a batch the chief did append is acknowledged again as duplicates, never appended twice).
            return self._exchange(records)

    def _exchange(self, records: Sequence[TransferRecord]) -> Delivery:
        conn = self._connection()
        try:
            conn.send([encode_message(push_message(records))])
            reply = conn.recv()
        except (TransportError, ProtocolError) as exc:
            self._drop()
            raise BackendUnavailable(f"delivery to the chief failed: {exc}") from exc
        try:
            return parse_ack(expect(reply, LedgerAck), records)
        except ProtocolError as exc:
            self._drop()
            raise BackendUnavailable(str(exc)) from exc

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(TransportError):
                self._conn.send([encode_message(Bye(ReasonCode.SHUTDOWN, "ledger service stopping"))])
        self._drop()


# -- the chief's end -----------------------------------------------------------------------------
class LedgerPushHandler:
    """Chief side of LEDGER_PUSH: one call per worker connection, in that connection's thread."""

    def __init__(self, ledger: EmbeddedLedger) -> None:
        self.ledger = ledger
        self._lock = threading.Lock()
        self._connections: set[Connection] = set()
        self._closing = False

    def __call__(self, conn: Connection, first_frame: Frame) -> None:
        with self._lock:
            if self._closing:
                return
            self._connections.add(conn)
        conn.settimeout(PUSH_IDLE_TIMEOUT_S)
        lower_thread_priority()
        frame: Frame | None = first_frame
        try:
            while frame is not None:
                if frame.header.type is MessageType.BYE:
                    return
                if frame.header.type is not MessageType.LEDGER_PUSH:
                    log.warning("ledger: %s sent %s on a ledger connection", conn.peer, frame.header.type.name)
                    return
                conn.send([encode_message(self.answer(conn.peer, frame))])
                frame = conn.recv()
        except (TransportError, ProtocolError) as exc:
            with self._lock:
                closing = self._closing
            if not closing:
                log.info("ledger: connection from %s ended: %s", conn.peer, exc)
        finally:
            with self._lock:
                self._connections.discard(conn)

    def answer(self, peer: str, frame: Frame) -> LedgerAck:
        """Append what checks out, refuse the rest with reasons: the LEDGER_ACK to send back."""
        try:
            records, refused = parse_push(expect(frame, LedgerPush))
        except ProtocolError as exc:
            log.warning("ledger: malformed push from %s: %s", peer, exc)
            return LedgerAck(error=str(exc))
        try:
            result = self.ledger.append(records, pushed_by=peer)
        except sqlite3.Error as exc:  # disk full, chief shutting down: the worker keeps them and retries
            log.error("ledger: cannot append records from %s: %s", peer, exc)
            return LedgerAck(error=f"the chief's ledger cannot take records now: {exc}")
        refused.extend(result.refused)
        if result.accepted:
            log.info("ledger: appended %d records from %s (height %d)", len(result.accepted), peer, result.height)
        return LedgerAck(tuple(result.accepted), tuple(result.duplicates), tuple(refused), result.height)

    def close(self) -> None:
        with self._lock:
            self._closing = True
            connections = list(self._connections)
        for conn in connections:
            conn.close()
