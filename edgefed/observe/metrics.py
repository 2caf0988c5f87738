"""A node's Prometheus metrics: fed by its EventBus and round reports, plus values read at scrape time
from files (the ledger's status file, the node's certificate), so no feature imports this module.

Names (all prefixed edgefed_): round, participants, accuracy, loss, bytes_sent_total,
bytes_received_total, upload_seconds (histogram), round_seconds (histogram), refusals_total{reason},
ledger_outbox_depth, ledger_delivery_lag_seconds, certificate_days_left. docs/operations.md lists them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from edgefed.contracts.events import RefusalEvent, TransferEvent
from edgefed.contracts.status import status_path

UPLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ROUND_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
MAX_STATUS_BYTES = 64 * 1024  # the ledger status file is a few hundred bytes; more is not ours
MAX_REASON_LABELS = 32  # refusal codes come from the codec's ReasonCode; a bound all the same


class _FileGauges(Collector):
    """Values read when Prometheus scrapes: the ledger outbox (its status file) and certificate expiry."""

    def __init__(self, state_dir: Path, certificate: Path | None) -> None:
        self._ledger_status = status_path(state_dir, "ledger")
        self._certificate = certificate

    def _ledger(self) -> dict[str, Any] | None:
        try:
            with open(self._ledger_status, "rb") as file:
                doc = json.loads(file.read(MAX_STATUS_BYTES + 1)[:MAX_STATUS_BYTES])
        except (OSError, ValueError):
            return None  # no ledger service on this node, or a file mid-replace: no sample this scrape
        return doc if isinstance(doc, dict) else None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ledger = self._ledger()
        if ledger is not None:
            backlog = ledger.get("outbox_backlog")
            if isinstance(backlog, int) and not isinstance(backlog, bool):
                yield GaugeMetricFamily("edgefed_ledger_outbox_depth", "records waiting in the ledger outbox",
                                        value=backlog)
            delivered = ledger.get("last_delivery_at")
            if isinstance(delivered, int | float) and not isinstance(delivered, bool) and math.isfinite(delivered):
                yield GaugeMetricFamily("edgefed_ledger_delivery_lag_seconds",
                                        "seconds since the ledger last delivered a record",
                                        value=max(0.0, time.time() - delivered))
        if self._certificate is not None:
            from edgefed.pki import days_until_expiry

            try:
                days = days_until_expiry(self._certificate)
            except (OSError, ValueError):
                return
            yield GaugeMetricFamily("edgefed_certificate_days_left", "days until this node's certificate expires",
                                    value=days)


class NodeMetrics:
    """One registry per node (never the global one: a test or a demo runs several nodes in a process)."""

    def __init__(self, node: str, state_dir: str | Path, certificate: Path | None = None) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.round = Gauge("edgefed_round", "the round this node last completed", registry=r)
        self.participants = Gauge("edgefed_participants", "nodes in the last averaged round", registry=r)
        self.accuracy = Gauge("edgefed_accuracy", "accuracy of the averaged model on this node's evaluation set",
                              registry=r)
        self.loss = Gauge("edgefed_loss", "loss of the averaged model on this node's evaluation set", registry=r)
        self.bytes_sent = Counter("edgefed_bytes_sent", "weight and update bytes this node sent", registry=r)
        self.bytes_received = Counter("edgefed_bytes_received", "weight and update bytes this node received",
                                      registry=r)
        self.upload_seconds = Histogram("edgefed_upload_seconds", "duration of one worker update upload",
                                        buckets=UPLOAD_BUCKETS, registry=r)
        self.round_seconds = Histogram("edgefed_round_seconds", "local training plus the federated average",
                                       buckets=ROUND_BUCKETS, registry=r)
        self.refusals = Counter("edgefed_refusals", "admissions and updates the chief refused", ["reason"],
                                registry=r)
        self._reasons: set[str] = set()
        r.register(_FileGauges(Path(state_dir), certificate))

    def transfer(self, event: TransferEvent) -> None:
        if event.observer != self.node:
            return
        if event.direction == "send":
            self.bytes_sent.inc(event.bytes)
        else:
            self.bytes_received.inc(event.bytes)
        if event.kind == "update":  # the worker's send and the chief's receive of one upload
            self.upload_seconds.observe(max(event.seconds, 0.0))

    def refused(self, event: RefusalEvent) -> None:
        code = event.code
        if code not in self._reasons and len(self._reasons) >= MAX_REASON_LABELS:
            code = "other"
        self._reasons.add(code)
        self.refusals.labels(reason=code).inc()

    def round_done(self, round_number: int, participants: int, accuracy: float | None, loss: float | None,
                   seconds: float) -> None:
        self.round.set(round_number)
        self.participants.set(participants)
        if accuracy is not None and math.isfinite(accuracy):
            self.accuracy.set(accuracy)
        if loss is not None and math.isfinite(loss):
            self.loss.set(loss)
        self.round_seconds.observe(max(seconds, 0.0))
