"""The ledger client service (`edgefed ledger serve`): relays a node's outbox to the configured backend.

It reads the outbox in insertion order, hands batches to the backend, and deletes a record only once
the backend acknowledged it; a backend that cannot be reached is retried with exponential backoff
(capped, with jitter) while the records wait on disk. Records the backend refused for good stay in the
outbox marked with the reason and show up in the status file's errors.

Its status lives in STATE_DIR/status/ledger.json: backend, height, outbox_backlog, last_delivery_at.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edgefed.backoff import Backoff
from edgefed.config import NodeConfig
from edgefed.contracts.status import StatusFile
from edgefed.ledger.backends import Backend, LocalChainBackend, open_chief_ledger
from edgefed.ledger.errors import LedgerError
from edgefed.ledger.outbox import Outbox
from edgefed.ledger.push import RemoteChainBackend
from edgefed.pki import NodeCredentials
from edgefed.transport import TlsTransport

log = logging.getLogger(__name__)

BATCH_SIZE = 200
# Records are relayed in batches at most once a second (sooner when a full batch waits): the relay's
# work on the chief (signature checks, appends) is then a few bursts per round, not one per transfer.
POLL_INTERVAL_S = 1.0
FIRST_RETRY_DELAY_S = 0.5


@dataclass
class RelayStats:
    delivered: int = 0
    refused: int = 0
    failures: int = 0


class LedgerService:
    """Moves records from the outbox to the backend until stopped."""

    def __init__(
        self,
        outbox: Outbox,
        backend: Backend,
        *,
        status: StatusFile | None = None,
        batch_size: int = BATCH_SIZE,
        poll_interval: float = POLL_INTERVAL_S,
        max_retry_delay: float = 30.0,
    ) -> None:
        self.outbox = outbox
        self.backend = backend
        self.status = status
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.max_retry_delay = max(max_retry_delay, FIRST_RETRY_DELAY_S)
        self.stats = RelayStats()
        self._backoff_delays = Backoff(first=FIRST_RETRY_DELAY_S, cap=self.max_retry_delay)
        self._height: int | None = None

    def relay_once(self) -> int:
        """Deliver one batch; returns how many records it moved out of the outbox (0: nothing waiting).

        Raises BackendUnavailable when the backend cannot take the batch now (nothing is lost).
        """
        pending = self.outbox.pending(self.batch_size)
        if not pending:
            return 0
        records = [item.record for item in pending]
        self.outbox.note_attempt([record.id for record in records])
        delivery = self.backend.deliver(records)
        self.outbox.acknowledge(delivery.acknowledged)
        for record_id, reason in delivery.refused:
            self.outbox.refuse(record_id, reason)
            log.error("ledger: %s refused record %s: %s", self.backend.name, record_id, reason)
            if self.status is not None:
                self.status.error(f"record {record_id} refused: {reason}")
        self.stats.delivered += len(delivery.acknowledged)
        self.stats.refused += len(delivery.refused)
        if delivery.height is not None:
            self._height = delivery.height
        self._report(state="running", last_delivery_at=time.time())
        return len(delivery.acknowledged) + len(delivery.refused)

    def run(self, stop: threading.Event) -> None:
        """Relay until stop is set; a failing backend is retried with backoff."""
        self._report(state="running")
        while not stop.is_set():
            try:
                moved = self.relay_once()
            except LedgerError as exc:  # BackendUnavailable, or an answer we did not expect: keep all, retry
                self._backoff(stop, exc)
                continue
            self._backoff_delays.reset()
            if moved < self.batch_size:
                stop.wait(self.poll_interval)
        self._report(state="finished")

    def drain(self, timeout: float) -> bool:
        """Relay until the outbox is empty or timeout seconds passed; True if everything was delivered."""
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        while time.monotonic() < deadline:
            try:
                if self.relay_once() == 0:
                    return True
                self._backoff_delays.reset()
            except LedgerError as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._backoff(stop, exc, cap=remaining)
        return self.outbox.backlog() == 0

    def _backoff(self, stop: threading.Event, exc: Exception, cap: float | None = None) -> None:
        self.stats.failures += 1
        delay = self._backoff_delays.next_delay()
        if cap is not None:
            delay = min(delay, cap)
        log.warning("ledger: %s unavailable (%s); retrying in %.1fs", self.backend.name, exc, delay)
        if self.status is not None:
            self.status.error(f"{self.backend.name} unavailable: {exc}")
        self._report(state="waiting")
        stop.wait(delay)

    def _report(self, **fields: object) -> None:
        if self.status is not None:
            self.status.update(
                backend=self.backend.name, height=self._height, outbox_backlog=self.outbox.backlog(), **fields
            )

    def close(self) -> None:
        self.backend.close()
        self.outbox.close()


def backend_for(config: NodeConfig) -> Backend:
    """The backend the [ledger] section asks for, from this node's point of view.

    A worker's pushes to the chief go through a TlsTransport holding its certificates, on the same
    mutual-TLS PKI as its federation connection.
    """
    if config.ledger.backend == "iroha":
        from edgefed.ledger.iroha import IrohaBackend  # grpc only when configured

        return IrohaBackend.for_config(config)
    if config.node.role == "chief":
        return LocalChainBackend(open_chief_ledger(config), config.node.name)
    federation = config.federation
    return RemoteChainBackend(
        TlsTransport(NodeCredentials.load(Path(config.node.pki_dir), config.node.name)),
        federation.public_ip,
        federation.public_port,
        federation.server_name,
    )


def service_for(config: NodeConfig, status: bool = True) -> LedgerService:
    if not config.ledger.enabled:
        raise LedgerError(f"ledger.enabled is false for {config.node.name}: there is nothing to serve")
    backend = backend_for(config)
    status_file = (
        StatusFile(
            config.node.state_dir,
            "ledger",
            config.node.name,
            backend=backend.name,
            height=None,
            outbox_backlog=0,
            last_delivery_at=None,
        )
        if status
        else None
    )
    return LedgerService(
        Outbox.for_state_dir(config.node.state_dir),
        backend,
        status=status_file,
        max_retry_delay=config.federation.reconnect_max_delay,
    )
