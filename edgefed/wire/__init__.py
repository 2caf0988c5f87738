"""Sans-IO wire codec: pure functions and a state machine over bytes, no sockets.

Frame layout (network byte order)::

    magic "EFED" | version u8 | type u8 | flags u16 | round u32 | payload length u64 | payload

Tensor payloads carry a small header (count, sample count, dtype and shape of each tensor)
followed by the raw little-endian bytes of every tensor, so a receiver can allocate the final
arrays up front and read straight into them. A tensor may instead be encoded (fp16, int8 blocks,
top-k sparse: edgefed/wire/encodings.py), checked while decoding.
"""

from edgefed.wire.encodings import (
    INT8_BLOCK,
    MAX_SCALE,
    SUPPORTED_ENCODINGS,
    EncodedStream,
    EncodedTensor,
    Encoding,
    all_finite,
    has_non_finite,
)
from edgefed.wire.errors import ProtocolError
from edgefed.wire.frame import (
    HEADER_SIZE,
    MAGIC,
    VERSION,
    Flags,
    FrameHeader,
    Limits,
    MessageType,
    PayloadKind,
    decode_header,
    encode_control_frame,
    encode_header,
    encode_raw_frame,
    payload_kind,
)
from edgefed.wire.messages import (
    PROTOCOL_VERSION,
    Bye,
    ControlMessage,
    Hello,
    LedgerAck,
    LedgerPush,
    MessageError,
    ReasonCode,
    Reject,
    Welcome,
    decode_message,
    encode_message,
    expect,
)
from edgefed.wire.p2p_messages import Chat, FileAccept, FileDone, FileOffer, FileResult
from edgefed.wire.reader import Allocator, Destination, Frame, FrameReader, allocate_fresh, refuse_tensors
from edgefed.wire.secagg_messages import (
    SecAggAdvert,
    SecAggInbox,
    SecAggRoster,
    SecAggShares,
    SecAggUnmask,
    SecAggUnmaskRequest,
)
from edgefed.wire.stream import FrameStream, stream_tensor_frame
from edgefed.wire.tensors import (
    ALLOWED_DTYPES,
    Tensor,
    TensorSpec,
    decode_tensor,
    decode_tensor_header,
    encode_tensor_frame,
    payload_sha256,
    specs_of,
)

__all__ = [
    "ALLOWED_DTYPES",
    "HEADER_SIZE",
    "INT8_BLOCK",
    "MAGIC",
    "MAX_SCALE",
    "PROTOCOL_VERSION",
    "SUPPORTED_ENCODINGS",
    "VERSION",
    "Allocator",
    "Bye",
    "Chat",
    "ControlMessage",
    "Destination",
    "EncodedStream",
    "EncodedTensor",
    "Encoding",
    "FileAccept",
    "FileDone",
    "FileOffer",
    "FileResult",
    "Flags",
    "Frame",
    "FrameHeader",
    "FrameReader",
    "FrameStream",
    "Hello",
    "LedgerAck",
    "LedgerPush",
    "Limits",
    "MessageError",
    "MessageType",
    "PayloadKind",
    "ProtocolError",
    "ReasonCode",
    "Reject",
    "SecAggAdvert",
    "SecAggInbox",
    "SecAggRoster",
    "SecAggShares",
    "SecAggUnmask",
    "SecAggUnmaskRequest",
    "Tensor",
    "TensorSpec",
    "Welcome",
    "all_finite",
    "allocate_fresh",
    "decode_header",
    "decode_message",
    "decode_tensor",
    "decode_tensor_header",
    "encode_control_frame",
    "encode_header",
    "encode_message",
    "encode_raw_frame",
    "encode_tensor_frame",
    "expect",
    "has_non_finite",
    "payload_kind",
    "payload_sha256",
    "refuse_tensors",
    "specs_of",
    "stream_tensor_frame",
]
