"""Frame header, message types and decoding limits."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

from edgefed.wire.control import decode_control_body, encode_control
from edgefed.wire.errors import ProtocolError

MAGIC = b"EFED"
VERSION = 1
_HEADER = struct.Struct("!4sBBHIQ")
HEADER_SIZE = _HEADER.size  # 20 bytes
MAX_SAMPLES = 10**12  # a sample count (HELLO, tensor frames) above this is not a real data set


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
    # secure aggregation (docs/privacy.md): the extra phases of a round; the masked update is an UPDATE
    SECAGG_ADVERT = 24  # worker -> chief: this round's public keys, signed
    SECAGG_ROSTER = 25  # chief -> worker: every advert of the round and the threshold
    SECAGG_SHARES = 26  # worker -> chief: encrypted shares, one per roster peer
    SECAGG_INBOX = 27  # chief -> worker: the shares addressed to it
    SECAGG_UNMASK_REQUEST = 28  # chief -> worker: who sent a masked update
    SECAGG_UNMASK = 29  # worker -> chief: the shares that remove the masks


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


# Checked by hand: on Python 3.11 Flags(value) keeps unknown bits instead of raising.
KNOWN_FLAGS = int(Flags.FINAL)


@dataclass(frozen=True)
class Limits:
    """Bounds enforced while decoding, before any memory is committed (docs/protocol.md, Limits)."""

    max_frame_bytes: int = 1 << 30  # 1 GiB: a model bigger than this is not an edge model
    max_control_bytes: int = 1 << 20
    max_raw_bytes: int = 8 << 20
    max_tensors: int = 4096
    max_ndim: int = 8
    max_json_depth: int = 16  # control bodies nest 3 levels today (a LEDGER_PUSH's records)
    max_json_number_chars: int = 40  # any 64-bit integer or shortest-repr float fits in 24
    max_samples: int = MAX_SAMPLES  # a tensor frame's sample count: it weighs the update in averages

    def __post_init__(self) -> None:
        for name in (
            "max_frame_bytes", "max_control_bytes", "max_raw_bytes", "max_tensors", "max_ndim",
            "max_json_depth", "max_json_number_chars", "max_samples",
        ):
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
    if flags & ~KNOWN_FLAGS:
        raise ProtocolError(f"unknown flags {flags & ~KNOWN_FLAGS:#x} on {message_type.name}")
    frame_flags = Flags(flags)
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
    payload = encode_control(body)
    return encode_header(FrameHeader(message_type, round_, len(payload), flags)) + payload


def encode_raw_frame(message_type: MessageType, round_: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
    if payload_kind(message_type) is not PayloadKind.RAW:
        raise ValueError(f"{message_type.name} does not carry a raw payload")
    return [encode_header(FrameHeader(message_type, round_, len(payload))), payload]


def decode_control(
    payload: bytes | bytearray | memoryview, message_type: MessageType, limits: Limits | None = None
) -> dict[str, Any]:
    """The JSON object of a control payload; ProtocolError for anything else or past the limits."""
    limits = limits or Limits()
    return decode_control_body(payload, message_type.name, limits.max_json_depth, limits.max_json_number_chars)
