"""Errors that mean bad input or an unusable environment: the CLI prints them without a traceback."""

from edgefed.config import ConfigError
from edgefed.lite import InferenceError
from edgefed.pki import PKIError
from edgefed.transport.base import TransportError
from edgefed.wire.errors import ProtocolError


class UsageError(ValueError):
    """A command-line value is invalid; the message names it."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError, PKIError, ProtocolError, TransportError, UsageError, InferenceError,
)
