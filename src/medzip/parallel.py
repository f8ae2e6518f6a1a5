"""Worker processes for chunk jobs, safe to use from many threads at once.

Per-call state never lives in module globals of the calling process: a call hands its state to
its own pool through the pool's initializer. With ``fork`` (Linux) the state is inherited by the
children without pickling (copy-on-write for the volume, a shared mapping for the decoder's
output); elsewhere ``spawn`` pickles it once per worker. The only module global,
``_WORKER_STATE``, is written exclusively inside pool workers, each of which serves one pool.

Workers die with the process that started them (``PR_SET_PDEATHSIG`` on Linux), so a
``kill -9`` of the CLI never leaves them running; an exception or interrupt in the caller
terminates them at once instead of waiting for their current chunk.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

from .forksafe import GUARD

__all__ = ["resolve_workers", "start_method", "run_jobs"]

# Environment override of the start method, for tests and for platforms where fork is unsafe.
START_METHOD_ENV = "MEDZIP_START_METHOD"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h

_WORKER_STATE = None  # set only in pool worker processes (see _init_worker)


def resolve_workers(workers: int | None) -> int:
    """``0``/``None``/negative: every core this process may run on (CPU affinity respected)."""
    if workers is not None and int(workers) > 0:
        return int(workers)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def start_method() -> str:
    """``fork`` where it exists (cheap: nothing is pickled), else ``spawn``."""
    wanted = os.environ.get(START_METHOD_ENV, "")
    methods = multiprocessing.get_all_start_methods()
    if wanted in methods:
        return wanted
    return "fork" if "fork" in methods else "spawn"


def _die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no prctl: workers still end when their pool does
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    # The parent handles Ctrl-C / SIGTERM and terminates the pool; workers must not print
    # their own KeyboardInterrupt tracebacks meanwhile.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _init_worker(parent_pid: int, state) -> None:
    global _WORKER_STATE
    _die_with_parent(parent_pid)
    _WORKER_STATE = state


def _call(fn, job):
    return fn(_WORKER_STATE, job)


def _terminate(pool: ProcessPoolExecutor) -> None:
    pool.shutdown(wait=False, cancel_futures=True)
    # ProcessPoolExecutor has no public terminate() before Python 3.14; its worker table is
    # the only handle on processes that are still busy with a chunk.
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.kill()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.join(5)


def run_jobs(fn, state, jobs: list, workers: int, on_done=None, prepare=None) -> list:
    """``[fn(state, job) for job in jobs]``, in order, on up to ``workers`` processes.

    ``on_done(i)`` is called as job ``i`` completes (progress). ``prepare()`` runs in this
    process before a pool is started (e.g. compile kernels once so forked workers share them).
    ``state`` must be picklable when the start method is ``spawn``.
    """
    if workers <= 1 or len(jobs) <= 1:
        out = []
        for i, job in enumerate(jobs):
            out.append(fn(state, job))
            if on_done:
                on_done(i)
        return out
    if prepare is not None:
        prepare()
    ctx = multiprocessing.get_context(start_method())
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx,
                               initializer=_init_worker, initargs=(os.getpid(), state))
    try:
        with GUARD.forking():  # the first submit forks every worker (forksafe.py)
            futures = [pool.submit(_call, fn, job) for job in jobs]
        out = []
        for i, f in enumerate(futures):
            out.append(f.result())
            if on_done:
                on_done(i)
    except BaseException:
        _terminate(pool)
        raise
    pool.shutdown(wait=True)
    return out
