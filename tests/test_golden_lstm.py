"""Golden streams made with the shipped default model (``make_golden.py --set lstm``).

* Every later medzip must decode them exactly (decoder compatibility of the integer LSTM path).
* Re-encoding today gives the same bytes (``test_ALARM_lstm_encoder_output_changed``): the
  model file, the integer kernels and the coder are all still the ones that wrote them.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import medzip
from medzip.container import Container
from medzip.predictors.lstm import builtin_model

from conftest import GOLDEN

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


def test_lstm_golden_names_the_shipped_model():
    models = set()
    for name in NAMES:
        _, data = _load(name)
        (vh,) = Container.parse(data).header["volumes"]
        models.add(vh["model"]["name"])
        if vh["model"]["name"] == "medzip-lstm":
            assert vh["model"]["sha256"] == builtin_model("medzip-lstm").sha256
    assert "medzip-lstm" in models


@pytest.mark.parametrize("name", NAMES)
def test_ALARM_lstm_encoder_output_changed(name):
    entry, data = _load(name)
    arr = medzip.decompress(data)
    again = Container.parse(medzip.compress(arr, **entry["compress_kwargs"]))
    old = Container.parse(data)
    strip = lambda h: {k: v for k, v in h.items() if k != "writer"}  # noqa: E731
    assert strip(again.header) == strip(old.header), (
        "the LSTM encoder output changed; if intended (new model or coder), remake with "
        "`python tests/golden/make_golden.py --set lstm --force` and keep the old files decodable")
