"""The online bias canceller shared by ls3d and the row LSTM (JPEG-LS style).

Context = scale bucket x 5 texture bits (W, N, NW, NE and the previous slice's voxel above the
prediction); the correction is the rounded mean error seen in that context so far. Statistics
start at zero in every chunk and are halved every 256 counts so they follow the volume.
"""
from __future__ import annotations

import numba
import numpy as np

from ..entropy import N_BUCKETS

N_TEXTURE = 32
BC_HALVE_AT = 256


def new_statistics() -> tuple[np.ndarray, np.ndarray]:
    return (np.zeros(N_BUCKETS * N_TEXTURE, np.int64), np.zeros(N_BUCKETS * N_TEXTURE, np.int64))


@numba.njit(cache=True, inline="always")
def bias_context(vol, f, z, row, plane, mu, bucket):
    tex = 0
    if vol[f - 1] > mu:
        tex += 1
    if vol[f - row] > mu:
        tex += 2
    if vol[f - row - 1] > mu:
        tex += 4
    if vol[f - row + 1] > mu:
        tex += 8
    if z > 0 and vol[f - plane] > mu:
        tex += 16
    return bucket * N_TEXTURE + tex


@numba.njit(cache=True, inline="always")
def bias_correction(bc_sum, bc_cnt, ctx):
    cnt = bc_cnt[ctx]
    return (bc_sum[ctx] + (cnt >> 1)) // cnt if cnt > 0 else 0


@numba.njit(cache=True, inline="always")
def store_corrected(vol, f, z, row, plane, mu, bucket, vmax, bias_cancel, bc_sum, bc_cnt, i,
                    mu_out, b_out, ctx_out, corr_out):
    """The last part of every predictor's kernel: voxel i's bias-cancelled prediction, clamped
    to [0, vmax], with its bucket, context and correction (kept for bias_update)."""
    ctx = 0
    corr = 0
    if bias_cancel:
        ctx = bias_context(vol, f, z, row, plane, mu, bucket)
        corr = bias_correction(bc_sum, bc_cnt, ctx)
    mu_out[i] = min(max(mu + corr, 0), vmax)
    b_out[i] = bucket
    ctx_out[i] = ctx
    corr_out[i] = corr


@numba.njit(cache=True)
def bias_update(ctx, err, bc_sum, bc_cnt):
    """After a step, per voxel in step order: add the uncorrected error to its context."""
    for i in range(ctx.size):
        c = ctx[i]
        bc_sum[c] += err[i]
        bc_cnt[c] += 1
        if bc_cnt[c] >= BC_HALVE_AT:
            bc_sum[c] >>= 1
            bc_cnt[c] >>= 1
