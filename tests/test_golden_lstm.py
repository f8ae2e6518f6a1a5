"""Golden streams made with each shipped version of the default model (``make_golden.py --set lstm``).

* Every later medzip must decode all of them exactly, including those of earlier model versions
  (their model files ship as ``models/medzip-lstm@<sha>.npz``).
* Re-encoding today with the current model gives the same bytes
  (``test_ALARM_lstm_encoder_output_changed``): the model file, the integer kernels and the coder
  are all still the ones that wrote them.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import medzip
from medzip.container import Container
from medzip.predictors.lstm import builtin_model

from conftest import GOLDEN, comparable_header

LSTM_GOLDEN = GOLDEN / "lstm"
MANIFEST = json.loads((LSTM_GOLDEN / "manifest.json").read_text())["volumes"]
NAMES = sorted(MANIFEST)


def _load(name):
    entry = MANIFEST[name]
    return entry, (LSTM_GOLDEN / entry["file"]).read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_lstm_golden_decodes_exactly(name):
    entry, data = _load(name)
    assert hashlib.sha256(data).hexdigest() == entry["mzp_sha256"]
    out = medzip.decompress(data, workers=2)
    assert out.shape == tuple(entry["shape"]) and out.dtype.str == entry["dtype"]
    assert hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest() == entry["sha256"]


CURRENT = builtin_model("medzip-lstm").sha256


def test_lstm_golden_covers_current_and_earlier_models():
    shas = set()
    for name in NAMES:
        entry, data = _load(name)
        (vh,) = Container.parse(data).header["volumes"]
        if vh["model"]["name"] == "medzip-lstm":
            assert vh["model"]["sha256"] == entry["model_sha256"]
            shas.add(vh["model"]["sha256"])
    assert CURRENT in shas and len(shas) >= 2


@pytest.mark.parametrize("name", [n for n in NAMES if MANIFEST[n]["model_sha256"] in (CURRENT, None)])
def test_ALARM_lstm_encoder_output_changed(name):
    entry, data = _load(name)
    arr = medzip.decompress(data)
    again = Container.parse(medzip.compress(arr, **entry["compress_kwargs"]))
    old = Container.parse(data)
    assert (comparable_header(again.header, old.version)
            == comparable_header(old.header, old.version)), (
        "the LSTM encoder output changed; if intended (new model or coder), remake with "
        "`python tests/golden/make_golden.py --set lstm --force` and keep the old files decodable")
