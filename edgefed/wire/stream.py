"""A tensor frame sent as it is produced: its encoded tensors' data is made part by part while the
transport writes it (`EncodedStream`), so a sender never holds a whole encoded update.

The bytes are exactly those `encode_tensor_frame` would give for the same tensors encoded whole:
the header is built from specs alone (every encoding's size follows from its shape and count).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from edgefed.wire.encodings import EncodedStream, EncodedTensor
from edgefed.wire.frame import HEADER_SIZE, Flags, FrameHeader, MessageType, PayloadKind, encode_header, payload_kind
from edgefed.wire.tensors import Tensor, encode_tensor_header, little_endian_contiguous


class FrameStream:
    """One frame's buffers, produced while iterated; iterate it once (a transport's send does).

    hashing: also take the payload's sha256 on the way; on_done(hexdigest, "" if not hashing) is
    called once the last buffer was handed over."""

    def __init__(self, head: bytes, tensors: Sequence[Tensor | EncodedStream], length: int) -> None:
        self._head = head
        self._tensors = list(tensors)
        self._length = length
        self._used = False
        self.hashing = False
        self.on_done: Callable[[str], None] | None = None

    def __iter__(self) -> Iterator[bytes | memoryview]:
        if self._used:
            raise RuntimeError("a frame stream is produced once")
        self._used = True
        digest = hashlib.sha256() if self.hashing else None
        if digest is not None:
            digest.update(memoryview(self._head)[HEADER_SIZE:])
        yield self._head
        produced = len(self._head)
        for tensor in self._tensors:
            for part in _data_parts(tensor):
                if not part.nbytes:
                    continue  # an empty message means "closed" on some transports
                view = memoryview(part).cast("B")  # type: ignore[arg-type]
                if digest is not None:
                    digest.update(view)
                produced += view.nbytes
                if produced > self._length + HEADER_SIZE:
                    raise ValueError("an encoded stream produced more bytes than its spec says")
                yield view
        if produced != self._length + HEADER_SIZE:
            raise ValueError("an encoded stream produced fewer bytes than its spec says")
        if self.on_done is not None:
            self.on_done("" if digest is None else digest.hexdigest())


def _data_parts(tensor: Tensor | EncodedStream) -> Iterator[np.ndarray]:
    if isinstance(tensor, EncodedStream):
        for part in tensor.produce():
            yield np.ascontiguousarray(part, part.dtype.newbyteorder("<")).reshape(-1)
    elif isinstance(tensor, EncodedTensor):
        yield from tensor.parts()
    else:
        yield little_endian_contiguous(tensor)


def stream_tensor_frame(message_type: MessageType, round_: int, tensors: Sequence[Tensor | EncodedStream],
                        num_samples: int, flags: Flags = Flags.NONE) -> FrameStream:
    """The frame `encode_tensor_frame` makes of these tensors, as a stream (see FrameStream)."""
    if payload_kind(message_type) is not PayloadKind.TENSORS:
        raise ValueError(f"{message_type.name} does not carry tensors")
    prepared = [t if isinstance(t, EncodedTensor | EncodedStream) else little_endian_contiguous(t) for t in tensors]
    tensor_header = encode_tensor_header(prepared, num_samples)
    length = len(tensor_header) + sum(t.nbytes for t in prepared)
    return FrameStream(encode_header(FrameHeader(message_type, round_, length, flags)) + tensor_header,
                       prepared, length)
