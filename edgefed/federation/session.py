"""What chief and worker sessions return to the training loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from edgefed.config import FederationSection
from edgefed.wire import Limits

log = logging.getLogger("edgefed.federation.chief")  # the chief's own log lines


@dataclass(frozen=True)
class StartInfo:
    weights: list[np.ndarray]
    round: int
    task_index: int
    total: int  # participants, the chief included
    finished: bool = False  # a resumed chief whose training had already ended


@dataclass(frozen=True)
class RoundResult:
    weights: list[np.ndarray]
    round: int  # the round these global weights start
    participants: list[str] = field(default_factory=list)  # whose updates went into the average
    finished: bool = False
    bytes: int = 0  # frame bytes this node moved for the round (its uploads, broadcasts, downloads)
    bytes_sent: int = 0  # of which sent: a worker's upload, the chief's broadcast
    bytes_received: int = 0  # of which received: a worker's download, the chief's uploads
    samples: int | None = None  # on the chief: the samples behind the average; a worker does not know
    phases: dict[str, float] = field(default_factory=dict)  # the chief's seconds per phase (timeline.py)


def limits_for(federation: FederationSection) -> Limits:
    return Limits(max_frame_bytes=federation.max_frame_bytes)


def extends(federation: FederationSection, finished_round: int) -> bool:
    """A finished training goes on when federation.rounds was raised since (the operator asked for more
    rounds), except under differential privacy: the nodes' noise was planned for the old total."""
    rounds = federation.rounds
    if rounds <= finished_round:
        return False
    if federation.dp_epsilon > 0:
        log.warning("training finished at round %d; not extended to %d rounds: dp_epsilon's noise was planned "
                    "for the old total (start a new training instead)", finished_round, rounds)
        return False
    log.info("training finished at round %d is extended to %d rounds", finished_round, rounds)
    return True
