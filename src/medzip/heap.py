"""Hand freed heap memory back to the system (glibc ``malloc_trim``; a no-op elsewhere).

glibc keeps memory freed by other threads in their own malloc arenas, resident, after those
threads end: the encoder's threaded fit (predictors/sums.py) left ~120 MB of such memory in a
clinical CT's encode, which its worker processes then share, pushing the peak over the memory
budget. The benchmark's peak-memory probe also uses it, so that reuse of freed memory shows.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to hand back
        return None


def release_free_heap() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
