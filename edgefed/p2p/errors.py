"""Errors of the p2p layer; the CLI prints them without a traceback (see edgefed.errors.USER_ERRORS)."""

from __future__ import annotations

from edgefed.errors import user_error


@user_error
class P2PError(Exception):
    """A chat or file transfer cannot go on; the message says what was wrong and with whom."""


class PeerUnreachable(P2PError):
    """The peer's receiver could not be reached (or re-reached) within the retry window."""


class TransferRefused(P2PError):
    """The receiving peer refused a file offer (bad name, too large, already there, ...)."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        # A refusal such as "busy" goes away by itself; the sender may offer again after a pause.
        self.retryable = retryable


class TransferFailed(P2PError):
    """A file arrived but did not check out (wrong size or sha256); nothing was kept."""
