"""A worker's HELLO, checked, and the Refusal the chief's rules give (split out of rounds.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgefed.wire import Frame, Hello, MessageError, MessageType, ReasonCode

PROTOCOL = 1  # the HELLO protocol version this chief speaks
MAX_NUM_SAMPLES = 10**12  # a sample count beyond this is a lie, not a data set (the codec's bound too)


@dataclass(frozen=True)
class Refusal:
    """Why the chief refuses something: a stable code for programs (a ReasonCode of the codec, or
    a chief-only code such as non-finite-average that never travels), a sentence for people."""

    code: str
    reason: str

    def __str__(self) -> str:
        return self.reason

    @property
    def wire_code(self) -> ReasonCode:
        """The code a REJECT or BYE carries (a chief-only code travels as `other`)."""
        try:
            return ReasonCode(self.code)
        except ValueError:
            return ReasonCode.OTHER


def read_hello(frame: Frame) -> Hello | Refusal:
    """The HELLO of a first frame, or the refusal a bad one earns (bad-hello, unsupported-protocol).
    The chief's rules come first, as before the typed messages: the protocol is checked before the
    sample count, and a HELLO without one counts 0 samples."""
    if frame.type is not MessageType.HELLO:
        return Refusal(ReasonCode.BAD_HELLO, f"expected HELLO, got {frame.type.name}")
    refusal = hello_refusal(frame.body)
    if refusal is not None:
        return refusal
    try:
        return Hello.from_body({"num_samples": 0, **frame.body})
    except MessageError as exc:
        return Refusal(exc.code, str(exc))


def hello_refusal(hello: Mapping[str, Any]) -> Refusal | None:
    """A HELLO body's fields, checked: protocol (absent means 1) and a non-negative sample count."""
    protocol = hello.get("protocol", PROTOCOL)
    if isinstance(protocol, bool) or protocol != PROTOCOL:
        return Refusal(ReasonCode.UNSUPPORTED_PROTOCOL,
                       f"HELLO speaks protocol {protocol!r}; this chief speaks {PROTOCOL}")
    samples = hello.get("num_samples", 0)
    if isinstance(samples, bool) or not isinstance(samples, int) or not 0 <= samples <= MAX_NUM_SAMPLES:
        return Refusal(ReasonCode.BAD_HELLO,
                       f"HELLO.num_samples must be an integer in 0..{MAX_NUM_SAMPLES}, got {samples!r}")
    return None
