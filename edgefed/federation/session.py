"""What chief and worker sessions return to the training loop."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgefed.config import FederationSection
from edgefed.wire import Limits


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
