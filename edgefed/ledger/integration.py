"""What the chief and worker processes need from the ledger: an outbox sink and the chief's push handler.

The node process (``edgefed chief`` / ``edgefed worker``) wires these in::

    hooks = NodeLedgerHooks.for_config(config)          # no-op hooks when [ledger] enabled = false
    bus = EventBus(*hooks.sinks)
    session = ChiefSession(config, bus, extra_handlers=hooks.extra_handlers)   # chief
    ...
    hooks.close()      # before session.close(): ends the push handlers' connections
    session.close()

The sink signs each TransferEvent this node observed and stores it in STATE_DIR/ledger-outbox.sqlite;
the node's ledger service (`edgefed ledger serve`) relays it from there. On the chief with the embedded
backend, workers' ledger services deliver over the chief's federation listener: the LEDGER_PUSH handler
appends their records to STATE_DIR/ledger.sqlite and answers LEDGER_ACK.

p2p file transfers (edgefed.p2p) are recorded the same way: ``file_transfer_recorder(config)`` is an
``on_file_transfer`` callback that signs each completed transfer as a ``file`` record and stores it
in the same outbox, from where the node's ledger service relays it like any other record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.config import NodeConfig
from edgefed.contracts.events import EventSink
from edgefed.ledger.chain import EmbeddedLedger, ledger_path
from edgefed.ledger.errors import LedgerError
from edgefed.ledger.outbox import Outbox, OutboxSink
from edgefed.ledger.records import TransferRecord
from edgefed.pki import NodeCredentials, PKIError, check_node_name, load_ledger_public_key
from edgefed.transport import Connection, TransportError
from edgefed.wire import Frame, MessageType, ProtocolError, encode_control_frame

log = logging.getLogger(__name__)

# A worker's ledger service keeps its connection open between batches; one idle for this long is closed
# (the service reconnects on its next batch) so dead peers never pin a thread.
PUSH_IDLE_TIMEOUT_S = 300.0
MAX_RECORDS_PER_PUSH = 1000
BACKGROUND_NICENESS = 10  # ledger work is background work: it yields the CPU to training

PushHandler = Callable[[Connection, Frame], None]


def pki_key_lookup(pki_dir: str | Path) -> Callable[[str], ed25519.Ed25519PublicKey | None]:
    """Find NODE's ledger public key at PKI_DIR/nodes/NODE/ledger.pub (None if it is not there)."""

    def lookup(node: str) -> ed25519.Ed25519PublicKey | None:
        try:
            path = Path(pki_dir) / "nodes" / check_node_name(node) / "ledger.pub"
            return load_ledger_public_key(path) if path.is_file() else None
        except PKIError as exc:
            log.warning("ledger: no usable key for %r: %s", node, exc)
            return None

    return lookup


def open_chief_ledger(config: NodeConfig) -> EmbeddedLedger:
    """The chief's embedded chain, signed with its ledger key; unknown signers are looked up in the PKI."""
    creds = NodeCredentials(Path(config.node.pki_dir), config.node.name)
    return EmbeddedLedger(
        ledger_path(config.node.state_dir),
        owner=config.node.name,
        signing_key=creds.ledger_signing_key(),
        key_lookup=pki_key_lookup(config.node.pki_dir),
    )


def lower_thread_priority(niceness: int = BACKGROUND_NICENESS) -> None:
    """Let training threads win the CPU over ledger work (Linux schedules threads with their own nice)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


def parse_push(body: dict[str, Any]) -> tuple[list[TransferRecord], list[tuple[str, str]]]:
    """The records of a LEDGER_PUSH body, and a refusal for each one that does not parse."""
    items = body.get("records")
    if not isinstance(items, list):
        raise ProtocolError("LEDGER_PUSH needs a 'records' list")
    if len(items) > MAX_RECORDS_PER_PUSH:
        raise ProtocolError(f"LEDGER_PUSH carries {len(items)} records, over the limit of {MAX_RECORDS_PER_PUSH}")
    records: list[TransferRecord] = []
    refused: list[tuple[str, str]] = []
    for item in items:
        try:
            records.append(TransferRecord.from_dict(item))
        except LedgerError as exc:
            claimed = item.get("id") if isinstance(item, dict) else None
            refused.append((str(claimed or "?"), str(exc)))
    return records, refused


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
                conn.send([encode_control_frame(MessageType.LEDGER_ACK, 0, self.answer(conn.peer, frame.body))])
                frame = conn.recv()
        except (TransportError, ProtocolError) as exc:
            with self._lock:
                closing = self._closing
            if not closing:
                log.info("ledger: connection from %s ended: %s", conn.peer, exc)
        finally:
            with self._lock:
                self._connections.discard(conn)

    def answer(self, peer: str, body: dict[str, Any]) -> dict[str, Any]:
        """Append what checks out, refuse the rest with reasons; the LEDGER_ACK body."""
        try:
            records, refused = parse_push(body)
        except ProtocolError as exc:
            log.warning("ledger: malformed push from %s: %s", peer, exc)
            return {"error": str(exc)}
        try:
            result = self.ledger.append(records, pushed_by=peer)
        except sqlite3.Error as exc:  # disk full, chief shutting down: the worker keeps them and retries
            log.error("ledger: cannot append records from %s: %s", peer, exc)
            return {"error": f"the chief's ledger cannot take records now: {exc}"}
        refused.extend(result.refused)
        if result.accepted:
            log.info("ledger: appended %d records from %s (height %d)", len(result.accepted), peer, result.height)
        return {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "refused": [{"id": rid, "reason": reason} for rid, reason in refused],
            "height": result.height,
        }

    def close(self) -> None:
        with self._lock:
            self._closing = True
            connections = list(self._connections)
        for conn in connections:
            conn.close()


@dataclass
class NodeLedgerHooks:
    """The pieces a chief or worker process plugs into its EventBus and ChiefSession."""

    sinks: list[EventSink] = field(default_factory=list)
    extra_handlers: dict[MessageType, PushHandler] = field(default_factory=dict)
    outbox: Outbox | None = None
    outbox_sink: OutboxSink | None = None
    push_handler: LedgerPushHandler | None = None

    @classmethod
    def for_config(cls, config: NodeConfig) -> NodeLedgerHooks:
        if not config.ledger.enabled:
            return cls()
        creds = NodeCredentials(Path(config.node.pki_dir), config.node.name)
        outbox = Outbox.for_state_dir(config.node.state_dir)
        sink = OutboxSink(outbox, config.node.name, creds.ledger_signing_key(), config.ledger.process)
        hooks = cls(sinks=[sink], outbox=outbox, outbox_sink=sink)
        if config.node.role == "chief" and config.ledger.backend == "embedded":
            hooks.push_handler = LedgerPushHandler(open_chief_ledger(config))
            hooks.extra_handlers[MessageType.LEDGER_PUSH] = hooks.push_handler
        return hooks

    def close(self) -> None:
        if self.push_handler is not None:
            self.push_handler.close()
            self.push_handler.ledger.close()
        if self.outbox_sink is not None:
            self.outbox_sink.close()  # writes what is still queued
        if self.outbox is not None:
            self.outbox.close()


# -- p2p file transfers ---------------------------------------------------------------------------
def file_transfer_record(transfer: Mapping[str, Any], process: str, node: str) -> TransferRecord:
    """The unsigned ledger record of one p2p transfer record (the dict edgefed.p2p hands on_file_transfer).

    NODE is the node that signs it: it must be the side that observed the transfer (the sender of a
    ``send``, the receiver of a ``receive``), and the other side must be an authenticated node name.
    """
    try:
        direction = str(transfer["direction"])
        sender, receiver = str(transfer["sender"]), str(transfer["receiver"])
        name, size, sha256 = transfer["name"], transfer["size"], transfer["sha256"]
        at = dt.datetime.fromisoformat(str(transfer["at"]))
        seconds = float(transfer.get("seconds", 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise LedgerError(f"not a p2p transfer record ({exc!r}): {dict(transfer)}") from None
    if direction not in ("send", "receive"):
        raise LedgerError(f"p2p transfer record: direction must be 'send' or 'receive', got {direction!r}")
    own, peer, side = (sender, receiver, "sender") if direction == "send" else (receiver, sender, "receiver")
    if own != node:
        raise LedgerError(f"p2p transfer record names {own!r} as the {side}, but this recorder signs for {node!r}")
    try:
        check_node_name(peer)
    except PKIError:
        raise LedgerError(
            f"cannot record a transfer with {peer!r}: not an authenticated node name"
            " (plain-text links are never recorded)"
        ) from None
    if not isinstance(name, str) or not isinstance(size, int) or isinstance(size, bool) or not isinstance(sha256, str):
        raise LedgerError(f"p2p transfer record: name, size and sha256 have the wrong types: {dict(transfer)}")
    return TransferRecord.for_file(
        process=process,
        sender=sender,
        receiver=receiver,
        direction=direction,
        name=name,
        size=size,
        sha256=sha256,
        seconds=seconds,
        time=at.timestamp(),
    )


class FileTransferRecorder:
    """An ``on_file_transfer`` callback for edgefed.p2p: each completed transfer becomes a signed ``file``
    record in this node's outbox (written and fsync'd before the callback returns, so it survives a crash
    right after the transfer); the node's ledger service relays it. Safe to call from several threads.
    """

    def __init__(self, outbox: Outbox, node: str, signing_key: ed25519.Ed25519PrivateKey, process: str) -> None:
        self.outbox = outbox
        self.node = node
        self.process = process
        self._key = signing_key

    def __call__(self, transfer: Mapping[str, Any]) -> TransferRecord:
        record = file_transfer_record(transfer, self.process, self.node).signed(self._key)
        self.outbox.put(record)
        log.info("ledger: file record %s for %r (%s) stored in %s", record.id, record.name, record.direction,
                 self.outbox.path)
        return record

    def close(self) -> None:
        self.outbox.close()

    def __enter__(self) -> FileTransferRecorder:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def file_transfer_recorder(config: NodeConfig) -> FileTransferRecorder:
    """The recorder of the node CONFIG describes ([node] name, pki_dir, state_dir; [ledger] process).

    Its records are signed with PKI_DIR/nodes/NAME/ledger.key and wait in STATE_DIR/ledger-outbox.sqlite
    for the node's ledger service (`edgefed ledger serve --config FILE`), whichever backend it relays to.
    """
    if not config.ledger.enabled:
        raise LedgerError(f"ledger.enabled is false for {config.node.name}: file transfers cannot be recorded")
    creds = NodeCredentials(Path(config.node.pki_dir), config.node.name)
    key = creds.ledger_signing_key()
    outbox = Outbox.for_state_dir(config.node.state_dir)
    return FileTransferRecorder(outbox, config.node.name, key, config.ledger.process)
