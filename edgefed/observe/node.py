"""What a running node records for its operator, wired from its configuration:

    observer = NodeObserver.start(config, session.status, bus)   # before training
    observer.round(report)                                         # the driver's on_round
    observer.close()

The chief appends its training history; every node writes accuracy/loss into its status file and,
with [metrics] enabled, serves Prometheus metrics.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from edgefed.config import NodeConfig
from edgefed.contracts.events import EventBus
from edgefed.contracts.status import StatusFile
from edgefed.errors import UsageError
from edgefed.federation.driver import RoundReport

log = logging.getLogger(__name__)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _require(module: str, setting: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{setting} needs the {module} package: pip install 'edgefed[observe]'")


class NodeObserver:
    def __init__(self, status: StatusFile | None, history: Any = None, metrics: Any = None,
                 server: Any = None) -> None:
        self._status = status
        self.history = history  # edgefed.observe.history.HistoryWriter on the chief
        self.metrics = metrics  # edgefed.observe.metrics.NodeMetrics when [metrics] is enabled
        self.server = server  # its edgefed.transport.http_metrics.MetricsServer

    @classmethod
    def start(cls, config: NodeConfig, status: StatusFile | None, bus: EventBus) -> NodeObserver:
        history = metrics = server = None
        if config.node.role == "chief":
            from edgefed.compression import parse_broadcast_compression, parse_compression
            from edgefed.observe.history import HistoryWriter

            compression = str(parse_compression(config.federation.compression))
            history = HistoryWriter(config.node.state_dir, config.node.name, compression,
                                    parse_broadcast_compression(config.federation.broadcast_compression))
            bus.subscribe(history.transfer)
            bus.subscribe_refusals(history.refused)
        if config.metrics.enabled:
            _require("prometheus_client", "metrics.enabled")
            from edgefed.observe.metrics import NodeMetrics
            from edgefed.pki import NodeCredentials
            from edgefed.transport.http_metrics import serve_metrics

            certificate = NodeCredentials(Path(config.node.pki_dir), config.node.name).cert
            metrics = NodeMetrics(config.node.name, config.node.state_dir, certificate)
            bus.subscribe(metrics.transfer)
            bus.subscribe_refusals(metrics.refused)
            server = serve_metrics(metrics.registry, config.metrics.address, config.metrics.port)
            log.info("metrics on http://%s:%d/metrics", server.address, server.port)
        return cls(status, history, metrics, server)

    def round(self, report: RoundReport, dp_epsilon: float | None = None) -> None:
        """Record one round (dp_epsilon: what this node's updates have spent, with differential privacy
        on); a failure here is logged and never stops training."""
        accuracy, loss = _finite(report.accuracy), _finite(report.loss)
        privacy = {} if dp_epsilon is None else {"dp_epsilon": round(dp_epsilon, 6)}
        try:
            if self._status is not None:
                self._status.update(accuracy=accuracy, loss=loss, round_bytes={
                    "round": report.round, "sent": report.bytes_sent, "received": report.bytes_received}, **privacy)
            if self.metrics is not None:
                self.metrics.round_done(report.round, len(report.participants), accuracy, loss, report.seconds)
            if self.history is not None:
                self.history.round(report.round, list(report.participants), accuracy=accuracy, loss=loss,
                                   train_loss=_finite(report.train_loss), seconds=report.seconds,
                                   samples=report.samples, phases=report.phases, **privacy)
        except OSError as exc:  # a full or read-only state dir: the operator sees it in the log
            log.error("cannot record round %d: %s", report.round, exc)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
