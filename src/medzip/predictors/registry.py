"""Names and levels -> predictor objects, on both the encoder and the decoder side."""
from __future__ import annotations

import operator

import numpy as np

from ..errors import UnsupportedInputError
from .ls3d import LS3DPredictor
from .lstm import LSTMPredictor, find_model, load_model

DEFAULT_LEVEL = 5
LEVELS = {"fast": 1, "default": DEFAULT_LEVEL, "strong": 9}


def model_for_level(level: int) -> str:
    """1-3: classical ls3d; 4-9: the row LSTM (7-9 also search encoder options, see below)."""
    if not 1 <= level <= 9:
        raise UnsupportedInputError(f"compression level must be 1..9, got {level}")
    return "ls3d" if level <= 3 else "medzip-lstm"


def parse_level(level) -> int:
    """A level as an int 1..9 or a name from LEVELS (``"strong"``); None is the default."""
    if level is None:
        return DEFAULT_LEVEL
    if isinstance(level, str) and level.strip().lower() in LEVELS:
        return LEVELS[level.strip().lower()]
    try:
        number = operator.index(level) if not isinstance(level, str) else int(level)
    except (TypeError, ValueError):
        names = ", ".join(LEVELS)
        raise UnsupportedInputError(f"compression level must be 1..9 or one of {names}, "
                                    f"got {level!r}") from None
    model_for_level(number)
    return number


SEARCH_LEVEL = 7


def fit_candidates(model: str, vol4: np.ndarray, level: int) -> list:
    """Encoder side: predictors to try, each ``(predictor, header entry)``; the smallest wins.

    Levels >= 7 encode a row-LSTM model with and without its bias canceller and also with
    ls3d, keeping the smallest stream (slower encoding; decoding runs only the winner).
    """
    mf = None if model == "ls3d" else load_model(model)
    if mf is not None and mf.meta["kind"] == "paper":  # needs no least-squares front end
        from .paper import PaperPredictor
        pred = PaperPredictor(mf, vol4)
        return [(pred, pred.header_entry())]
    ls = LS3DPredictor.fit(vol4)
    if mf is None:
        return [(ls, {"name": "ls3d"})]
    first = LSTMPredictor(mf, ls)
    out = [(first, first.header_entry())]
    if level >= SEARCH_LEVEL:
        other = LSTMPredictor(mf, ls, bias_cancel=not first.bias_cancel)
        out += [(other, other.header_entry()), (ls, {"name": "ls3d"})]
    return out


def load_predictor(entry: dict, params: bytes, user_model: str | None = None):
    """Decoder side: rebuild the predictor the stream names, refusing anything else."""
    if entry.get("name") == "ls3d":
        return LS3DPredictor.from_params(params)
    mf = find_model(entry, user_model)
    if mf.meta["kind"] == "paper":
        from .paper import PaperPredictor
        return PaperPredictor.from_params(mf, params)
    return LSTMPredictor.from_params(mf, params)
