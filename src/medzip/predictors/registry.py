"""Names and levels -> predictor objects, on both the encoder and the decoder side."""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedInputError, UnsupportedVersionError
from .blend import NAME as BLEND, VERSION as BLEND_VERSION, BlendPredictor
from .ls3d import LS3DPredictor
from .lstm import LSTMPredictor, find_model, load_model

DEFAULT_LEVEL = 5
LEVELS = {"fast": 1, "default": DEFAULT_LEVEL, "strong": 9}


def model_for_level(level: int) -> str:
    """1-3: classical ls3d; 4: the row LSTM; 5-9: medzip-blend (7-9 also search, see below)."""
    if not 1 <= level <= 9:
        raise UnsupportedInputError(f"compression level must be 1..9, got {level}")
    return "ls3d" if level <= 3 else "medzip-lstm" if level == 4 else BLEND


SEARCH_LEVEL = 7


def fit_candidates(model: str, vol4: np.ndarray, level: int) -> list:
    """Encoder side: predictors to try, each ``(predictor, header entry)``; the smallest wins.

    medzip-blend (levels 5-9) at levels >= 7 also tries it without bias canceller, on the global
    LS base only and without the LSTM. With ``model="medzip-lstm"``, levels >= 7 encode the
    row-LSTM model with and without its bias canceller and also with ls3d. The smallest stream
    wins (slower encoding; decoding runs only the winner).
    """
    if model == BLEND:
        # the blend of experts as base, the shipped row LSTM on top, censored coding
        first = BlendPredictor.fit(vol4, lstm=load_model("medzip-lstm"))
        out = [first]
        if level >= SEARCH_LEVEL:
            out += [first.variant(bias_cancel=False),  # small masked MR: the canceller can cost
                    first.variant(experts=0b00001),  # global LS base only
                    first.variant(lstm=None)]  # the classical blend alone
        return [(p, p.header_entry()) for p in out]
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
    if entry.get("name") == BLEND:
        if entry.get("version") != BLEND_VERSION:
            raise UnsupportedVersionError(f"stream uses {BLEND} version {entry.get('version')}; "
                                          f"this medzip decodes version {BLEND_VERSION}")
        lstm = find_model(entry["lstm"], user_model) if isinstance(entry.get("lstm"), dict) else None
        return BlendPredictor.from_params(params, lstm)
    mf = find_model(entry, user_model)
    if mf.meta["kind"] == "paper":
        from .paper import PaperPredictor
        return PaperPredictor.from_params(mf, params)
    return LSTMPredictor.from_params(mf, params)
