"""Names and levels -> predictor objects, on both the encoder and the decoder side."""
from __future__ import annotations

import numpy as np

from ..errors import ModelMismatchError, UnsupportedInputError
from .ls3d import LS3DPredictor

DEFAULT_LEVEL = 5
LEVELS = {"fast": 1, "default": DEFAULT_LEVEL, "strong": 9}


def model_for_level(level: int) -> str:
    if not 1 <= level <= 9:
        raise UnsupportedInputError(f"compression level must be 1..9, got {level}")
    return "ls3d"


def fit_predictor(model: str, vol4: np.ndarray, level: int):
    """Encoder side: build (and fit) the predictor; returns (predictor, header entry)."""
    if model == "ls3d":
        pred = LS3DPredictor.fit(vol4)
        return pred, {"name": "ls3d"}
    raise UnsupportedInputError(f"unknown model '{model}' (available: ls3d)")


def load_predictor(entry: dict, params: bytes):
    """Decoder side: rebuild the predictor the stream names, refusing anything else."""
    name = entry.get("name")
    if name == "ls3d":
        return LS3DPredictor.from_params(params)
    raise ModelMismatchError(f"stream needs model '{name}', which this medzip does not have")
