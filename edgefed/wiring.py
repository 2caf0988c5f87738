"""The one place a node's configuration becomes a running federation session.

    session = build_session(config)              # ChiefSession or WorkerSession, by node.role

Builds what a session is handed — its credentials and the TLS transport holding them, its status
file, its ledger hooks (every transfer signed into the node's outbox; on an embedded-ledger chief,
the workers' LEDGER_PUSH deliveries taken on the federation port) — so that federation/ never reads
a whole configuration and never imports the ledger. Used by `edgefed chief|worker` (node.py), the
Keras callback and SessionRunHook (edgefed.tf) and the benchmarks.
"""

from __future__ import annotations

from edgefed.compression import parse_broadcast_compression, parse_compression
from edgefed.config import NodeConfig
from edgefed.contracts.events import EventBus
from edgefed.contracts.status import StatusFile
from edgefed.federation.chief import ChiefSession, ExtraHandler
from edgefed.federation.secure_worker import SecAggIdentity
from edgefed.federation.worker import WorkerSession
from edgefed.ledger.hooks import NodeLedgerHooks
from edgefed.malloc_arenas import fix_mmap_threshold, limit_malloc_arenas
from edgefed.pki import NodeCredentials, ledger_public_keys
from edgefed.transport import TlsTransport, Transport
from edgefed.wire import MessageType


def node_transport(config: NodeConfig) -> Transport:
    """Mutual TLS with this node's certificate and the deployment CA."""
    return TlsTransport(NodeCredentials.load(config.node.pki_dir, config.node.name))


def _compression(config: NodeConfig) -> str:
    """federation.compression in its canonical spelling (what HELLO carries; the status file shows it)."""
    return str(parse_compression(config.federation.compression))


def _broadcast(config: NodeConfig) -> str:
    """federation.broadcast_compression, canonical (what HELLO carries; the status file shows it)."""
    return parse_broadcast_compression(config.federation.broadcast_compression)


def secagg_identity(config: NodeConfig) -> SecAggIdentity | None:
    """With federation.secure_aggregation: this node's Ed25519 key (the ledger's) signs its round keys,
    and every node's public one, under PKI_DIR/nodes/*/ledger.pub, checks the others'."""
    if not config.federation.secure_aggregation:
        return None
    key = NodeCredentials.load(config.node.pki_dir, config.node.name).ledger_signing_key()
    return SecAggIdentity(key, ledger_public_keys(config.node.pki_dir))


def _ledger_hooks(config: NodeConfig, bus: EventBus, ledger: bool) -> NodeLedgerHooks:
    hooks = NodeLedgerHooks.for_config(config) if ledger else NodeLedgerHooks()  # no-op when disabled
    for sink in hooks.sinks:
        bus.subscribe(sink)
    for refusal_sink in hooks.refusal_sinks:
        bus.subscribe_refusals(refusal_sink)
    for model_sink in hooks.model_sinks:
        bus.subscribe_models(model_sink)
    return hooks


def build_chief(
    config: NodeConfig,
    events: EventBus | None = None,
    *,
    ledger: bool = True,
    extra_handlers: dict[MessageType, ExtraHandler] | None = None,
    transport: Transport | None = None,
) -> ChiefSession:
    """The chief of config, listening on nothing yet (listen() or start() opens its port).

    ledger=False leaves the transfers unrecorded (benchmarks; tests that bring their own hooks and
    pass extra_handlers); payload digests still follow config.ledger.enabled.
    """
    bus = events or EventBus()
    # first: a missing certificate fails before anything is opened; an MPI job hands its own transport
    transport = transport or node_transport(config)
    limit_malloc_arenas()  # before the chief's threads: its memory stays flat in the number of workers
    fix_mmap_threshold()  # freed model-sized arrays go back to the kernel (edgefed/malloc_arenas.py)
    status = StatusFile(
        config.node.state_dir, "chief", config.node.name, role="chief", task_index=0, round=0,
        rounds_total=config.federation.rounds, participants=[], compression=_compression(config),
        broadcast_compression=_broadcast(config),
    )
    hooks = _ledger_hooks(config, bus, ledger)
    return ChiefSession(
        config.federation, name=config.node.name, transport=transport, status=status,
        state_dir=config.node.state_dir, events=bus, extra_handlers={**hooks.extra_handlers, **(extra_handlers or {})},
        hash_payloads=config.ledger.enabled,
        on_close=[hooks.close],  # first: it ends the ledger connections the chief's close() would wait for
        secagg_directory=identity.directory if (identity := secagg_identity(config)) else None,
    )


def build_worker(
    config: NodeConfig, events: EventBus | None = None, *, ledger: bool = True, transport: Transport | None = None
) -> WorkerSession:
    """The worker of config, not connected until start()."""
    bus = events or EventBus()
    transport = transport or node_transport(config)
    status = StatusFile(config.node.state_dir, "worker", config.node.name, role="worker", round=0,
                        compression=_compression(config), broadcast_compression=_broadcast(config))
    hooks = _ledger_hooks(config, bus, ledger)
    return WorkerSession(
        config.federation, name=config.node.name, transport=transport, status=status,
        events=bus, hash_payloads=config.ledger.enabled, on_close=[hooks.close], state_dir=config.node.state_dir,
        secagg=secagg_identity(config),
    )


def build_session(
    config: NodeConfig, events: EventBus | None = None, *, ledger: bool = True, transport: Transport | None = None
) -> ChiefSession | WorkerSession:
    """The session node.role asks for, wired as `edgefed chief|worker` runs it (transport: MPI's, or TLS)."""
    if config.node.role == "chief":
        return build_chief(config, events, ledger=ledger, transport=transport)
    return build_worker(config, events, ledger=ledger, transport=transport)
