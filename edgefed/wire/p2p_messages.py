"""Typed control messages of p2p chat and file transfer (docs/p2p.md); see messages.py for the rules.

Only the shape of each body is checked here; what a file name may be, or how big a file, is the
receiver's policy (edgefed/p2p), answered with a FILE_RESULT rather than a protocol error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgefed.wire.frame import MessageType
from edgefed.wire.messages import MAX_I63, MAX_TEXT_CHARS, ControlMessage, MessageError, shown

_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Chat(ControlMessage):
    TYPE = MessageType.CHAT
    text: str

    def __post_init__(self) -> None:
        self._str("text", MAX_TEXT_CHARS)


@dataclass(frozen=True)
class FileOffer(ControlMessage):
    """sender -> receiver: a file name, its exact size and the sha256 of its content."""

    TYPE = MessageType.FILE_OFFER
    name: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        self._str("name", MAX_TEXT_CHARS)
        self._int("size", 0, MAX_I63)
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise self._fail(f"sha256 must be 64 lowercase hex characters, got {shown(self.sha256)}")


@dataclass(frozen=True)
class FileAccept(ControlMessage):
    """receiver -> sender: send from offset (bytes already held from an interrupted transfer)."""

    TYPE = MessageType.FILE_ACCEPT
    offset: int

    def __post_init__(self) -> None:
        self._int("offset", 0, MAX_I63)


@dataclass(frozen=True)
class FileDone(ControlMessage):
    """sender -> receiver: every FILE_CHUNK has been sent."""

    TYPE = MessageType.FILE_DONE


@dataclass(frozen=True)
class FileResult(ControlMessage):
    """receiver -> sender: the outcome; a success names the file it confirms (the offer's fields).
    duplicate: the receiver already held this file, so nothing was sent (a program branches on it,
    never on the message)."""

    TYPE = MessageType.FILE_RESULT
    ok: bool
    message: str = ""
    retryable: bool = False
    offer: FileOffer | None = None
    duplicate: bool = False

    def __post_init__(self) -> None:
        self._bool("ok")
        self._bool("retryable")
        self._bool("duplicate")
        self._clipped_text("message")
        if self.offer is not None and not isinstance(self.offer, FileOffer):
            raise self._fail(f"offer must be a FileOffer, got {shown(self.offer)}")

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> FileResult:
        if "ok" not in body:
            raise MessageError("FILE_RESULT needs the field 'ok'")
        named = [key for key in ("name", "size", "sha256") if key in body]
        try:
            offer = FileOffer.from_body(body) if named else None
        except MessageError as exc:
            raise MessageError(f"FILE_RESULT names its file badly: {exc}") from None
        return cls(body["ok"], body.get("message", ""), body.get("retryable", False), offer,
                   body.get("duplicate", False))

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "message": self.message, "retryable": self.retryable}
        if self.offer is not None:
            body.update(self.offer.to_body())
        if self.duplicate:  # absent when false: bodies stay as they were
            body["duplicate"] = True
        return body
