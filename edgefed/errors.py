"""Errors that mean bad input or an unusable environment: the CLI prints them without a traceback."""

from edgefed.config import ConfigError
from edgefed.federation.checkpoint import CheckpointError
from edgefed.ledger.errors import LedgerError
from edgefed.lite import InferenceError
from edgefed.p2p.errors import P2PError
from edgefed.pki import PKIError
from edgefed.transport.base import TransportError
from edgefed.wire.errors import ProtocolError


class UsageError(ValueError):
    """A command-line value is invalid; the message names it."""


USER_ERRORS: list[type[BaseException]] = [
    CheckpointError, ConfigError, PKIError, ProtocolError, TransportError, UsageError, InferenceError, P2PError,
    LedgerError,
]


def register_user_error(error_type: type[BaseException]) -> None:
    """Let a module's own error type reach the user as a one-line message (no traceback)."""
    if error_type not in USER_ERRORS:
        USER_ERRORS.append(error_type)
