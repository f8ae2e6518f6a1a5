"""Golden streams made with each shipped version of the built-in models
(``make_golden.py --set lstm`` / ``--set paper``).

* Every later medzip must decode all of them exactly, including those of earlier model versions
  (their model files ship as ``models/<name>@<sha>.npz``).
* Re-encoding today with the current model gives the same bytes
  (``test_ALARM_model_encoder_output_changed``): the model file, the integer kernels and the
  coder are all still the ones that wrote them. medzip-paper's kernels are only checked by
  these stored streams (its other tests encode and decode with the same code).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import medzip
from medzip.container import Container
from medzip.predictors.models import builtin_model

from conftest import GOLDEN, comparable_header

# golden folder -> the built-in model its files were made with
SETS = {"lstm": "medzip-lstm", "paper": "medzip-paper"}
MANIFESTS = {k: json.loads((GOLDEN / k / "manifest.json").read_text())["volumes"] for k in SETS}
CASES = [(k, name) for k in SETS for name in sorted(MANIFESTS[k])]
CURRENT = {k: builtin_model(model).sha256 for k, model in SETS.items()}


def _load(case):
    folder, name = case
    entry = MANIFESTS[folder][name]
    return entry, (GOLDEN / folder / entry["file"]).read_bytes()


def _ids(case):
    return "/".join(case)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_model_golden_decodes_exactly(case):
    entry, data = _load(case)
    assert hashlib.sha256(data).hexdigest() == entry["mzp_sha256"]
    out = medzip.decompress(data, workers=2)
    assert out.shape == tuple(entry["shape"]) and out.dtype.str == entry["dtype"]
    assert hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest() == entry["sha256"]


def test_lstm_golden_covers_current_and_earlier_models():
    shas = set()
    for case in [c for c in CASES if c[0] == "lstm"]:
        entry, data = _load(case)
        (vh,) = Container.parse(data).header["volumes"]
        if vh["model"]["name"] == "medzip-lstm":
            assert vh["model"]["sha256"] == entry["model_sha256"]
            shas.add(vh["model"]["sha256"])
    assert CURRENT["lstm"] in shas and len(shas) >= 2


def test_paper_golden_uses_the_current_paper_model():
    shas = {_load(c)[0]["model_sha256"] for c in CASES if c[0] == "paper"}
    assert CURRENT["paper"] in shas


@pytest.mark.parametrize("case", [c for c in CASES
                                  if MANIFESTS[c[0]][c[1]]["model_sha256"] in (CURRENT[c[0]], None)],
                         ids=_ids)
def test_ALARM_model_encoder_output_changed(case):
    entry, data = _load(case)
    arr = medzip.decompress(data)
    # the ALARM guards the predictive coder: the zstd/xz fallback (format 1.2)
    # may store these tiny crops smaller, so it is off here
    again = Container.parse(medzip.compress(arr, **entry["compress_kwargs"],
                                            fallback=False))
    old = Container.parse(data)
    assert (comparable_header(again.header, old.version)
            == comparable_header(old.header, old.version)), (
        f"the {SETS[case[0]]} encoder output changed; if intended (new model or coder), remake "
        f"with `python tests/golden/make_golden.py --set {case[0]} --force` and keep the old "
        "files decodable")
