"""The end of an MPI job: every rank's ledger outbox delivered before the ranks exit.

Over sockets, each node's ledger service (`edgefed ledger serve`) relays its outbox, the workers' to
the chief's federation port. An MPI job opens no such port, and its ranks exit with the training;
so, once training is over, the job itself does what the services would have done:

- with the embedded ledger, the chief appends its own records to its chain, and takes each worker
  rank's records as a LEDGER_PUSH over the MPI transport (the same handler, checks and LEDGER_ACK as
  on its TLS listener), while the worker ranks push theirs with the same relay as their service;
- with Iroha, every rank delivers to Iroha itself, as its service would.

A barrier then holds every rank until all have delivered (or the deadline passed). What could not be
delivered stays in the rank's outbox; the next job (or `edgefed ledger serve --drain`) sends it.
"""

from __future__ import annotations

import logging
import threading
import time

from edgefed.config import NodeConfig
from edgefed.ledger.backends import Backend, LocalChainBackend, open_chief_ledger
from edgefed.ledger.outbox import Outbox
from edgefed.ledger.push import LedgerPushHandler, RemoteChainBackend
from edgefed.ledger.service import LedgerService, backend_for
from edgefed.transport import TransportError
from edgefed.transport.mpi import CHIEF_RANK, MpiConnection, MpiTransport
from edgefed.wire import Limits, ProtocolError

log = logging.getLogger(__name__)

DELIVERY_TIMEOUT_S = 120.0  # the whole delivery phase, every rank's records included
FIRST_FRAME_TIMEOUT_S = 30.0  # a worker rank that connected must say what it wants by then


def deliver_outboxes(config: NodeConfig, transport: MpiTransport, timeout: float = DELIVERY_TIMEOUT_S) -> bool:
    """Deliver this rank's outbox (and, on an embedded-ledger chief, the worker ranks'); True when this
    rank's records all reached the ledger and every rank arrived within timeout."""
    deadline = time.monotonic() + timeout
    delivered = True
    if config.ledger.enabled:
        chief_takes_pushes = config.ledger.backend == "embedded" and transport.rank == CHIEF_RANK
        intake = _PushIntake(transport, config) if chief_takes_pushes else None
        try:
            delivered = _drain(config, _backend(config, transport), deadline)
            together = transport.barrier(max(0.0, deadline - time.monotonic()))
        finally:
            if intake is not None:
                intake.close()
    else:
        together = transport.barrier(timeout)
    if not together:
        log.warning("ledger: not every rank finished its delivery within %.0fs; undelivered records stay "
                    "in their outboxes", timeout)
    return delivered and together


def _backend(config: NodeConfig, transport: MpiTransport) -> Backend:
    if config.ledger.backend != "embedded":
        return backend_for(config)  # Iroha: every rank reaches it as its ledger service would
    if transport.rank == CHIEF_RANK:
        return LocalChainBackend(open_chief_ledger(config), config.node.name)
    chief = transport.names[CHIEF_RANK]
    return RemoteChainBackend(transport, chief, 0, chief)  # ranks are addressed by number: no port


def _drain(config: NodeConfig, backend: Backend, deadline: float) -> bool:
    service = LedgerService(Outbox.for_state_dir(config.node.state_dir), backend,
                            max_retry_delay=config.federation.reconnect_max_delay)
    try:
        done = service.drain(max(0.0, deadline - time.monotonic()))
        log.info("ledger: delivered %d, refused %d, waiting %d", service.stats.delivered, service.stats.refused,
                 service.outbox.backlog())
        return done
    finally:
        service.close()  # a worker rank says BYE: the chief's handler returns


class _PushIntake:
    """The chief rank's side: worker ranks' LEDGER_PUSH connections, each handled on its own thread."""

    def __init__(self, transport: MpiTransport, config: NodeConfig) -> None:
        self._listener = transport.listen("", 0, Limits())  # pushes carry no tensors: the default bounds
        self._handler = LedgerPushHandler(open_chief_ledger(config))
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name="mpi-ledger-intake", daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                pending = self._listener.accept_pending()
            except TransportError:  # closed: the delivery phase is over
                return
            thread = threading.Thread(target=self._serve, args=(pending.authenticate(),), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: MpiConnection) -> None:
        try:
            conn.settimeout(FIRST_FRAME_TIMEOUT_S)
            first = conn.recv(hash_payload=False)
            self._handler(conn, first)  # answers each push until the rank says BYE
        except (TransportError, ProtocolError) as exc:
            log.warning("ledger: delivery from %s ended: %s", conn.peer, exc)
        finally:
            conn.close()

    def close(self) -> None:
        self._listener.close()
        self._handler.close()  # ends connections still open (a rank past the deadline)
        for thread in [self._accepting, *self._threads]:
            thread.join(timeout=10.0)
        self._handler.ledger.close()
