"""Bounding glibc's malloc arenas in the chief's process.

glibc gives each thread that meets contention an arena of its own and keeps freed memory in it. The
chief's connection and send threads each touch model-sized buffers (TLS records, frame decoding), so
every arena kept megabytes: the chief's peak RSS grew with the number of workers (at 64 MB, 404 MB for
2 workers and 628 MB for 32) where one shared pool of staging buffers should keep it flat. Two arenas
keep it flat (docs/benchmarks.md). mallopt(M_ARENA_MAX) applies to arenas created after the call, so
it runs before the chief starts any thread. Elsewhere (musl, macOS) there is nothing to bound.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's malloc.h
CHIEF_ARENAS = 2


def limit_malloc_arenas(arenas: int = CHIEF_ARENAS) -> bool:
    """Cap this process's malloc arenas at `arenas`; True when glibc accepted it."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        accepted = bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))
    except (OSError, AttributeError):
        return False
    if not accepted:
        log.debug("glibc refused mallopt(M_ARENA_MAX, %d)", arenas)
    return accepted
