"""p2p file transfers on the ledger: each completed transfer becomes a signed ``file`` record.

``file_transfer_recorder(config)`` is an ``on_file_transfer`` callback for edgefed.p2p: it signs each
completed transfer as a ``file`` record and stores it in STATE_DIR/ledger-outbox.sqlite, from where the
node's ledger service relays it like any other record. edgefed.p2p knows nothing of the ledger: the
adapter (the CLI, or code embedding both) hands one to the other.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from edgefed.config import NodeConfig
from edgefed.ledger.errors import LedgerError
from edgefed.ledger.outbox import Outbox
from edgefed.ledger.records import TransferRecord
from edgefed.pki import NodeCredentials, PKIError, check_node_name

log = logging.getLogger(__name__)


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
