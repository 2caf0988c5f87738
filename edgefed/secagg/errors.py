"""What can go wrong in a secure-aggregation round, and whom it costs."""

from __future__ import annotations

from edgefed.errors import user_error


class PeerFault(Exception):
    """One peer's message broke the protocol: that peer is dropped from the round, the round goes on."""

    def __init__(self, sender: str, reason: str) -> None:
        super().__init__(f"{sender}: {reason}")
        self.sender = sender
        self.reason = reason


@user_error
class SecAggRefused(Exception):
    """The round cannot be unmasked safely (too few workers left, inconsistent shares): not adopted."""


def effective_threshold(configured: int, roster_size: int) -> int:
    """The shares' threshold for a roster: at least the configured one and more than half the roster,
    so no two disjoint groups of workers (nor a chief that splits them) can each unmask a worker."""
    return max(configured, roster_size // 2 + 1)
