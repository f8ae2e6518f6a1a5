"""Names and levels -> predictor objects, on both the encoder and the decoder side."""
from __future__ import annotations

import operator

import numpy as np

from ..errors import UnsupportedInputError, UnsupportedVersionError
from .blend import (ALL_EXPERTS, FIXED_EXPERTS, GLOBAL_LS_EXPERTS, LONG_EXPERTS,
                    NAME as BLEND, VERSIONS as BLEND_VERSIONS, BlendPredictor)
from .ls3d import LS3DPredictor
from .lstm import LSTMPredictor
from .models import find_model, load_model
from .paper import PaperPredictor

DEFAULT_LEVEL = 5
LEVELS = {"fast": 1, "default": DEFAULT_LEVEL, "strong": 9}


def model_for_level(level: int) -> str:
    """1-3: classical ls3d; 4: the row LSTM; 5-9: medzip-blend (7-9 also search, see below)."""
    if not 1 <= level <= 9:
        raise UnsupportedInputError(f"compression level must be 1..9, got {level}")
    return "ls3d" if level <= 3 else "medzip-lstm" if level == 4 else BLEND


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


SEARCH_LEVEL = 7  # levels from here on try several encoder options and keep the smallest


def _fit_row_lstm(mf, vol4: np.ndarray, level: int, threads: int = 1) -> list:
    """The row LSTM over a per-volume LS fit; from SEARCH_LEVEL also without its bias
    canceller and the plain LS predictor (decoding runs only the winner)."""
    ls = LS3DPredictor.fit(vol4, threads)
    first = LSTMPredictor(mf, ls)
    out = [first]
    if level >= SEARCH_LEVEL:
        out += [LSTMPredictor(mf, ls, bias_cancel=not first.bias_cancel), ls]
    return out


BLEND_NETWORK = "medzip-blend-lstm"  # the row LSTM trained on the blend's residuals


def _fit_blend(vol4: np.ndarray, level: int, network=None, threads: int = 1,
               scratch: bool = False) -> list:
    """medzip-blend: the blend of experts as base, the shipped row LSTM on top, censored coding;
    a series uses its previous volumes where the fit says it pays. From SEARCH_LEVEL also
    without bias canceller, on the global LS base only (with its previous-volume set), without
    the LSTM, with the other previous-volume, wide-class-set and in-slice-set choices, where the
    deep sets are used (which blend the class sets alone) with every expert, and where the long
    sets are, with their class and in-slice sets alone; without the fixed-rule experts (blend
    version 6)."""
    first = BlendPredictor.fit(vol4, lstm=network or load_model(BLEND_NETWORK), threads=threads,
                               scratch=scratch)
    out = [first]
    if level >= SEARCH_LEVEL:
        out += [first.variant(bias_cancel=False),  # small masked MR: the canceller can cost
                first.variant(experts=GLOBAL_LS_EXPERTS),  # the global LS base only
                first.variant(lstm=None)]  # the classical blend alone
        if first.experts & FIXED_EXPERTS:  # the fixed-rule experts can cost on smooth data
            out.append(first.variant(experts=first.experts & ~FIXED_EXPERTS))
        if first.tcoef is not None:  # a series: the encoder's guess may be wrong
            out.append(first.variant(temporal=not first.temporal))
        if first.wcoef is not None:  # so may its guess about the wide (long, deep) class sets
            other = {"wide": not first.wide}
            if first.deep:  # without them, with every expert
                other["experts"] = ALL_EXPERTS
            out.append(first.variant(**other))
        if not first.long:  # the fit's in-slice choice may be wrong (its set is kept)
            out.append(first.variant(in_slice=not first.in_slice))
        if first.deep:  # the deep sets blend the class sets alone: the whole blend too
            out.append(first.variant(experts=ALL_EXPERTS))
        if first.long:  # the long sets blend every expert: their class and in-slice sets too
            out.append(first.variant(experts=LONG_EXPERTS))
    return out


def _fit_paper(mf, vol4: np.ndarray, level: int, threads: int = 1) -> list:
    return [PaperPredictor(mf, vol4)]  # needs no least-squares front end


# Predictors defined by code alone, by the name in the stream's model entry:
# name -> (fit(vol4, level, threads) -> candidates, from_params(blob)).
CLASSICAL = {
    "ls3d": (lambda vol4, level, threads=1: [LS3DPredictor.fit(vol4, threads)],
             LS3DPredictor.from_params),
}
# Predictors defined by a model file, by the file's "kind":
# kind -> (fit(model, vol4, level, threads) -> candidates, from_params(model, blob)).
MODEL_KINDS = {
    "row-lstm": (_fit_row_lstm, LSTMPredictor.from_params),
    "paper": (_fit_paper, PaperPredictor.from_params),
}


def fit_candidates(model: str, vol4: np.ndarray, level: int, threads: int = 1,
                   scratch: bool = False) -> list:
    """Encoder side: predictors to try, each ``(predictor, header entry)``, in order of
    preference; the smallest stream wins (ties keep the earlier). ``threads`` may share the
    fits' sums (predictors/sums.py): the same predictors whatever the count. ``scratch``:
    ``vol4`` is a copy the fit may overwrite (the encoder drops it afterwards)."""
    if model == BLEND:
        preds = _fit_blend(vol4, level, threads=threads, scratch=scratch)
    elif model in CLASSICAL:
        preds = CLASSICAL[model][0](vol4, level, threads)
    else:
        mf = load_model(model)
        if mf.meta.get("base") == "blend":  # a network trained to correct the blend
            preds = _fit_blend(vol4, max(level, DEFAULT_LEVEL), mf, threads, scratch)
        else:
            preds = MODEL_KINDS[mf.meta["kind"]][0](mf, vol4, level, threads)
    return [(p, p.header_entry()) for p in preds]


def load_predictor(entry: dict, params: bytes, user_model: str | None = None):
    """Decoder side: rebuild the predictor the stream names, refusing anything else."""
    if entry.get("name") == BLEND:
        version = entry.get("version")
        if version not in BLEND_VERSIONS:
            raise UnsupportedVersionError(
                f"stream uses {BLEND} version {str(version)[:20]}; this medzip decodes versions "
                + ", ".join(map(str, BLEND_VERSIONS)))
        lstm = find_model(entry["lstm"], user_model) if isinstance(entry.get("lstm"), dict) else None
        pred = BlendPredictor.from_params(params, lstm)
        if pred.version != version:
            raise ValueError("blend parameters do not match the model entry's version")
        return pred
    if entry.get("name") in CLASSICAL:
        return CLASSICAL[entry["name"]][1](params)
    mf = find_model(entry, user_model)
    return MODEL_KINDS[mf.meta["kind"]][1](mf, params)
