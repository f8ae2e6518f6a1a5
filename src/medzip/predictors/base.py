"""The predictor interface the coding engine drives.

A :class:`Predictor` is created once per volume. On the encoder it is *fitted* to the volume
and serialised (``params``) into the stream, its identity going into the volume's ``model``
header entry (``header_entry``); the decoder rebuilds it from those bytes. For each chunk the
engine asks for a fresh :class:`ChunkModel`, then walks the wavefront (scheduling.py) that the
predictor's ``slope`` and ``lag`` define: for every step it calls ``predict`` on a batch of
voxels whose causal neighbourhood is already decoded, codes the residuals with the coder the
predictor chose (``prior``), writes the values into the padded chunk, and calls ``update`` so
adaptive state moves on identically on both sides. Everything on this path is integer-exact.

Distributions: a predictor describes each voxel's residual distribution by a scale bucket
(one of ``entropy.N_BUCKETS`` adaptive tables, optionally with its own starting counts
``prior``). A predictor that needs a richer distribution (a mixture, censoring at the value
range's ends) adds it as a new *coder version* named in its header entry, so streams of the
existing coder keep decoding unchanged.
"""
from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np

from ..scheduling import PAD, ZPAD, PaddedGeometry, work_dtype


class ChunkModel(Protocol):
    def predict(self, vol: np.ndarray, flat: np.ndarray,
                zloc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (mu, bucket) int64 arrays for voxels ``flat``; mu within [0, vmax]."""
        ...

    def update(self, vol: np.ndarray, flat: np.ndarray, zloc: np.ndarray,
               residual: np.ndarray) -> None:
        """Advance adaptive state after the engine stored the voxels' values in ``vol``;
        ``residual`` is ``vol[flat] - mu`` as coded."""
        ...


class Predictor(Protocol):
    name: str
    lag: int  # wavefront lag between slices (scheduling.wavefront)
    slope: int  # wavefront slope within a slice
    pad: int  # in-plane padding the neighbourhood needs
    zpad: int  # padding slices before a chunk's first slice
    prior: np.ndarray | None  # starting counts of the coder's tables (None: the default)

    def params(self) -> bytes: ...

    def header_entry(self) -> dict: ...

    def start_chunk(self, geom: PaddedGeometry, vmax: int) -> ChunkModel: ...


class PredictorBase:
    """Defaults shared by the built-in predictors (a 5x5 causal window, slope 2)."""

    name: str
    lag: int
    slope: ClassVar[int] = 2
    pad: ClassVar[int] = PAD
    zpad: ClassVar[int] = ZPAD
    prior: np.ndarray | None = None
    censored: ClassVar[bool] = False  # True: the coder folds the mass outside [0, vmax] (entropy.py)

    def header_entry(self) -> dict:
        return {"name": self.name}


class ResidualChunk:
    """A chunk model that keeps its own per-voxel residual buffer (the kernels read causal
    residuals for their activity contexts); subclasses choose what they store in it."""

    def __init__(self, geom: PaddedGeometry, vmax: int):
        self.res = np.zeros(geom.shape, work_dtype(vmax)).ravel()

    def new_step(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, bucket)`` arrays for a step of n voxels; the bias canceller's per-voxel
        context and correction (``_ctx``, ``_corr``) are kept for ``update``."""
        self._ctx = np.empty(n, np.int64)
        self._corr = np.empty(n, np.int64)
        return np.empty(n, np.int64), np.empty(n, np.int64)
