"""Previous-volume context for 4-D series (fMRI, DWI, multi-echo): the fit behind medzip-blend v2.

In a series (t, z, y, x) volume t-1 is decoded before volume t, so all of it is causal context
for volume t. In fMRI the previous volume predicts far better than the neighbours in the same
volume (a 64x64 EPI has sharp edges that spatial prediction misses, but they stay put from one
volume to the next); between DWI directions it buys little, since contrast changes with the
gradient. The encoder therefore fits, on a sample of volumes t >= 1, two extra exact-integer LS
sets that add the previous volume's 3x3 block at the same (z, y, x) to ls3d's spatial taps (the
3-D set, and the in-slice set for a chunk's first slice), and turns the context on only where
it pays on that sample (levels 7-9 also code the other choice and keep the smaller stream).

The blend uses them as two more experts (blend.py): the temporal LS prediction, and "previous
volume + the in-plane change of W and N since then".
"""
from __future__ import annotations

import numpy as np

from ..intmath import exact_gram
from .ls3d import FRAC, FIT_PLANES, MAX_FIT_SAMPLES, OFFS_2D, OFFS_3D, fit_coefficients

# Taps in the previous volume, same slice: (dy, dx).
OFFS_T = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
N_T3 = len(OFFS_3D) + len(OFFS_T) + 1  # spatial 3-D taps, temporal taps, bias
N_T2 = len(OFFS_2D) + len(OFFS_T) + 1  # in-slice taps, temporal taps, bias
# The context is used when its LS absolute error on the fit sample is below this fraction of
# the spatial LS's (a margin for what the sample does not show and for the coefficient bytes).
PAYS_NUM, PAYS_DEN = 97, 100


def ref_offsets(row: int) -> np.ndarray:
    """Flat offsets of the temporal taps in a padded chunk of row length ``row``."""
    return np.array([dy * row + dx for dy, dx in OFFS_T], np.int64)


def fit_temporal(vol4: np.ndarray, coef3: np.ndarray):
    """``(ct3, ct2, pays)`` for a series, or None for a single volume.

    ct3 / ct2 are Q12 coefficients (spatial taps, then temporal taps, then the bias) for voxels
    with / without a previous slice in their chunk; ``pays`` compares the temporal 3-D set with
    the spatial one (``coef3``, ls3d's) on the same sample. Integer sums only: the choice, like
    the coefficients, is the same on every machine.
    """
    t_, z_, y_, x_ = vol4.shape
    if t_ < 2 or y_ * x_ == 0:
        return None
    shift = max(0, int(vol4.max()).bit_length() - 16)  # keep integer products far from overflow
    planes = [(t, z) for t in range(1, t_) for z in range(z_)]
    take = planes[:: max(1, len(planes) // FIT_PLANES)]
    step = max(1, int(np.sqrt(len(take) * y_ * x_ / MAX_FIT_SAMPLES)))
    sys3 = [np.zeros((N_T3, N_T3), np.int64), np.zeros(N_T3, np.int64)]
    sys2 = [np.zeros((N_T2, N_T2), np.int64), np.zeros(N_T2, np.int64)]
    rows3 = []
    for t, z in take:
        cur = np.zeros((2, y_ + 4, x_ + 4), np.int64)
        cur[1, 2:-2, 2:-2] = vol4[t, z] >> shift
        if z > 0:
            cur[0, 2:-2, 2:-2] = vol4[t, z - 1] >> shift
        ref = np.zeros((y_ + 4, x_ + 4), np.int64)
        ref[2:-2, 2:-2] = vol4[t - 1, z] >> shift
        ys, xs = slice(2, y_ + 2, step), slice(2, x_ + 2, step)
        target = cur[1, ys, xs].ravel()

        def taps(offsets):
            return [cur[1 + dz, 2 + dy:y_ + 2 + dy:step, 2 + dx:x_ + 2 + dx:step].ravel()
                    for dz, dy, dx in offsets]

        tcols = [ref[2 + dy:y_ + 2 + dy:step, 2 + dx:x_ + 2 + dx:step].ravel() for dy, dx in OFFS_T]
        one = [np.ones_like(target)]
        a2 = np.stack(taps(OFFS_2D) + tcols + one, axis=1)
        g, h = exact_gram(a2, target)
        sys2[0] += g
        sys2[1] += h
        if z > 0:
            a3 = np.stack(taps(OFFS_3D) + tcols + one, axis=1)
            g, h = exact_gram(a3, target)
            sys3[0] += g
            sys3[1] += h
            rows3.append((a3, target))
    if not rows3:
        return None
    ct3 = fit_coefficients(*sys3, shift)
    ct2 = fit_coefficients(*sys2, shift)
    # the same sample, with the coefficients as coded (shifted values: bias shifted back)
    k = len(OFFS_3D)
    spatial = np.concatenate([coef3[:k], np.zeros(len(OFFS_T), np.int64), [coef3[k] >> shift]])
    temporal = np.concatenate([ct3[:-1], [ct3[-1] >> shift]])
    err_s = err_t = 0
    for a3, target in rows3:
        err_s += int(np.abs(((a3 @ spatial + (1 << (FRAC - 1))) >> FRAC) - target).sum())
        err_t += int(np.abs(((a3 @ temporal + (1 << (FRAC - 1))) >> FRAC) - target).sum())
    return ct3, ct2, err_t * PAYS_DEN < err_s * PAYS_NUM

