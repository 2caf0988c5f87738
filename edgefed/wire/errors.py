"""The one error type the codec raises."""


class ProtocolError(ValueError):
    """A peer sent bytes that break the protocol; the message says what was wrong."""
