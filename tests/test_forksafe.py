"""The fork guard (medzip/forksafe.py): a pool never forks while one of medzip's threads is in a
threaded BLAS call (OpenBLAS's fork handler then hung the suite), BLAS sections run together,
and a forked child starts with a fresh guard. Bounded waits only."""
from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest

from medzip.forksafe import GUARD
from medzip.intmath import exact_gram


def _later(fn):
    done = threading.Event()

    def run():
        fn()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


def _held(section):
    """A thread that opens ``section()`` (a guard context) and holds it until released:
    ``(entered, release, done)`` events."""
    entered, release = threading.Event(), threading.Event()

    def hold():
        with section():
            entered.set()
            release.wait(10)

    return entered, release, _later(hold)


def test_fork_waits_for_open_blas_sections_and_sections_share():
    inside, leave, first = _held(GUARD.blas)
    assert inside.wait(5)
    with GUARD.blas():  # a second section opens while the first is open
        pass
    forking, release, forked = _held(GUARD.forking)
    time.sleep(0.2)
    assert not forking.is_set()  # the fork waits for the open section
    leave.set()
    assert forking.wait(5)
    release.set()
    assert first.wait(5) and forked.wait(5)


def test_blas_waits_while_a_pool_forks():
    forking, release, started = _held(GUARD.forking)
    assert forking.wait(5)
    a = np.arange(64, dtype=np.int64).reshape(16, 4)
    gram = _later(lambda: exact_gram(a, a[:, 0]))
    time.sleep(0.2)
    assert not gram.is_set()  # the Gram product waits for the fork to finish
    release.set()
    assert started.wait(5) and gram.wait(5)


def _child_uses_blas(queue):
    a = np.arange(40000, dtype=np.int64).reshape(10000, 4) % 97
    g, _ = exact_gram(a, a[:, 0])
    queue.put(int(g[0, 0]))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork")
def test_a_child_forked_inside_the_guard_starts_with_a_fresh_one():
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with GUARD.forking():  # as parallel.run_jobs forks its workers
        proc = ctx.Process(target=_child_uses_blas, args=(queue,))
        proc.start()
    proc.join(30)
    alive = proc.is_alive()
    if alive:
        proc.kill()
    assert not alive and proc.exitcode == 0
    a = np.arange(40000, dtype=np.int64).reshape(10000, 4) % 97
    assert queue.get(timeout=5) == int((a[:, 0] * a[:, 0]).sum())
    with GUARD.blas():  # the parent's guard is open again
        pass


def _mask_size_in_child(queue):
    from medzip.predictors.padding import zstd_size

    queue.put(zstd_size(b"\x00" * 1000))


def test_mask_size_memo_works_in_a_child_forked_while_its_lock_is_held():
    """padding.zstd_size's memo lock, held by another thread at the fork, is new in the child
    (else the child would wait on it forever)."""
    from medzip.predictors import padding

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with padding._ZSTD_SIZES_LOCK:
        child = ctx.Process(target=_mask_size_in_child, args=(queue,))
        child.start()
    try:
        assert queue.get(timeout=60) > 0
    finally:
        child.join(30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
