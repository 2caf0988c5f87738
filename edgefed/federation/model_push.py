"""The exported model, chief -> workers, over the federation connection (issue 16: the model on the Pi).

The chief sends the file as the p2p codec's typed file messages, all in one send so no other frame
interleaves: FILE_OFFER (name, exact size, sha256), FILE_CHUNK frames of at most CHUNK_BYTES, FILE_DONE.
The worker refuses an offer over its limit (federation.max_model_bytes) before any data, writes the
chunks to a temporary file, checks size and digest, and only then replaces the last good model; a
bad transfer leaves the last good model in place. Nothing is answered: the model is a convenience
for inference on the worker, never part of training.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import IO

from edgefed.fsutil import atomic_write_json
from edgefed.wire import (
    FileDone,
    FileOffer,
    Frame,
    MessageType,
    ProtocolError,
    encode_message,
    encode_raw_frame,
    expect,
)

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # well under the codec's max_raw_bytes (8 MiB)
MODEL_FILE = "federated.tflite"  # in STATE_DIR/model/, beside MODEL_INFO
MODEL_INFO = "federated.json"  # sha256, size, round, chief of the model last received whole
MODEL_FRAMES = frozenset({MessageType.FILE_OFFER, MessageType.FILE_CHUNK, MessageType.FILE_DONE})


def model_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "model"


def model_frames(data: bytes, round_number: int, name: str = "model.tflite") -> list[bytes | memoryview]:
    """Every frame of one model transfer, ready for one Connection.send."""
    view = memoryview(data)
    offer = FileOffer(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    parts: list[bytes | memoryview] = [encode_message(offer, round_number)]
    for start in range(0, len(data), CHUNK_BYTES):
        parts.extend(encode_raw_frame(MessageType.FILE_CHUNK, round_number, view[start:start + CHUNK_BYTES]))
    parts.append(encode_message(FileDone(), round_number))
    return parts


class ModelReceiver:
    """A worker's end: feed() every FILE_* frame; it keeps STATE_DIR/model/federated.tflite current."""

    def __init__(self, state_dir: str | Path, max_bytes: int, chief: str = "") -> None:
        self.directory = model_dir(state_dir)
        self.max_bytes = max_bytes
        self.chief = chief
        self._offer: FileOffer | None = None
        self._round = 0
        self._file: IO[bytes] | None = None  # the incoming model, beside the kept one (same filesystem)
        self._hash = hashlib.sha256()
        self._received = 0
        self.completed = 0  # models received whole and kept

    def feed(self, frame: Frame) -> bool:
        """Take one FILE_OFFER / FILE_CHUNK / FILE_DONE; True when a model was just kept. ProtocolError
        for frames out of order or over the offer (the connection is then not to be trusted)."""
        if frame.type is MessageType.FILE_OFFER:
            self._start(expect(frame, FileOffer), frame.round)
        elif frame.type is MessageType.FILE_CHUNK:
            self._chunk(frame)
        elif frame.type is MessageType.FILE_DONE:
            expect(frame, FileDone)
            return self._finish()
        else:
            raise ProtocolError(f"{frame.type.name} is not part of a model transfer")
        return False

    def _start(self, offer: FileOffer, round_number: int) -> None:
        self._discard()
        if offer.size > self.max_bytes:
            raise ProtocolError(f"the chief offers a {offer.size}-byte model; federation.max_model_bytes is "
                                f"{self.max_bytes}")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._offer, self._round, self._received = offer, round_number, 0
        self._hash = hashlib.sha256()
        self._file = tempfile.NamedTemporaryFile(dir=self.directory, prefix=".incoming-", delete=False)  # noqa: SIM115

    def _chunk(self, frame: Frame) -> None:
        if self._offer is None or self._file is None:
            raise ProtocolError("FILE_CHUNK without a model offer")
        payload = frame.raw
        self._received += len(payload)
        if self._received > self._offer.size:
            self._discard()
            raise ProtocolError("the chief sent more model bytes than it offered")
        self._hash.update(payload)
        self._file.write(payload)

    def _finish(self) -> bool:
        offer, file = self._offer, self._file
        if offer is None or file is None:
            raise ProtocolError("FILE_DONE without a model offer")
        digest = self._hash.hexdigest()
        if self._received != offer.size or digest != offer.sha256:
            self._discard()
            log.warning("model from %s refused: %d of %d bytes, sha256 %s (offered %s); the last good one stays",
                        self.chief, self._received, offer.size, digest, offer.sha256)
            return False
        file.flush()
        os.fsync(file.fileno())
        file.close()
        os.replace(file.name, self.directory / MODEL_FILE)
        info = {"sha256": digest, "size": offer.size, "round": self._round, "chief": self.chief, "name": offer.name}
        atomic_write_json(self.directory / MODEL_INFO, info)
        self._offer, self._file = None, None
        self.completed += 1
        log.info("model of round %d received from %s (%d bytes, sha256 %s)", self._round, self.chief,
                 offer.size, digest)
        return True

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            Path(self._file.name).unlink(missing_ok=True)
        self._offer, self._file = None, None

    def close(self) -> None:
        self._discard()

