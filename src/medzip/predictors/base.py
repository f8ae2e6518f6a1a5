"""The predictor interface the coding engine drives.

A :class:`Predictor` is created once per volume. On the encoder it is *fitted* to the volume
(``fit``) and serialised (``params``) into the stream; the decoder rebuilds it from those bytes
(``from_params``). For each chunk the engine asks for a fresh :class:`ChunkModel`, then walks
the wavefront (see scheduling.py): for every step it calls ``predict`` on a batch of voxels
whose causal neighbourhood is already decoded, codes the residuals, writes the values into the
padded chunk, and calls ``update`` so adaptive state (recurrent state, bias statistics) moves
on identically on both sides. Everything on this path must be integer-exact.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ..scheduling import PaddedGeometry


class ChunkModel(Protocol):
    def predict(self, vol: np.ndarray, res: np.ndarray, flat: np.ndarray,
                zloc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (mu, bucket) int64 arrays; mu within [0, vmax]."""
        ...

    def update(self, vol: np.ndarray, res: np.ndarray, flat: np.ndarray, zloc: np.ndarray,
               residual: np.ndarray) -> None:
        """Advance adaptive state. The engine has just stored the coded residuals in
        ``res[flat]``; a model that needs another per-voxel quantity may overwrite them."""
        ...


class Predictor(Protocol):
    name: str
    lag: int  # wavefront lag between slices (scheduling.wavefront)

    def params(self) -> bytes: ...

    def start_chunk(self, geom: PaddedGeometry, vmax: int) -> ChunkModel: ...
