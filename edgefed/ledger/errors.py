"""Ledger errors: every message names the record, entry or file that was wrong."""

from __future__ import annotations

from edgefed.errors import user_error


@user_error
class LedgerError(Exception):
    """A ledger database, record or backend is unusable; the message says which and why."""


class RecordRefused(LedgerError):
    """A backend refused a record for good (bad signature, unknown signer, conflict): retrying won't help."""

    def __init__(self, record_id: str, reason: str) -> None:
        super().__init__(f"record {record_id} refused: {reason}")
        self.record_id = record_id
        self.reason = reason


class BackendUnavailable(LedgerError):
    """The backend cannot be reached right now; the relay keeps the records and retries later."""
