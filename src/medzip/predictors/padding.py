"""Padding and field-of-view masks: pixels at the volume's floor in every slice of every volume.

Scanners and pipelines leave regions that hold the same value through the whole volume: the
corners outside a CT's circular field of view, the outside of a brain mask in skull-stripped or
masked MR and fMRI. medzip-blend (version 2) sends such a region once, as a bit mask of the
slice plane, and the coder skips those voxels: their value is known (the floor, 0 after value
mapping), so they cost nothing and no longer crowd the adaptive tables of the low-activity
contexts. Measured on the development set: masked fslpy EPI -3.4 %, CT NEMA -1.6 %, cardiac MR
-1.4 %, nibabel fMRI -1.1 % (docs/MODELS.md).
"""
from __future__ import annotations

import hashlib
import os
import threading

import numba
import numpy as np
import zstandard

# Use the mask when its coded bits are below this many bits per voxel it covers. A covered
# voxel saves more than its own coding (0.04-0.18 bits on the development set): the tables of
# the low-activity contexts and the voxels at the mask's edge gain too. Forcing every candidate
# mask on the development volumes and slices (stop 14, MODELS.md "Padding mask rule"): masks of
# 0.09-0.20 bits per covered voxel bought 0.05-0.8 % (genuine CT slices padded outside the
# field of view, thin MR with a few background pixels), up to 9.7 % on a CT slice padded below
# its air (version 5); at 0.30-6.1 (scattered zeros of single MR/CT slices) they cost up to
# 1.5 %. Until stop 14 this was 0.05, which left every single CT slice unmasked.
PAYS_BITS_PER_VOXEL = 0.25
MIN_PIXELS = 16


def zstd_size(data: bytes) -> int:
    """Bytes of ``data`` at the level parameter blocks are packed with. The fit asks for the
    same mask's sizes more than once (the pays rule, the choice of its coding, each level-9
    candidate) and zstd -19 of a large packed mask takes a quarter of a second: remembered by
    the data's digest."""
    key = hashlib.sha256(data).digest()
    with _ZSTD_SIZES_LOCK:
        size = _ZSTD_SIZES.get(key)
    if size is None:
        size = len(zstandard.ZstdCompressor(level=19).compress(data))
        with _ZSTD_SIZES_LOCK:  # (compress calls from several threads share the memo)
            if len(_ZSTD_SIZES) >= 64:
                _ZSTD_SIZES.pop(next(iter(_ZSTD_SIZES)))
            _ZSTD_SIZES[key] = size
    return size


_ZSTD_SIZES: dict[bytes, int] = {}
_ZSTD_SIZES_LOCK = threading.Lock()


def _new_lock_in_child() -> None:
    # a worker forked while another thread held the lock would wait on it forever
    global _ZSTD_SIZES_LOCK
    _ZSTD_SIZES_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def coded_mask_sizes(mask: np.ndarray) -> tuple[int, int | None]:
    """zstd bytes of the mask bit-packed and by rows (None where rows would be longer than the
    packed bits: blend version 8)."""
    rows = mask_rows(mask)
    return (zstd_size(np.packbits(mask.ravel()).tobytes()),
            None if rows is None else zstd_size(rows))


# -- row coding (blend version 8) -------------------------------------------------------------
# A field-of-view mask is a disc or a few blobs: each row holds a handful of runs whose ends
# move by a pixel or two from the row above. Bit-packed and zstd-compressed, a 512 x 512 disc
# still costs ~1 KB (zstd finds few repeats in rows that all differ); written as the positions
# where each row changes value, relative to the row above's, it costs ~0.2 KB - 0.9 % of a
# single CT slice's stream (docs/MODELS.md "Padding mask by rows"). Scattered masks (noise
# zeros) stay bit-packed: the encoder keeps the smaller.
#
# Per row, a row's *transitions* are the x where the value changes from x - 1 to x (the row
# reads 0 left of x = 0 and right of x = nx): an even count, strictly increasing in [0, nx].
# One unsigned LEB128 varint `h` per row: 0 = as many transitions as the row above (0 above the
# first row), each the row above's plus a zigzag varint delta; h = k + 1 = k transitions, each
# a zigzag varint gap from the previous one (the first from 0).
MAX_VARINT_BYTES = 4  # values below 2**28: positions of a plane up to 2**26 pixels, zigzagged


def mask_rows(mask: np.ndarray) -> bytes | None:
    """The row coding of a (ny, nx) bool mask (uncompressed varints), or None where it would
    be longer than the packed bits (scattered masks; decoders refuse such streams)."""
    m = np.ascontiguousarray(mask, np.uint8)
    out = np.empty((m.size + 7) // 8, np.uint8)
    n = _rows_encode(m, out)
    return out[:n].tobytes() if n >= 0 else None


def mask_from_rows(data: bytes, ny: int, nx: int) -> np.ndarray:
    """The (ny, nx) bool mask of ``mask_rows``' bytes; ValueError if they are malformed or do
    not end exactly with the last row."""
    mask = np.zeros((ny, nx), np.uint8)
    if _rows_decode(np.frombuffer(data, np.uint8), mask) != 0:
        raise ValueError("bad row-coded mask")
    return mask.view(bool)


@numba.njit(cache=True, inline="always")
def _put(out, pos, v):
    while v >= 128:
        out[pos] = (v & 127) | 128
        v >>= 7
        pos += 1
    out[pos] = v
    return pos + 1


@numba.njit(cache=True, inline="always")
def _zigzag(v):
    return 2 * v if v >= 0 else -2 * v - 1


@numba.njit(cache=True, inline="always")
def _transition_rows(nx):
    """Transition positions of the row above and of this row (swapped after each row)."""
    return np.empty(nx + 1, np.int64), np.empty(nx + 1, np.int64)


@numba.njit(cache=True)
def _rows_encode(m, out):
    """Row coding of m into out; its length, or -1 as soon as it would not fit."""
    ny, nx = m.shape
    prev, cur = _transition_rows(nx)
    n_prev = pos = 0
    for r in range(ny):
        k = 0
        last = 0
        for x in range(nx + 1):
            v = m[r, x] if x < nx else 0
            if v != last:
                cur[k] = x
                k += 1
                last = v
        if pos + MAX_VARINT_BYTES * (k + 1) > out.size:
            # (a conservative bound: the exact length may still have fitted; then the packed
            # mask, which is at most as long, is used)
            return -1
        if k == n_prev:
            pos = _put(out, pos, 0)
            for j in range(k):
                pos = _put(out, pos, _zigzag(cur[j] - prev[j]))
        else:
            pos = _put(out, pos, k + 1)
            t = 0
            for j in range(k):
                pos = _put(out, pos, _zigzag(cur[j] - t))
                t = cur[j]
        prev, cur, n_prev = cur, prev, k
    return pos


@numba.njit(cache=True, inline="always")
def _get(data, pos):
    """(value, next position); value -1 when the varint is truncated or too long."""
    v = np.int64(0)
    for i in range(MAX_VARINT_BYTES):
        if pos >= data.size:
            return np.int64(-1), pos
        b = np.int64(data[pos])
        pos += 1
        v |= (b & 127) << (7 * i)
        if b < 128:
            return v, pos
    return np.int64(-1), pos


@numba.njit(cache=True)
def _rows_decode(data, m):
    """Fill m (zeros, (ny, nx) uint8) from row-coded bytes: 0, or -1 when malformed."""
    ny, nx = m.shape
    prev, cur = _transition_rows(nx)
    n_prev = pos = 0
    for r in range(ny):
        h, pos = _get(data, pos)
        if h < 0 or h > nx + 2:
            return -1
        k = n_prev if h == 0 else h - 1
        if k % 2:
            return -1
        t = np.int64(-1)
        for j in range(k):
            z, pos = _get(data, pos)
            if z < 0:
                return -1
            d = z >> 1 if z % 2 == 0 else -((z + 1) >> 1)
            x = prev[j] + d if h == 0 else max(t, 0) + d
            if x <= t or x > nx:  # strictly increasing, within [0, nx]
                return -1
            cur[j] = x
            t = x
        for j in range(0, k, 2):
            for x in range(cur[j], cur[j + 1]):
                m[r, x] = 1
        prev, cur, n_prev = cur, prev, k
    return 0 if pos == data.size else -1


def _equal_in_every_slice(vol4: np.ndarray, reference) -> np.ndarray | None:
    """The (y, x) pixels equal to ``reference`` (a value or a plane) in every slice of every
    volume; None as soon as fewer than MIN_PIXELS are left."""
    mask = np.ones(vol4.shape[2:], bool)
    for t in range(vol4.shape[0]):
        for z in range(vol4.shape[1]):
            mask &= vol4[t, z] == reference
            if int(mask.sum()) < MIN_PIXELS:
                return None
    return mask


def _pays(mask: np.ndarray, vol4: np.ndarray) -> bool:
    """Whether the coded mask costs below PAYS_BITS_PER_VOXEL per voxel it covers."""
    pixels = int(mask.sum())
    if pixels < MIN_PIXELS:  # before the zstd sizes, which cost a compression each
        return False
    packed, rows = coded_mask_sizes(mask)
    size = packed if rows is None else min(packed, rows)
    return 8 * size < PAYS_BITS_PER_VOXEL * pixels * vol4.shape[0] * vol4.shape[1]


def fit_known_plane(vol4: np.ndarray) -> np.ndarray | None:
    """The (y, x) pixels that are 0 in every slice of every volume, when sending them pays."""
    mask = _equal_in_every_slice(vol4, 0)
    return mask if mask is not None and _pays(mask, vol4) else None


def fit_padding_value(vol4: np.ndarray) -> tuple[np.ndarray, int] | None:
    """``(mask, value)``: the (y, x) pixels that hold one value above the floor in every slice
    of every volume - the most common such value - when sending them pays as for
    ``fit_known_plane`` (blend version 7). CT resampled or masked with 0 HU outside a circular
    field of view while its air is clipped at -1024 HU: coded, that padding costs its own
    voxels and a 1000 HU step along the field of view's edge on every slice (head CT every 2nd
    slice padded so: +3.6 % over padding at the floor, MODELS.md "Padding above the floor")."""
    first = vol4[0, 0]
    same = _equal_in_every_slice(vol4, first)
    if same is None:
        return None
    values, counts = np.unique(first[same], return_counts=True)
    value = int(values[np.argmax(counts)])  # the lowest of the most common on a tie
    if value <= 0:  # the floor: fit_known_plane's case
        return None
    mask = same & (first == value)
    return (mask, value) if _pays(mask, vol4) else None


def fit_fov_floor(vol4: np.ndarray, mask: np.ndarray | None) -> int:
    """The lowest value outside the padding mask (inside the field of view), when the mask is
    used and that value lies above the padding's 0: CT padded with -2000 or -3024 HU outside a
    circular field of view whose air is clipped at -1024 (blend version 5). 0 otherwise."""
    if mask is None or mask.all():
        return 0
    inside = ~mask
    return int(min(int(vol4[t, z][inside].min()) for t in range(vol4.shape[0])
                   for z in range(vol4.shape[1])))
