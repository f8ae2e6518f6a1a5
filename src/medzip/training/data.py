"""Training examples: the exact integer features the coder computes, per row of voxels.

No PyTorch here: features come from the same numba kernel the coder runs
(predictors.lstm.volume_features), so the network is trained on what it will see.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..formats.base import adapter_for_path
from ..predictors.ls3d import OFFS_2D, OFFS_3D, LS3DPredictor, flat_offsets
from ..predictors.lstm import N_FEATURES, volume_features
from ..scheduling import wavefront
from ..volume_codec import chunk_bounds, chunk_geometry, coding_mask, map_values


@dataclass
class RowSet:
    """Rows of one volume: features (R, X, F) int8, LS residual e and scale U (R, X) int32."""
    name: str
    feats: np.ndarray
    e: np.ndarray
    u: np.ndarray


def load_volume(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    return adapter_for_path(path).read(path).volumes[0]


def mapped_volume(arr: np.ndarray) -> np.ndarray:
    """The (t, z, y, x) values the coder works on: minimum removed, sparse values ranked."""
    return map_values(arr)[0]


def _rows(name: str, arr: np.ndarray, max_rows: int, rng: np.random.Generator, max_len: int,
          fit, chunk_features) -> RowSet | None:
    """Rows of up to ``max_len`` voxels from every chunk (a few time points of a series).

    ``fit(vol4)`` prepares the predictor once; ``chunk_features(fitted, vol4, t, z0, geom,
    padded, vmax)`` returns the features (voxels, F), base residuals and scales (voxels,) of the
    chunk's voxels in raster order."""
    vol4 = mapped_volume(arr)
    if vol4.max() == 0 or vol4.shape[3] < 4:
        return None
    vmax = int(vol4.max())
    fitted = fit(vol4)  # already in the coder's working dtype
    feats, es, us = [], [], []
    t_all = range(vol4.shape[0])
    if len(t_all) > 4:  # 4-D series: a few time points are plenty
        t_all = sorted(rng.choice(vol4.shape[0], 4, replace=False))
    for t in t_all:
        for z0, nz in chunk_bounds(vol4.shape[1], None):
            part = vol4[t, z0:z0 + nz]
            # the coder's padding: the blend's long / in-slice sets read four pixels out
            geom = chunk_geometry(fitted, part.shape)
            padded = np.zeros(geom.shape, np.int64).ravel()
            geom.embed(part, padded)
            f, e, u = chunk_features(fitted, vol4, t, z0, geom, padded, vmax)
            shape = (nz * part.shape[1], part.shape[2])
            feats.append(f.reshape(*shape, N_FEATURES)[:, :max_len].astype(np.int8))
            es.append(e.reshape(shape)[:, :max_len].astype(np.int32))
            us.append(u.reshape(shape)[:, :max_len].astype(np.int32))
    feats, es, us = (np.concatenate(a) for a in (feats, es, us))
    keep = np.flatnonzero(np.abs(es).sum(axis=1) > 0)  # all-background rows teach nothing
    if keep.size > max_rows:
        keep = np.sort(rng.choice(keep, max_rows, replace=False))
    return RowSet(name, feats[keep], es[keep], us[keep])


def _ls_features(ls, vol4, t, z0, geom, padded, vmax):
    flat, zloc = geom.raster_indices()
    f = np.zeros((flat.size, N_FEATURES), np.int64)
    els = np.zeros_like(padded)
    u = np.zeros(flat.size, np.int64)
    volume_features(padded, flat, zloc, flat_offsets(OFFS_3D, geom), ls.coef3,
                    flat_offsets(OFFS_2D, geom), ls.coef2, geom.row, geom.plane, vmax, f, els, u)
    return f, els[flat], u


def volume_rows(name: str, arr: np.ndarray, max_rows: int, rng: np.random.Generator,
                max_len: int = 256) -> RowSet | None:
    """Rows for a network that corrects per-volume least squares (medzip-lstm, level 4)."""
    return _rows(name, arr, max_rows, rng, max_len, LS3DPredictor.fit, _ls_features)


def _blend_features(pred, vol4, t, z0, geom, padded, vmax):
    previous = None
    if pred.temporal and t > 0:
        previous = np.zeros_like(padded)
        geom.embed(vol4[t - 1, z0:z0 + geom.nz], previous)
    known, floor, pad_value = coding_mask(pred, geom)
    if floor or pad_value:  # masked voxels read as the floor, as code_chunk has them
        padded = padded.copy()  # (the caller's buffer keeps the volume's values)
        padded[known] = floor
        if previous is not None:
            previous[known] = floor
    chunk = pred.start_chunk(geom, vmax, ref=previous)  # no network: the classical blend
    f_all = np.zeros((padded.size, N_FEATURES), np.int8)
    u_all = np.zeros(padded.size, np.int64)
    hs = np.zeros((geom.shape[0] * geom.shape[1], 1), np.int64)  # the network's state: unused
    for flat, zloc in wavefront(geom, pred.lag, pred.slope):
        if not flat.size:
            continue
        xh = np.empty((flat.size, N_FEATURES + 1), np.float32)
        u, base = chunk.network_inputs(padded, flat, zloc, hs, xh)
        chunk.res[flat] = padded[flat] - base  # what a network-carrying chunk keeps there
        chunk.advance_experts(padded, flat)
        f_all[flat] = xh[:, :N_FEATURES].astype(np.int8)
        u_all[flat] = u
    flat, _ = geom.raster_indices()
    return f_all[flat], chunk.res[flat], u_all[flat]


def blend_rows(name: str, arr: np.ndarray, max_rows: int, rng: np.random.Generator,
               max_len: int = 256) -> RowSet | None:
    """Rows for a network that corrects medzip-blend (``medzip train --base blend``).

    The features are those the coder computes in ``blend._blend_lstm_inputs``: the blend of
    experts as the base prediction, the residuals ``x - base`` of decoded neighbours, and the
    blend's error memory advanced in wavefront order exactly as when coding. None of it
    depends on the network, so one pass of the classical blend gives the training inputs.
    """
    from ..predictors.blend import BlendPredictor

    return _rows(name, arr, max_rows, rng, max_len, BlendPredictor.fit, _blend_features)


# what a network is trained to correct: name -> row builder
BASES = {"ls": volume_rows, "blend": blend_rows}
