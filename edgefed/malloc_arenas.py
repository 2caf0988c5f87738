"""Bounding glibc's malloc arenas in the chief's process, and fixing its mmap threshold.

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
M_MMAP_THRESHOLD = -3
CHIEF_ARENAS = 2
# Blocks this large or larger are mmapped and given back to the kernel when freed. glibc's default
# threshold rises to the size of each mmapped block freed (up to 32 MiB), after which model-sized
# tensors come from the heap and stay resident once freed: the chief's peak RSS then reflects its
# history (each round's mean, the previous global) instead of what is alive. Measured at 16 MB,
# N = 2 / 8 / 32 (docs/benchmarks.md): 138 / 137 / 153 MB with glibc's default, 118 / 121 / 124 MB
# with 4 MiB. Setting it also switches off glibc's dynamic trim threshold, left at 128 KiB: a freed
# block at the heap's top goes back to the kernel, so a temporary made per chunk is faulted in and
# zeroed again every time. Hot loops reuse their chunk buffers instead (running_mean.Scratch).
CHIEF_MMAP_THRESHOLD = 4 << 20


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


def fix_mmap_threshold(size: int = CHIEF_MMAP_THRESHOLD) -> bool:
    """Serve blocks of size bytes or more with mmap, for good (a fixed threshold, never raised by
    glibc); True when glibc accepted it."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(size)))
    except (OSError, AttributeError):
        return False
