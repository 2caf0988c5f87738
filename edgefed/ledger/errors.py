"""Ledger errors: every message names the record, entry or file that was wrong."""

from __future__ import annotations

from edgefed.errors import user_error


@user_error
class LedgerError(Exception):
    """A ledger database, record or backend is unusable; the message says which and why."""


class BackendUnavailable(LedgerError):
    """The backend cannot be reached right now; the relay keeps the records and retries later."""
