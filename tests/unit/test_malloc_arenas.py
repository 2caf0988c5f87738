"""The chief's malloc arena bound (edgefed/malloc_arenas.py): counted with glibc's own malloc_info in
a fresh process whose threads each allocate, with and without the bound."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from edgefed.malloc_arenas import CHIEF_ARENAS

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")

# Eight threads allocate at once (a barrier holds each with its block), then malloc_info reports one
# <heap> element per arena.
COUNT_ARENAS = """
import ctypes, ctypes.util, os, sys, tempfile, threading
sys.path.insert(0, sys.argv[2])
from edgefed.malloc_arenas import limit_malloc_arenas
if sys.argv[1] == "bounded":
    assert limit_malloc_arenas()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
barrier = threading.Barrier(8)
def allocate():
    block = libc.malloc(1 << 16)
    barrier.wait()
    libc.free(ctypes.c_void_p(block))
threads = [threading.Thread(target=allocate) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
with tempfile.NamedTemporaryFile(delete=False) as named:
    path = named.name
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
print(open(path).read().count("<heap nr="))
os.unlink(path)
"""


def _arenas(mode: str) -> int:
    repo = str(Path(__file__).resolve().parents[2])
    run = subprocess.run([sys.executable, "-c", COUNT_ARENAS, mode, repo], capture_output=True, text=True,
                         timeout=60, check=True)
    return int(run.stdout.strip())


def test_threads_get_arenas_of_their_own_unless_bounded() -> None:
    unbounded = _arenas("unbounded")
    assert unbounded > CHIEF_ARENAS  # what the bound is for: a new arena per allocating thread
    assert _arenas("bounded") <= CHIEF_ARENAS


# A model-sized block freed twice: after the first (mmapped) one, glibc's default threshold rises and
# the second comes from the heap and stays resident once freed; a fixed threshold gives both back.
FREED_STAYS = """
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np
from edgefed.malloc_arenas import fix_mmap_threshold
if sys.argv[1] == "fixed":
    assert fix_mmap_threshold()
def resident() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096
before = resident()
for _ in range(3):
    block = np.ones(8 << 17)  # 8 MiB of float64, every page touched
    del block
print(resident() - before)
"""


def _kept_after_free(mode: str) -> int:
    root = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", FREED_STAYS, mode, root], capture_output=True, text=True,
                         check=True, timeout=60)
    return int(out.stdout.strip())


def test_a_fixed_mmap_threshold_gives_freed_model_sized_blocks_back() -> None:
    fixed, default = _kept_after_free("fixed"), _kept_after_free("default")
    assert fixed < 2 << 20  # nothing model-sized kept
    assert default >= fixed + (4 << 20)  # what the default threshold keeps, so the test can tell
