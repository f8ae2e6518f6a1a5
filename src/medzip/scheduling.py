"""Decoding order shared by encoder and decoder: a 3-D wavefront over one chunk.

Voxel (z, y, x) of a chunk is coded at step ``t = x + 2*y + lag*z``. Everything a predictor may
read has a smaller ``t``: the current-slice neighbours W, WW, NW, N, NE, NN (and anything further
up), and the 3x3 block around (y, x) in the previous slice when ``lag >= 4``. All voxels of one
step are therefore independent given the earlier steps and are predicted as one batch, which is
what makes batched (vectorised) inference possible in the decoder. The step count is only
``X + 2Y + lag*Z``, so batches hold thousands of voxels on clinical volumes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 2  # default padding around y and x: the widest causal offset of ls3d / row LSTM
ZPAD = 2  # default padding slices before the first slice of a chunk


def work_dtype(vmax: int):
    """Narrowest signed type holding values and residuals (|r| <= vmax): memory, not results."""
    return np.int16 if vmax < (1 << 15) - 1 else np.int32 if vmax < (1 << 30) else np.int64


@dataclass(frozen=True)
class PaddedGeometry:
    """A chunk stored with zero padding so causal neighbours are plain flat-index offsets."""

    nz: int
    ny: int
    nx: int
    pad: int = PAD
    zpad: int = ZPAD

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.nz + self.zpad, self.ny + 2 * self.pad, self.nx + 2 * self.pad)

    @property
    def row(self) -> int:
        return self.nx + 2 * self.pad

    @property
    def plane(self) -> int:
        return (self.ny + 2 * self.pad) * self.row

    def _inner(self):
        p = self.pad
        return (slice(self.zpad, None), slice(p, p + self.ny), slice(p, p + self.nx))

    def embed(self, chunk: np.ndarray, out: np.ndarray) -> None:
        out.reshape(self.shape)[self._inner()] = chunk

    def extract(self, padded: np.ndarray) -> np.ndarray:
        return padded.reshape(self.shape)[self._inner()]

    def raster_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """(flat, zloc) of every voxel in raster order (training and fitting helpers)."""
        zz, yy, xx = np.meshgrid(np.arange(self.nz), np.arange(self.ny), np.arange(self.nx),
                                 indexing="ij")
        flat = ((zz + self.zpad) * self.shape[1] + yy + self.pad) * self.shape[2] + xx + self.pad
        return flat.ravel().astype(np.int64), zz.ravel().astype(np.int64)


def wavefront(geom: PaddedGeometry, lag: int, slope: int = 2):
    """Yield ``(flat, zloc)`` per step: flat indices into the padded chunk, and slice numbers.

    Step of voxel (z, y, x): ``x + slope*y + lag*z``. ``slope`` 2 makes NE causal; a wider
    in-slice window needs a larger slope (the published 13x13 window: 7).
    """
    nz, ny, nx = geom.nz, geom.ny, geom.nx
    # Diagonals u = x + slope*y of one slice, concatenated in u order, as padded in-plane offsets.
    yy, xx = np.mgrid[0:ny, 0:nx]
    u = (xx + slope * yy).ravel()
    order = np.argsort(u, kind="stable")
    diag_flat = ((yy.ravel() + geom.pad) * geom.row + xx.ravel() + geom.pad)[order].astype(np.int64)
    umax = nx - 1 + slope * (ny - 1)
    diag_len = np.bincount(u, minlength=umax + 1)
    diag_start = np.concatenate(([0], np.cumsum(diag_len)[:-1]))
    zs = np.arange(nz, dtype=np.int64)
    zbase = (zs + geom.zpad) * geom.plane
    for t in range(umax + lag * (nz - 1) + 1):
        us = t - lag * zs
        live = (us >= 0) & (us <= umax)
        z = zs[live]
        us = us[live]
        lens = diag_len[us]
        total = int(lens.sum())
        ends = np.cumsum(lens)
        # ragged concatenation of diag ranges, without a Python loop over slices
        pos = np.arange(total, dtype=np.int64) + np.repeat(diag_start[us] - (ends - lens), lens)
        flat = diag_flat[pos] + np.repeat(zbase[live], lens)
        yield flat, np.repeat(z, lens)
