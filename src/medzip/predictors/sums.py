"""Exact integer sums over sampled slices, split between threads (encoder-side fits).

The least-squares fits sum normal equations (int64, or integer-valued float64 below 2**53)
over a sample of slices. Integer addition is associative, so splitting the slices between
threads and adding the per-thread totals gives the same integers as one thread: the fitted
coefficients, and so the stream, do not depend on the thread count (tests/test_fit_threads.py).

The encoder uses these threads only while its worker processes have nothing to do yet (the fit
comes before any chunk can be coded): ``compress(workers=2)`` fits on 2 threads, the numba
kernels and NumPy copies releasing the GIL. ``workers=1`` (the Zarr/numcodecs codecs, which run
many chunks from their own threads) starts no thread.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ..heap import release_free_heap

MAX_FIT_THREADS = 4  # the fits sample at most a few dozen slices: more threads buy nothing


def split_sums(fn, items: list, threads: int):
    """``fn(items)`` for a function returning a tuple of integer arrays (or ints), computed as
    the element-wise sum of ``fn`` over an interleaved split of ``items`` into ``threads``
    parts (each part a list, possibly of one item). Equal to ``fn(items)`` when ``fn`` is a sum
    over items, whatever ``threads`` is."""
    n = _thread_count(threads, items)
    if n <= 1:
        return fn(items)
    parts = [items[i::n] for i in range(n)]
    with ThreadPoolExecutor(n, thread_name_prefix="medzip-fit") as pool:
        results = list(pool.map(fn, parts))
    release_free_heap()  # what the threads freed stays in their arenas otherwise (heap.py)
    return tuple(sum(values[1:], values[0]) for values in zip(*results))


def split_map(fn, items: list, threads: int) -> list:
    """``[fn(item) for item in items]``, on up to ``threads`` threads, in the order of items."""
    n = _thread_count(threads, items)
    if n <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(n, thread_name_prefix="medzip-fit") as pool:
        out = list(pool.map(fn, items))
    release_free_heap()
    return out


def _thread_count(threads: int, items: list) -> int:
    return min(max(1, int(threads)), MAX_FIT_THREADS, len(items))
