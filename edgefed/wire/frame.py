"""Frame header, message types and decoding limits."""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass
from typing import Any

from edgefed.wire.errors import ProtocolError

MAGIC = b"EFED"
VERSION = 1
_HEADER = struct.Struct("!4sBBHIQ")
HEADER_SIZE = _HEADER.size  # 20 bytes


class MessageType(enum.IntEnum):
    """Every message the protocol knows; the payload kind of each is fixed (see payload_kind)."""

    # federation
    HELLO = 1  # worker -> chief: who I am, how many samples I train on
    WELCOME = 2  # chief -> worker: task index, total participants, current round
    WEIGHTS = 3  # chief -> worker: the global weights of a round
    UPDATE = 4  # worker -> chief: local weights and sample count for a round
    REJECT = 5  # chief -> worker: an update was refused, with the reason
    BYE = 6  # either side: orderly goodbye, with the reason
    # ledger deliveries travel on the federation port as their own messages
    LEDGER_PUSH = 7
    LEDGER_ACK = 8
    # p2p chat and file transfer
    CHAT = 16
    FILE_OFFER = 17
    FILE_ACCEPT = 18
    FILE_CHUNK = 19
    FILE_DONE = 20
    FILE_RESULT = 21


class PayloadKind(enum.Enum):
    CONTROL = "control"  # a small JSON object
    TENSORS = "tensors"  # tensor header + raw array bytes
    RAW = "raw"  # opaque bytes (file chunks)


_KINDS: dict[MessageType, PayloadKind] = {
    MessageType.WEIGHTS: PayloadKind.TENSORS,
    MessageType.UPDATE: PayloadKind.TENSORS,
    MessageType.FILE_CHUNK: PayloadKind.RAW,
}


def payload_kind(message_type: MessageType) -> PayloadKind:
    return _KINDS.get(message_type, PayloadKind.CONTROL)


class Flags(enum.IntFlag):
    NONE = 0
    FINAL = 1  # WEIGHTS: training is over, these are the final global weights


@dataclass(frozen=True)
class Limits:
    """Bounds enforced while decoding, before any memory is committed."""

    max_frame_bytes: int = 1 << 30  # 1 GiB: a model bigger than this is not an edge model
    max_control_bytes: int = 1 << 20
    max_raw_bytes: int = 8 << 20
    max_tensors: int = 4096
    max_ndim: int = 8

    def __post_init__(self) -> None:
        for name in ("max_frame_bytes", "max_control_bytes", "max_raw_bytes", "max_tensors", "max_ndim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class FrameHeader:
    type: MessageType
    round: int
    length: int
    flags: Flags = Flags.NONE


def encode_header(header: FrameHeader) -> bytes:
    if not 0 <= header.round < 2**32:
        raise ValueError(f"round {header.round} does not fit in 32 bits")
    return _HEADER.pack(MAGIC, VERSION, int(header.type), int(header.flags), header.round, header.length)


def decode_header(data: bytes | memoryview, limits: Limits) -> FrameHeader:
    """Parse and check one frame header (exactly HEADER_SIZE bytes)."""
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"frame header must be {HEADER_SIZE} bytes, got {len(data)}")
    magic, version, type_code, flags, round_, length = _HEADER.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {bytes(magic)!r}: not an edgefed peer (expected {MAGIC!r})")
    if version != VERSION:
        raise ProtocolError(f"unsupported protocol version {version} (this side speaks {VERSION})")
    try:
        message_type = MessageType(type_code)
    except ValueError:
        raise ProtocolError(f"unknown message type {type_code}") from None
    try:
        frame_flags = Flags(flags)
    except ValueError:
        raise ProtocolError(f"unknown flags {flags:#x} on {message_type.name}") from None
    kind = payload_kind(message_type)
    limit = {
        PayloadKind.CONTROL: limits.max_control_bytes,
        PayloadKind.RAW: limits.max_raw_bytes,
        PayloadKind.TENSORS: limits.max_frame_bytes,
    }[kind]
    if length > limit:
        raise ProtocolError(
            f"{message_type.name} declares {length} payload bytes, over the limit of {limit}"
        )
    return FrameHeader(message_type, round_, length, frame_flags)


def encode_control_frame(
    message_type: MessageType, round_: int, body: dict[str, Any], flags: Flags = Flags.NONE
) -> bytes:
    if payload_kind(message_type) is not PayloadKind.CONTROL:
        raise ValueError(f"{message_type.name} does not carry a control payload")
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return encode_header(FrameHeader(message_type, round_, len(payload), flags)) + payload


def encode_raw_frame(message_type: MessageType, round_: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
    if payload_kind(message_type) is not PayloadKind.RAW:
        raise ValueError(f"{message_type.name} does not carry a raw payload")
    return [encode_header(FrameHeader(message_type, round_, len(payload))), payload]


def decode_control(payload: bytes | bytearray | memoryview, message_type: MessageType) -> dict[str, Any]:
    try:
        body = json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{message_type.name} payload is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{message_type.name} payload must be a JSON object, got {type(body).__name__}")
    return body
