"""Golden files: streams written once by ``tests/golden/make_golden.py`` and committed.

Two separate promises are checked:

* **Decoder compatibility** -- every committed ``.mzp`` still decodes to the exact array
  (shape, dtype incl. byte order, SHA-256 of the bytes). Failing this means files written by an
  earlier medzip no longer open: never acceptable within a major format version.
* **ls3d encoder determinism** (``test_ALARM_ls3d_encoder_output_changed``) -- encoding the same
  array with the same settings today gives the same stream (ignoring the ``writer`` version
  string). Failing this alone means the ls3d encoder's output changed. If that was intended,
  regenerate with ``python tests/golden/make_golden.py --force`` and commit the new files
  together with the change; if not, it is a determinism regression.

The tests never regenerate anything.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import medzip
from medzip.container import FORMAT_MAJOR, FORMAT_MINOR, JSON_FORMAT, Container

from conftest import GOLDEN, Stream, comparable_header

MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())["volumes"]
NAMES = sorted(MANIFEST)
# Golden files that must exercise the value-table path (sparse histograms).
VALUE_TABLE = {"ct_nema_2x64x64_u2", "mr_heart_6x40x40_u1_sparse"}


def _golden(name: str) -> tuple[dict, bytes]:
    entry = MANIFEST[name]
    return entry, (GOLDEN / entry["file"]).read_bytes()


def test_golden_set_is_small_and_complete():
    files = [p for p in GOLDEN.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 500_000
    assert 3 <= len(NAMES) <= 5
    dtypes = {MANIFEST[n]["dtype"] for n in NAMES}
    assert {"|i1", ">u2"} <= dtypes
    assert any(len(MANIFEST[n]["shape"]) == 4 for n in NAMES)
    assert VALUE_TABLE <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_golden_file_is_the_committed_one(name):
    entry, data = _golden(name)
    assert hashlib.sha256(data).hexdigest() == entry["mzp_sha256"], (
        f"{entry['file']} differs from the file recorded in manifest.json")


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_golden_decodes_to_the_exact_array(name, workers):
    entry, data = _golden(name)
    out = medzip.decompress(data, workers=workers)
    assert out.shape == tuple(entry["shape"])
    assert out.dtype.str == entry["dtype"]
    assert hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest() == entry["sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_golden_header(name):
    entry, data = _golden(name)
    container = Container.parse(data)
    assert container.version[0] == 1
    (vh,) = container.header["volumes"]
    assert vh["shape"] == entry["shape"] and vh["dtype"] == entry["dtype"]
    assert vh["sha256"] == entry["sha256"]
    assert vh["codec"] == "predictive" and vh["model"]["name"] == "ls3d"
    assert ("value_table" in vh) == (name in VALUE_TABLE)
    info = medzip.inspect(data)
    assert info["volumes"][0]["model"] == "ls3d"


@pytest.mark.parametrize("name", NAMES)
def test_ALARM_ls3d_encoder_output_changed(name):
    """Re-encode the golden array with the recorded settings: the stream must be identical."""
    entry, data = _golden(name)
    arr = medzip.decompress(data)
    # the ALARM guards the predictive coder: the zstd/xz fallback (format 1.2)
    # may store these tiny crops smaller, so it is off here
    again = medzip.compress(arr, **entry["compress_kwargs"], fallback=False)
    old, new = Stream.parse(data), Stream.parse(again)
    msg = (f"ls3d ENCODER OUTPUT CHANGED for golden file {entry['file']}: if this is intended, "
           "run `python tests/golden/make_golden.py --force` and commit the new golden files "
           "with the change; otherwise the encoder lost its determinism")
    # a golden file of an older minor version must still match once the keys that later minors
    # added are set aside (the writer's version string may change freely)
    # the writer picks 2.0 (compressed header) or 1.2 (plain JSON), whichever is smaller;
    # the header's meaning and the coded body must not change
    assert (new.major, new.minor) in ((FORMAT_MAJOR, FORMAT_MINOR), JSON_FORMAT)
    assert (old.major, old.minor) <= (new.major, new.minor), msg
    assert (comparable_header(old.header, (old.major, old.minor))
            == comparable_header(new.header, (old.major, old.minor))), msg
    assert old.body == new.body, msg
