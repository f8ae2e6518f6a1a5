"""Causal context kernels shared by the predictors (one rule, one place).

The *activity* of a voxel is a weighted sum of its causal neighbours' |residuals|: W twice,
N, NW, NE, and the voxel below in the previous slice (WW on a chunk's first slice, which has no
previous slice). Its weights add up to ``ACTIVITY_WEIGHT``, so ``act / ACTIVITY_WEIGHT`` is the
local mean |residual|.
"""
from __future__ import annotations

import numba

from ..entropy import N_BUCKETS
from ..intmath import log2_q3

ACTIVITY_WEIGHT = 6


@numba.njit(cache=True, inline="always")
def residual_activity(res, f, z, row, plane):
    below = abs(res[f - plane]) if z > 0 else abs(res[f - 2])
    return 2 * abs(res[f - 1]) + abs(res[f - row]) + abs(res[f - row - 1]) \
        + abs(res[f - row + 1]) + below


@numba.njit(cache=True, inline="always")
def activity_bucket(act):
    """Scale bucket ~ 2 log2(mean |r|) + 4 (entropy.py: bucket b means scale 2**((b-4)/2)).

    log2_q3(8 act + 4) is 8 log2(act + 1/2) + 24 in 1/8 units; with mean |r| = act / 6 the
    bucket is (log2_q3(8 act + 4) - 27) >> 2, clipped to the coder's buckets.
    """
    return min(max((log2_q3(8 * act + 4) - 27) >> 2, 0), N_BUCKETS - 1)
