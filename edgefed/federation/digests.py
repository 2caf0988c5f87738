"""Payload digests for the ledger's records, computed beside the send rather than before it."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from edgefed.wire import FrameStream, payload_sha256

_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="edgefed-sha256")


def digest_while_sending(parts: Sequence[bytes | memoryview] | FrameStream, enabled: bool) -> Future[str]:
    """sha256 of a frame's payload, computed on another core while the caller sends it (hashlib
    releases the GIL); a finished empty digest when nothing records it (no ledger). A FrameStream
    hashes its buffers as it produces them: its digest is done once it has been sent."""
    if isinstance(parts, FrameStream):
        streamed: Future[str] = Future()
        parts.hashing = enabled
        parts.on_done = streamed.set_result
        return streamed
    if enabled:
        return _HASHING.submit(payload_sha256, parts)
    done: Future[str] = Future()
    done.set_result("")
    return done
