"""What a chief or worker process plugs in to record its transfers: an outbox sink and the push handler.

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
(edgefed.ledger.push) appends their records to STATE_DIR/ledger.sqlite and answers LEDGER_ACK.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgefed.config import NodeConfig
from edgefed.contracts.events import EventSink, ModelSink, RefusalSink
from edgefed.ledger.backends import open_chief_ledger
from edgefed.ledger.outbox import Outbox, OutboxSink
from edgefed.ledger.push import LedgerPushHandler
from edgefed.pki import NodeCredentials
from edgefed.transport import Connection
from edgefed.wire import Frame, MessageType

# What the chief's listener calls with a connection whose first frame is of a type it does not handle.
PushHandler = Callable[[Connection, Frame], None]


@dataclass
class NodeLedgerHooks:
    """The pieces a chief or worker process plugs into its EventBus and ChiefSession."""

    sinks: list[EventSink] = field(default_factory=list)
    refusal_sinks: list[RefusalSink] = field(default_factory=list)  # the chief's refused updates, signed
    model_sinks: list[ModelSink] = field(default_factory=list)  # the chief's adopted models (provenance)
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
        hooks = cls(sinks=[sink], refusal_sinks=[sink.refused], model_sinks=[sink.model], outbox=outbox,
                    outbox_sink=sink)
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
