"""Classical predictor: per-volume least-squares 3-D linear prediction + adaptive bias.

The encoder fits integer (Q12) coefficients over a causal neighbourhood (six in-slice
neighbours and the 3x3 block of the previous slice) on a sample of the volume, with exact
integer normal equations and a pure-Python solve so the fit is reproducible on any machine.
A second, in-slice-only set serves the first slice of every chunk. The residual scale comes
from the magnitudes of neighbouring residuals; a JPEG-LS style bias canceller (mean error per
context of scale bucket x local texture) removes systematic offsets as coding proceeds.
"""
from __future__ import annotations

import struct

import numba
import numpy as np

from ..intmath import exact_gram, solve_normal_equations
from ..scheduling import PaddedGeometry
from .base import PredictorBase, ResidualChunk
from .contexts import activity_bucket, residual_activity
from .sums import split_sums
from .bias import bias_update, new_statistics, store_corrected

FRAC = 12
OFFS_2D = [(0, 0, -1), (0, -1, 0), (0, -1, -1), (0, -1, 1), (0, 0, -2), (0, -2, 0)]
OFFS_3D = OFFS_2D + [(-1, dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
MAX_FIT_SAMPLES = 1 << 20
FIT_BLOCK_SAMPLES = 1 << 14  # sampled voxels gathered at once (fit_tap_set's memory)
FIT_PLANES = 32  # slices sampled (evenly) for the fit: enough for stable coefficients


def flat_offsets(offsets, geom: PaddedGeometry) -> np.ndarray:
    return np.array([dz * geom.plane + dy * geom.row + dx for dz, dy, dx in offsets], np.int64)


class LS3DPredictor(PredictorBase):
    name = "ls3d"
    lag = 4

    def __init__(self, coef3: np.ndarray, coef2: np.ndarray):
        self.coef3 = np.asarray(coef3, np.int64)  # len(OFFS_3D) + 1 (bias last)
        self.coef2 = np.asarray(coef2, np.int64)

    # -- serialisation ----------------------------------------------------------------------
    def params(self) -> bytes:
        c = np.concatenate([self.coef3, self.coef2]).astype("<i8")
        return struct.pack("<BB", len(self.coef3), len(self.coef2)) + c.tobytes()

    @classmethod
    def from_params(cls, blob: bytes) -> "LS3DPredictor":
        n3, n2 = struct.unpack_from("<BB", blob)
        if n3 != len(OFFS_3D) + 1 or n2 != len(OFFS_2D) + 1 or len(blob) != 2 + 8 * (n3 + n2):
            raise ValueError("bad ls3d parameter block")
        c = np.frombuffer(blob, "<i8", offset=2).astype(np.int64)
        return cls(c[:n3], c[n3:])

    # -- encoder-side fit -------------------------------------------------------------------
    @classmethod
    def fit(cls, vol4: np.ndarray, threads: int = 1) -> "LS3DPredictor":
        """``threads``: split the fit's sums between threads (the same coefficients)."""
        return cls(fit_tap_set(vol4, OFFS_3D, need_prev=True, threads=threads),
                   fit_tap_set(vol4, OFFS_2D, need_prev=False, threads=threads))

    def start_chunk(self, geom: PaddedGeometry, vmax: int) -> "_LSChunk":
        return _LSChunk(self, geom, vmax)


def fit_tap_set(vol4: np.ndarray, offsets, need_prev: bool, threads: int = 1) -> np.ndarray:
    """Least-squares Q12 coefficients (+ bias) of the taps ``offsets`` (``(dz, dy, dx)``, dz 0
    or -1) from a deterministic sample of the volume."""
    t_, z_, y_, x_ = vol4.shape
    k = len(offsets)
    z_lo = 1 if need_prev else 0
    planes = [(t, z) for t in range(t_) for z in range(z_lo, z_)]
    if not planes or y_ * x_ == 0:
        return _identity_coefficients(k)
    take = planes[:: max(1, len(planes) // FIT_PLANES)]
    step = max(1, int(np.sqrt(len(take) * y_ * x_ / MAX_FIT_SAMPLES)))
    shift = max(0, int(vol4.max()).bit_length() - 16)  # keep integer products far from overflow

    p = max([2] + [max(abs(dy), abs(dx)) for _, dy, dx in offsets])  # zero border

    def normal_equations(part):
        ata = np.zeros((k + 1, k + 1), np.int64)
        atb = np.zeros(k + 1, np.int64)
        for t, z in part:
            pair = np.zeros((2, y_ + 2 * p, x_ + 2 * p), np.int64)
            pair[1, p:-p, p:-p] = vol4[t, z] >> shift
            if z > 0:
                pair[0, p:-p, p:-p] = vol4[t, z - 1] >> shift
            # blocks of sampled rows: the gathered columns of a whole plane took ~60 MB per
            # thread on a 512 x 512 CT (the encoder's peak); exact integer sums, so the same
            # normal equations whatever the blocking
            ny = len(range(0, y_, step))
            rows = max(1, FIT_BLOCK_SAMPLES // len(range(0, x_, step)))
            for r0 in range(0, ny, rows):
                y0, y1 = p + r0 * step, p + min(ny, r0 + rows) * step
                target = pair[1, y0:y1:step, p:x_ + p:step].ravel()
                cols = [pair[1 + dz, y0 + dy:y1 + dy:step, p + dx:x_ + p + dx:step].ravel()
                        for dz, dy, dx in offsets]
                a = np.stack(cols + [np.ones_like(target)], axis=1)
                g, h = exact_gram(a, target)
                ata += g
                atb += h
        return ata, atb

    ata, atb = split_sums(normal_equations, take, threads)
    if ata[k, k] == 0:
        return _identity_coefficients(k)
    return fit_coefficients(ata, atb, shift)


def fit_coefficients(ata: np.ndarray, atb: np.ndarray, shift: int) -> np.ndarray:
    """Q12 taps and bias (bias in unshifted units) solving normal equations of values that were
    shifted right by ``shift`` (every least-squares fit of the predictors ends here)."""
    sol = solve_normal_equations(ata, atb)
    coef = [int(round(c * (1 << FRAC))) for c in sol[:-1]]
    return np.array(coef + [int(round(sol[-1] * (1 << FRAC) * (1 << shift)))], np.int64)


def _identity_coefficients(k: int) -> np.ndarray:
    c = np.zeros(k + 1, np.int64)
    c[0] = 1 << FRAC  # predict from W
    return c


class _LSChunk(ResidualChunk):
    def __init__(self, pred: LS3DPredictor, geom: PaddedGeometry, vmax: int):
        super().__init__(geom, vmax)
        self.off3 = flat_offsets(OFFS_3D, geom)
        self.off2 = flat_offsets(OFFS_2D, geom)
        self.c3, self.c2 = pred.coef3, pred.coef2
        self.row, self.plane, self.vmax = geom.row, geom.plane, vmax
        self.bc_sum, self.bc_cnt = new_statistics()
        self._ctx = self._corr = None

    def predict(self, vol, flat, zloc):
        mu, bucket = self.new_step(flat.size)
        _ls_predict(vol, self.res, flat, zloc, self.off3, self.c3, self.off2, self.c2, self.row,
                    self.plane, self.vmax, self.bc_sum, self.bc_cnt, mu, bucket, self._ctx,
                    self._corr)
        return mu, bucket

    def update(self, vol, flat, zloc, residual):
        self.res[flat] = residual
        bias_update(self._ctx, residual + self._corr, self.bc_sum, self.bc_cnt)


@numba.njit(cache=True, inline="always")
def ls_prediction(vol, f, z, off3, c3, off2, c2):
    """Q12 linear prediction: the 3-D set, or the in-slice set on a chunk's first slice."""
    if z > 0:
        acc = c3[c3.size - 1]
        for k in range(off3.size):
            acc += c3[k] * vol[f + off3[k]]
    else:
        acc = c2[c2.size - 1]
        for k in range(off2.size):
            acc += c2[k] * vol[f + off2[k]]
    return (acc + (1 << (FRAC - 1))) >> FRAC


@numba.njit(cache=True)
def _ls_predict(vol, res, flat, zloc, off3, c3, off2, c2, row, plane, vmax, bc_sum, bc_cnt,
                mu_out, b_out, ctx_out, corr_out):
    for i in range(flat.size):
        f = flat[i]
        mu = ls_prediction(vol, f, zloc[i], off3, c3, off2, c2)
        b = activity_bucket(residual_activity(res, f, zloc[i], row, plane))
        store_corrected(vol, f, zloc[i], row, plane, mu, b, vmax, True, bc_sum, bc_cnt, i,
                        mu_out, b_out, ctx_out, corr_out)
