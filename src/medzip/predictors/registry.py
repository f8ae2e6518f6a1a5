"""Names and levels -> predictor objects, on both the encoder and the decoder side."""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedInputError
from .ls3d import LS3DPredictor
from .lstm import LSTMPredictor, find_model, load_model

DEFAULT_LEVEL = 5
LEVELS = {"fast": 1, "default": DEFAULT_LEVEL, "strong": 9}


def model_for_level(level: int) -> str:
    """1-3: classical ls3d; 4-6: the default row LSTM; 7-9: the larger row LSTM."""
    if not 1 <= level <= 9:
        raise UnsupportedInputError(f"compression level must be 1..9, got {level}")
    return "ls3d" if level <= 3 else "medzip-lstm" if level <= 6 else "medzip-lstm-strong"


def fit_predictor(model: str, vol4: np.ndarray):
    """Encoder side: build (and fit) the predictor; returns (predictor, header entry)."""
    ls = LS3DPredictor.fit(vol4)
    if model == "ls3d":
        return ls, {"name": "ls3d"}
    mf = load_model(model)
    if mf.meta["kind"] == "paper":
        from .paper import PaperPredictor
        pred = PaperPredictor(mf, vol4)
    else:
        pred = LSTMPredictor(mf, ls)
    return pred, pred.header_entry()


def load_predictor(entry: dict, params: bytes, user_model: str | None = None):
    """Decoder side: rebuild the predictor the stream names, refusing anything else."""
    if entry.get("name") == "ls3d":
        return LS3DPredictor.from_params(params)
    mf = find_model(entry, user_model)
    if mf.meta["kind"] == "paper":
        from .paper import PaperPredictor
        return PaperPredictor.from_params(mf, params)
    return LSTMPredictor(mf, LS3DPredictor.from_params(params))
