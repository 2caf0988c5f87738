"""Ledger work is background work: its threads yield the CPU to training."""

from __future__ import annotations

import contextlib
import os
import threading

BACKGROUND_NICENESS = 10


def lower_thread_priority(niceness: int = BACKGROUND_NICENESS) -> None:
    """Lower the calling thread's priority (Linux schedules threads with their own nice value)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
