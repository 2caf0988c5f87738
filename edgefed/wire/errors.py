"""The one error type the codec raises."""

from edgefed.errors import user_error


@user_error
class ProtocolError(ValueError):
    """A peer sent bytes that break the protocol; the message says what was wrong."""
