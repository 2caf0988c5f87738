"""Typed control messages: one class per control message type, each validating its own body.

    hello = expect(frame, Hello)               # MessageError (a ProtocolError) if the body is bad
    conn.send([encode_message(Bye(ReasonCode.LATE_JOINER, "late joiners are not allowed"))])
    if isinstance(message := decode_message(frame), Bye) and message.code.permanent: ...

Refusals travel as a code (ReasonCode) plus a human text: programs branch on the code, people read
the text. Bodies stay the JSON objects of protocol version 1: unknown keys are ignored (a newer
peer may add some), a REJECT or BYE without a code (an older peer) decodes with the code `other`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from edgefed.wire.errors import ProtocolError
from edgefed.wire.frame import MAX_SAMPLES, Flags, MessageType, PayloadKind, encode_control_frame, payload_kind
from edgefed.wire.reader import Frame

PROTOCOL_VERSION = 1  # HELLO's "protocol": what the federation's message sequence follows
SUPPORTED_PROTOCOLS = frozenset({PROTOCOL_VERSION})
MAX_NAME_CHARS = 255  # node names are certificate common names (X.509 allows 64)
MAX_TEXT_CHARS = 4096  # reasons, chat text, file names (p2p applies its own, stricter name rules)
MAX_LEDGER_RECORDS = 1000  # per LEDGER_PUSH / LEDGER_ACK list
MAX_RECORD_ID_CHARS = 128
MAX_U32 = 2**32 - 1
MAX_I63 = 2**63 - 1  # sizes, offsets, heights: what a signed 64-bit integer holds
MAX_COMPRESSION_CHARS = 64  # HELLO.compression: "topk:0.01+int8" and the like


class ReasonCode(enum.StrEnum):
    """Why a REJECT or BYE was sent. Codes are part of the format: add, never rename."""

    STALE = "stale"  # the update is for a round that has closed
    FUTURE_ROUND = "future-round"  # the update is for a round that has not started
    SHAPE_MISMATCH = "shape-mismatch"  # tensor count, shapes or dtypes do not fit the model
    NON_FINITE = "non-finite"  # NaN or Inf in an update
    NO_SAMPLES = "no-samples"  # an update trained on 0 samples
    DUPLICATE_UPDATE = "duplicate-update"  # a second update for the same round
    OUTLIER = "outlier"  # screened out: too far from the global model
    DUPLICATE_IDENTITY = "duplicate-identity"  # this certificate is already connected
    LATE_JOINER = "late-joiner"  # training started and this federation takes no late joiners
    BAD_HELLO = "bad-hello"  # the first frame was not a valid HELLO
    UNSUPPORTED_PROTOCOL = "unsupported-protocol"  # HELLO's protocol version is not spoken here
    NAME_CONFLICT = "name-conflict"  # the peer's name is reserved (e.g. the chief's own)
    NOT_ALLOWED = "not-allowed"  # the peer is not on this session's allow list
    BUSY = "busy"  # too many connections or uploads now; try again later
    TIMEOUT = "timeout"  # a frame or upload took longer than its deadline
    PROTOCOL_ERROR = "protocol-error"  # a malformed frame or a message out of sequence
    LEAVING = "leaving"  # an orderly goodbye: this side is done
    SHUTDOWN = "shutdown"  # this side (chief, ledger service, p2p session) is stopping
    OTHER = "other"  # none of the above, or a code this version does not know

    @property
    def permanent(self) -> bool:
        """Retrying the same way cannot succeed: a joining worker should stop, not reconnect."""
        return self in _PERMANENT


_PERMANENT = frozenset({
    ReasonCode.LATE_JOINER, ReasonCode.BAD_HELLO, ReasonCode.UNSUPPORTED_PROTOCOL,
    ReasonCode.NAME_CONFLICT, ReasonCode.NOT_ALLOWED,
})


class MessageError(ProtocolError):
    """A control body that breaks its message's rules; code is what to answer with (BYE code)."""

    def __init__(self, text: str, code: ReasonCode = ReasonCode.PROTOCOL_ERROR) -> None:
        super().__init__(text)
        self.code = code


def shown(value: object, limit: int = 40) -> str:
    """A short repr of a peer's value for an error text (never the whole 1 MiB of it)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


Message = TypeVar("Message", bound="ControlMessage")
_CLASSES: dict[MessageType, type[ControlMessage]] = {}


class ControlMessage:
    """Base of the typed messages: dataclass fields are the body's keys; __post_init__ validates."""

    TYPE: ClassVar[MessageType]
    ERROR_CODE: ClassVar[ReasonCode] = ReasonCode.PROTOCOL_ERROR

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" not in cls.__dict__:
            return  # a shared base such as _Refusal
        if payload_kind(cls.TYPE) is not PayloadKind.CONTROL:
            raise TypeError(f"{cls.TYPE.name} is not a control message")
        _CLASSES[cls.TYPE] = cls

    @classmethod
    def from_body(cls: type[Message], body: dict[str, Any]) -> Message:
        """Build from a decoded body: required keys must be there, optional ones default."""
        values: dict[str, Any] = {}
        for item in dataclasses.fields(cls):  # type: ignore[arg-type]
            if item.name in body:
                values[item.name] = body[item.name]
            elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise MessageError(f"{cls.TYPE.name} needs the field {item.name!r}", cls.ERROR_CODE)
        return cls(**values)

    def to_body(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    # -- checks for __post_init__, raising MessageError with this message's code ------------------
    def _fail(self, text: str, code: ReasonCode | None = None) -> MessageError:
        return MessageError(f"{self.TYPE.name} {text}", code or self.ERROR_CODE)

    def _int(self, name: str, low: int, high: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self._fail(f"{name} must be an integer from {low} to {high}, got {shown(value)}")

    def _str(self, name: str, max_chars: int, min_chars: int = 0) -> None:
        value = getattr(self, name)
        if not isinstance(value, str) or not min_chars <= len(value) <= max_chars:
            raise self._fail(f"{name} must be a string of {min_chars} to {max_chars} characters, got {shown(value)}")

    def _bool(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, bool):
            raise self._fail(f"{name} must be true or false, got {shown(value)}")

    def _clipped_text(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, str):
            raise self._fail(f"{name} must be a string, got {shown(value)}")
        object.__setattr__(self, name, clip(value))


# -- federation -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hello(ControlMessage):
    """worker -> chief, the first frame of a connection. A HELLO without "protocol" is version 1;
    without "compression", "none" (an older worker sends full float32 weights). compression is the
    worker's federation.compression in its canonical spelling; the chief compares it with its own.
    broadcast, likewise, is its federation.broadcast_compression (absent means "none");
    secure_aggregation its federation.secure_aggregation (absent means false)."""

    TYPE = MessageType.HELLO
    ERROR_CODE = ReasonCode.BAD_HELLO
    num_samples: int
    protocol: int = PROTOCOL_VERSION
    compression: str = "none"
    broadcast: str = "none"
    secure_aggregation: bool = False

    def __post_init__(self) -> None:
        self._int("num_samples", 0, MAX_SAMPLES)
        self._int("protocol", 0, MAX_U32)
        if self.protocol not in SUPPORTED_PROTOCOLS:
            raise self._fail(
                f"speaks protocol {self.protocol}; this side speaks {sorted(SUPPORTED_PROTOCOLS)}",
                ReasonCode.UNSUPPORTED_PROTOCOL,
            )
        self._str("compression", MAX_COMPRESSION_CHARS, min_chars=1)
        self._str("broadcast", MAX_COMPRESSION_CHARS, min_chars=1)
        self._bool("secure_aggregation")

    def to_body(self) -> dict[str, Any]:
        body = super().to_body()
        if body["compression"] == "none":  # the default: a version-1 HELLO, byte for byte
            del body["compression"]
        if body["broadcast"] == "none":
            del body["broadcast"]
        if not body["secure_aggregation"]:
            del body["secure_aggregation"]
        return body


@dataclass(frozen=True)
class Welcome(ControlMessage):
    """chief -> worker: the worker's task index (the chief is 0), participants, the current round."""

    TYPE = MessageType.WELCOME
    task_index: int
    total: int
    round: int
    chief: str

    def __post_init__(self) -> None:
        self._int("task_index", 0, 2**31 - 1)
        self._int("total", 1, 2**31 - 1)
        self._int("round", 0, MAX_U32)
        self._str("chief", MAX_NAME_CHARS, min_chars=1)
        if self.task_index >= self.total:  # no shard to train on: refused here, not deep in a trainer
            raise self._fail(f"task_index {self.task_index} must be below total {self.total}")


@dataclass(frozen=True)
class _Refusal(ControlMessage):
    """A code for programs and a reason for people (clipped to MAX_TEXT_CHARS, never parsed)."""

    code: ReasonCode
    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.code, ReasonCode):
            raise self._fail(f"code must be a ReasonCode, got {shown(self.code)}")
        self._clipped_text("reason")

    @classmethod
    def from_body(cls: type[Message], body: dict[str, Any]) -> Message:
        raw = body.get("code", ReasonCode.OTHER.value)  # absent: a peer from before the codes
        if not isinstance(raw, str):
            raise MessageError(f"{cls.TYPE.name} code must be a string, got {shown(raw)}")
        try:
            code = ReasonCode(raw)
        except ValueError:  # a code from a newer peer
            code = ReasonCode.OTHER
        return cls(code=code, reason=body.get("reason", ""))  # type: ignore[call-arg]

    def to_body(self) -> dict[str, Any]:
        return {"code": self.code.value, "reason": self.reason}


@dataclass(frozen=True)
class Reject(_Refusal):
    """chief -> worker: the update of the frame's round was refused; the connection stays up."""

    TYPE = MessageType.REJECT


@dataclass(frozen=True)
class Bye(_Refusal):
    """Either side, before closing: why. A joining worker stops for good when code.permanent."""

    TYPE = MessageType.BYE


# -- ledger deliveries on the federation port -----------------------------------------------------
@dataclass(frozen=True)
class LedgerPush(ControlMessage):
    """worker -> chief: transfer records to append. Each record's fields are the ledger's to check."""

    TYPE = MessageType.LEDGER_PUSH
    records: tuple[dict[str, Any], ...]

    def __post_init__(self) -> None:
        records = self.records
        if not isinstance(records, list | tuple) or len(records) > MAX_LEDGER_RECORDS:
            raise self._fail(f"records must be a list of at most {MAX_LEDGER_RECORDS}, got {shown(records)}")
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise self._fail(f"record {index} must be an object, got {shown(record)}")
        object.__setattr__(self, "records", tuple(records))

    def to_body(self) -> dict[str, Any]:
        return {"records": list(self.records)}


@dataclass(frozen=True)
class LedgerAck(ControlMessage):
    """chief -> worker: what became of each pushed record, or an error refusing the whole push."""

    TYPE = MessageType.LEDGER_ACK
    accepted: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()  # (record id, reason)
    height: int = 0
    error: str | None = None

    def __post_init__(self) -> None:
        for name in ("accepted", "duplicates"):
            object.__setattr__(self, name, self._ids(name, getattr(self, name)))
        refused = self.refused
        if not isinstance(refused, list | tuple) or len(refused) > MAX_LEDGER_RECORDS:
            raise self._fail(f"refused must be a list of at most {MAX_LEDGER_RECORDS}, got {shown(refused)}")
        pairs = []
        for given in refused:
            # the wire form is {"id", "reason"}; callers may give (id, reason)
            item = (given.get("id"), given.get("reason")) if isinstance(given, dict) else given
            if not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[1], str):
                raise self._fail(f"refused items need an id and a reason, got {shown(item)}")
            pairs.append((self._ids("refused", [item[0]])[0], clip(item[1])))
        object.__setattr__(self, "refused", tuple(pairs))
        self._int("height", 0, MAX_I63)
        if self.error is not None:
            self._clipped_text("error")

    def _ids(self, name: str, values: object) -> tuple[str, ...]:
        if not isinstance(values, list | tuple) or len(values) > MAX_LEDGER_RECORDS:
            raise self._fail(f"{name} must be a list of at most {MAX_LEDGER_RECORDS} ids, got {shown(values)}")
        for value in values:
            if not isinstance(value, str) or not 0 < len(value) <= MAX_RECORD_ID_CHARS:
                raise self._fail(f"{name} holds {shown(value)}, not a record id")
        return tuple(values)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> LedgerAck:
        if "error" in body:  # the whole push was refused; nothing else in the body counts
            return cls(error=body["error"])
        for key in ("accepted", "duplicates", "refused", "height"):
            if key not in body:
                raise MessageError(f"LEDGER_ACK needs the field {key!r}")
        return cls(body["accepted"], body["duplicates"], body["refused"], body["height"])

    def to_body(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        return {
            "accepted": list(self.accepted),
            "duplicates": list(self.duplicates),
            "refused": [{"id": rid, "reason": reason} for rid, reason in self.refused],
            "height": self.height,
        }


# -- encoding and decoding ------------------------------------------------------------------------
def encode_message(message: ControlMessage, round_: int = 0, flags: Flags = Flags.NONE) -> bytes:
    """One whole frame, ready for Connection.send([...])."""
    return encode_control_frame(message.TYPE, round_, message.to_body(), flags)


def decode_body(message_type: MessageType, body: dict[str, Any]) -> ControlMessage:
    cls = _CLASSES.get(message_type)
    if cls is None:
        raise ProtocolError(f"{message_type.name} is not a control message")
    return cls.from_body(body)


def decode_message(frame: Frame) -> ControlMessage:
    """The typed message of a control frame; MessageError names what is wrong with its body."""
    return decode_body(frame.type, frame.body)


def expect(frame: Frame, cls: type[Message]) -> Message:
    """frame as a cls message, or ProtocolError if it is another type or its body is bad."""
    if frame.type is not cls.TYPE:
        raise MessageError(f"expected {cls.TYPE.name}, got {frame.type.name}", cls.ERROR_CODE)
    return cls.from_body(frame.body)

