"""The chief's report of a refusal: one line in the log, the status file's errors, the EventBus."""

from __future__ import annotations

import logging

from edgefed.contracts.events import EventBus, RefusalEvent, Stage
from edgefed.contracts.status import StatusFile
from edgefed.federation.rounds import Refusal

log = logging.getLogger("edgefed.federation.chief")  # the chief's own log lines, as before the move


def report_refusal(status: StatusFile, events: EventBus, chief: str, worker: str, round_number: int,
                   refusal: Refusal, stage: Stage, what: str) -> None:
    """Every refusal is logged and reaches the EventBus: status file, history, metrics, the ledger."""
    log.warning("%s: %s", what, refusal)
    status.error(f"{what}: {refusal}")
    events.refused(RefusalEvent(worker, round_number, refusal.wire_code.value, refusal.reason, chief, stage))
