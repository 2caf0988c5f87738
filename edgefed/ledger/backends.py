"""Where the ledger service delivers records: one interface, three implementations.

- `LocalChainBackend`: the chief's own ledger service appends straight to the embedded chain.
- `RemoteChainBackend`: a worker's ledger service pushes to the chief's embedded chain over the
  federation port (LEDGER_PUSH / LEDGER_ACK frames on the same mutual-TLS PKI).
- `edgefed.ledger.iroha.IrohaBackend`: Hyperledger Iroha 1 over gRPC (imported only when configured).

A backend either returns what happened to each record (acknowledged or refused for good) or raises
BackendUnavailable, after which the service keeps the records and retries with backoff.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from edgefed.ledger.chain import EmbeddedLedger
from edgefed.ledger.errors import BackendUnavailable
from edgefed.ledger.records import TransferRecord
from edgefed.pki import NodeCredentials
from edgefed.transport import TlsConnection, TransportError, client_context, connect_tls
from edgefed.wire import MessageType, ProtocolError, encode_control_frame

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 60.0


@dataclass
class Delivery:
    """The backend's answer for one batch."""

    acknowledged: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    height: int | None = None  # the ledger's height after the batch, when the backend knows it


class Backend(Protocol):
    name: str

    def deliver(self, records: Sequence[TransferRecord]) -> Delivery:
        """Hand records over; raise BackendUnavailable if it cannot be reached right now."""
        ...

    def close(self) -> None: ...


class LocalChainBackend:
    """The chief's ledger service: appends its node's records to the chain in STATE_DIR/ledger.sqlite."""

    name = "embedded"

    def __init__(self, ledger: EmbeddedLedger, node: str) -> None:
        self.ledger = ledger
        self.node = node

    def deliver(self, records: Sequence[TransferRecord]) -> Delivery:
        result = self.ledger.append(records, pushed_by=self.node)
        return Delivery(result.acknowledged(), result.refused, result.height)

    def close(self) -> None:
        self.ledger.close()


def push_body(records: Sequence[TransferRecord]) -> dict[str, Any]:
    return {"records": [record.to_dict() for record in records]}


def parse_ack(body: dict[str, Any], sent: Sequence[TransferRecord]) -> Delivery:
    if "error" in body:
        raise ProtocolError(f"the chief refused the whole delivery: {body['error']}")
    try:
        acknowledged = [str(rid) for rid in body["accepted"]] + [str(rid) for rid in body["duplicates"]]
        refused = [(str(item["id"]), str(item["reason"])) for item in body["refused"]]
        height = int(body["height"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"LEDGER_ACK is malformed ({exc!r}): {body}") from None
    sent_ids = {record.id for record in sent}
    unexpected = (set(acknowledged) | {rid for rid, _ in refused}) - sent_ids
    if unexpected:
        raise ProtocolError(f"LEDGER_ACK names records that were not sent: {sorted(unexpected)[:3]}")
    return Delivery(acknowledged, refused, height)


class RemoteChainBackend:
    """A worker's ledger service: pushes batches to the chief over one kept-open mutual-TLS connection."""

    name = "embedded"

    def __init__(
        self,
        creds: NodeCredentials,
        host: str,
        port: int,
        server_name: str = "",
        timeout: float = ACK_TIMEOUT_S,
    ) -> None:
        self._creds = creds
        self._host = host
        self._port = port
        self._server_name = server_name or host
        self._timeout = timeout
        self._conn: TlsConnection | None = None

    def _connection(self) -> TlsConnection:
        if self._conn is None:
            try:
                self._conn = connect_tls(
                    self._host, self._port, client_context(self._creds), server_hostname=self._server_name
                )
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
            conn.send([encode_control_frame(MessageType.LEDGER_PUSH, 0, push_body(records))])
            reply = conn.recv()
        except (TransportError, ProtocolError) as exc:
            self._drop()
            raise BackendUnavailable(f"delivery to the chief failed: {exc}") from exc
        if reply.header.type is not MessageType.LEDGER_ACK:
            self._drop()
            raise BackendUnavailable(f"the chief answered {reply.header.type.name} instead of LEDGER_ACK: {reply.body}")
        try:
            return parse_ack(reply.body, records)
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
                self._conn.send([encode_control_frame(MessageType.BYE, 0, {"reason": "ledger service stopping"})])
        self._drop()
