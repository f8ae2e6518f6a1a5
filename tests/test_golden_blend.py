"""Golden streams of the default predictor, medzip-blend (``make_golden.py --set blend``).

* Every later medzip must decode them exactly (medzip-blend v1 streams: censored residual coding,
  classified least squares, blend of experts, row LSTM on top).
* Re-encoding today gives the same bytes (``test_ALARM_blend_encoder_output_changed``): the fit,
  the integer kernels, the model file and the censored coder are still the ones that wrote them.
  If a change is intended, bump ``blend.VERSION`` (old streams must keep decoding) and add files.
"""
from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest

import medzip
from medzip.container import Container

from conftest import GOLDEN, comparable_header

BLEND_GOLDEN = GOLDEN / "blend"
MANIFEST = json.loads((BLEND_GOLDEN / "manifest.json").read_text())["volumes"]
NAMES = sorted(MANIFEST)


def _load(name):
    entry = MANIFEST[name]
    return entry, (BLEND_GOLDEN / entry["file"]).read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_blend_golden_decodes_exactly(name):
    entry, data = _load(name)
    assert hashlib.sha256(data).hexdigest() == entry["mzp_sha256"]
    (vh,) = Container.parse(data).header["volumes"]
    assert vh["model"]["name"] == "medzip-blend" and vh["model"]["version"] == 1
    for workers in (1, 2):
        out = medzip.decompress(data, workers=workers)
        assert out.shape == tuple(entry["shape"]) and out.dtype.str == entry["dtype"]
        assert hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest() == entry["sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_ALARM_blend_encoder_output_changed(name):
    entry, data = _load(name)
    arr = medzip.decompress(data)
    # the ALARM guards the predictive coder: the zstd/xz fallback (format 1.2) may store these
    # tiny crops smaller, so it is off here
    again = Container.parse(medzip.compress(arr, **entry["compress_kwargs"], fallback=False))
    old = Container.parse(data)
    assert (comparable_header(again.header, old.version)
            == comparable_header(old.header, old.version)), (
        "the medzip-blend encoder output changed; if intended, bump blend.VERSION, keep the old "
        "version decodable and add files with `python tests/golden/make_golden.py --set blend`")


def test_blend_stream_names_unknown_version_cleanly():
    from medzip.errors import UnsupportedVersionError
    from medzip.predictors.registry import load_predictor

    _, data = _load(NAMES[0])
    (vh,) = Container.parse(data).header["volumes"]
    params = Container.parse(data).section(vh["predictor_params"], "predictor parameters")
    with pytest.raises(UnsupportedVersionError):
        load_predictor({**vh["model"], "version": 2}, params)


def test_decoding_the_default_model_does_not_import_torch():
    import subprocess
    _, data = _load(NAMES[0])
    code = ("import sys, medzip; medzip.decompress(open(sys.argv[1], 'rb').read()); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(BLEND_GOLDEN / MANIFEST[NAMES[0]]["file"])],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
