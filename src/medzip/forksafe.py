"""No fork while one of medzip's threads is inside OpenBLAS.

numpy's OpenBLAS shuts its worker threads down in a ``pthread_atfork`` handler. When a thread
forks (a chunk-worker pool, ``parallel.run_jobs``) while another thread of the same process is
in, or just leaving, a threaded BLAS call, that handler can wait forever for a BLAS thread while
the other thread waits for the GIL the forking thread holds (seen: ``test_concurrency``'s eight
threads, one of them starting a pool while another fitted least squares, hung the suite;
OpenBLAS issues #2270 and #5520 are of this family). medzip's one threaded BLAS call is the
exact float Gram product of the least-squares fits (``intmath.exact_gram``; the network's gate
sums stay below OpenBLAS's threading threshold and run on the calling thread, ``intlstm``). It
runs inside ``GUARD.blas()`` and pools start inside ``GUARD.forking()``: many BLAS sections at
once, a fork only when none is open, and waiting forks go first so that busy threads cannot
starve them. A forked child gets a fresh guard. BLAS calls of other code in the process are
outside medzip's reach.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

__all__ = ["GUARD"]


class _ForkGuard:
    def __init__(self):
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0  # open BLAS sections
        self._forking = False
        self._waiting = 0  # forks waiting for the open sections to close

    @contextmanager
    def blas(self):
        with self._cond:
            while self._forking or self._waiting:
                self._cond.wait()
            self._inside += 1
        try:
            yield
        finally:
            with self._cond:
                self._inside -= 1
                if not self._inside:
                    self._cond.notify_all()

    @contextmanager
    def forking(self):
        with self._cond:
            self._waiting += 1
            while self._forking or self._inside:
                self._cond.wait()
            self._waiting -= 1
            self._forking = True
        try:
            yield
        finally:
            with self._cond:
                self._forking = False
                self._cond.notify_all()


GUARD = _ForkGuard()
if hasattr(os, "register_at_fork"):  # the child's copy may be mid-fork or hold the lock
    os.register_at_fork(after_in_child=GUARD._reset)
