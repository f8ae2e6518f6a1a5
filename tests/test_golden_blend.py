"""Golden streams of the default predictor, medzip-blend (``make_golden.py --set blend`` and
``--set blend2``).

* Every later medzip must decode them exactly (medzip-blend v1 streams: censored residual coding,
  classified least squares, blend of experts, row LSTM on top; v2: the same with a 4-D series'
  previous volume as context or a padding mask; v3: wide class sets; v4: long class sets). ``blend``: written with
  the medzip-lstm network (LS-trained); ``blend2``: with medzip-blend-lstm (trained on the
  blend's residuals), v1 and v2 streams; ``blend3``: the same network, a v3 stream;
  ``blend4``: a v4 stream of an interpolated (zero-filled k-space) crop of real MR (long class
  sets); ``blend4deep``: a v4 stream of a slice-interpolated (zero-filled kz) crop (deep sets,
  the class sets alone blended); ``blend5``: a v5 stream of a CT crop padded below its air floor
  outside a circular field of view (padding mask, censoring at the field of view's floor), and
  the blend4deep crop as today's encoder codes it (since stop 14 it sends the crop's padding
  mask too, so ``blend4deep`` is a decode test and its ALARM lived there); ``blend6``: every
  input of ``blend2``-``blend5`` as the stop-15 encoder codes it (v6 streams where the fixed-rule
  in-slice experts and, with the wide sets, the in-slice set are used on slice-poor crops; the
  same versions as before elsewhere). Since stop 15 the encoder ALARM of all of them lives in
  ``blend6`` and the older sets are decode tests. ``blend7``: the inputs the stop-16 encoder
  codes differently (the in-slice set wherever it pays, sets fitted with masked voxels at the
  field of view's floor, version 7's padding value: the NEMA crop), a single slice coded with
  the in-slice set and a CT crop padded with 0 HU (v7); ``blend8``: the inputs whose padding
  mask the stop-17 encoder writes by rows (v8: the discs, the masked EPI corner, the colin
  slice's background) and a full-resolution CT slice padded with -3024 HU; ``blend9``: every
  input of ``blend6``-``blend8`` coded with the retrained network (medzip-blend-lstm
  cb773e6f0523, stop 17), which runs on every stream: since then the encoder ALARM of all of
  them lives in ``blend9`` and ``blend6``-``blend8`` are decode tests of the earlier network
  (shipped as ``medzip-blend-lstm@d717b647d9c3.npz``). A file's ALARM lives in the newest set
  (of those with one) that holds its name.
* Re-encoding today gives the same bytes (``test_ALARM_blend_encoder_output_changed``): the fit,
  the integer kernels, the model file and the censored coder are still the ones that wrote them.
  If a change is intended, bump ``blend.VERSION`` (old streams must keep decoding) and add files.
  Files whose input the encoder now codes differently (the ``blend`` set, since the blend got its
  own network) stay decode tests; their ALARM lives in the newer set.
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

# golden folder -> whether today's encoder must reproduce its files (the ALARM)
SETS = {"blend": False, "blend2": False, "blend3": False, "blend4": False, "blend4deep": False,
        "blend5": False, "blend6": False, "blend7": False, "blend8": False, "blend9": True}
MANIFESTS = {s: json.loads((GOLDEN / s / "manifest.json").read_text())["volumes"] for s in SETS}
NAMES = [f"{s}/{name}" for s in SETS for name in sorted(MANIFESTS[s])]
# the encoder ALARM of an input lives in the newest set (of those with one) that holds it
NEWEST = {name.split("/")[1]: name for name in NAMES if SETS[name.split("/")[0]]}


def _load(key):
    folder, name = key.split("/")
    entry = MANIFESTS[folder][name]
    return entry, (GOLDEN / folder / entry["file"]).read_bytes()


@pytest.mark.parametrize("name", NAMES)
def test_blend_golden_decodes_exactly(name):
    entry, data = _load(name)
    assert hashlib.sha256(data).hexdigest() == entry["mzp_sha256"]
    (vh,) = Container.parse(data).header["volumes"]
    assert vh["model"]["name"] == "medzip-blend"
    if "model_version" in entry:  # blend3 on: the version the writer recorded
        assert vh["model"]["version"] == entry["model_version"]
    else:  # version 2 exactly where a series was coded with its previous volume or a mask sent
        v2 = name.startswith("blend2/") and ("fmri4d" in name or "masked" in name)
        assert vh["model"]["version"] == (2 if v2 else 1)
    for workers in (1, 2):
        out = medzip.decompress(data, workers=workers)
        assert out.shape == tuple(entry["shape"]) and out.dtype.str == entry["dtype"]
        assert hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest() == entry["sha256"]


@pytest.mark.parametrize("name", sorted(NEWEST.values()))
def test_ALARM_blend_encoder_output_changed(name):
    entry, data = _load(name)
    arr = medzip.decompress(data)
    # the ALARM guards the predictive coder: the zstd/xz fallback (format 1.2) may store these
    # tiny crops smaller, so it is off here
    kwargs = {**entry["compress_kwargs"], "fallback": False}
    again = Container.parse(medzip.compress(arr, **kwargs))
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
        load_predictor({**vh["model"], "version": 9}, params)
    for version in (2, 3, 4, 5, 6, 7, 8):  # a v1 parameter block named another known version
        with pytest.raises(ValueError):
            load_predictor({**vh["model"], "version": version}, params)


def test_decoding_the_default_model_does_not_import_torch():
    import subprocess
    _, data = _load(NAMES[0])
    code = ("import sys, medzip; medzip.decompress(open(sys.argv[1], 'rb').read()); "
            "print('torch' in sys.modules)")
    folder, name = NAMES[-1].split("/")  # a v2 (previous-volume) stream
    path = GOLDEN / folder / MANIFESTS[folder][name]["file"]
    out = subprocess.run([sys.executable, "-c", code, str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
