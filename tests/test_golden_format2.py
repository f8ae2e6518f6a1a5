"""Golden streams of format 2.0 (compressed header) and 1.2's fallback codecs, written once by
``tests/golden/make_golden.py --set format2``: every later medzip must decode them exactly.

No encoder ALARM here: zstd/xz output may change with the library version, and the predictive
coder's determinism is guarded by tests/test_golden.py.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import medzip
from medzip.container import Container

from conftest import GOLDEN

FOLDER = GOLDEN / "format2"
MANIFEST = json.loads((FOLDER / "manifest.json").read_text())["volumes"]


def test_format2_set_covers_each_new_form():
    assert {e["codec"] for e in MANIFEST.values()} == {"zstd", "xz", "predictive"}
    assert {e["format_version"] for e in MANIFEST.values()} == {"2.0"}
    assert sum((FOLDER / e["file"]).stat().st_size for e in MANIFEST.values()) < 100_000


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_format2_golden_decodes_exactly(name):
    entry = MANIFEST[name]
    data = (FOLDER / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["mzp_sha256"]
    container = Container.parse(data)
    assert "%d.%d" % container.version == entry["format_version"]
    assert container.header["volumes"][0]["codec"] == entry["codec"]
    out = medzip.decompress(data)
    assert out.shape == tuple(entry["shape"]) and out.dtype.str == entry["dtype"]
    assert hashlib.sha256(np.ascontiguousarray(out).tobytes()).hexdigest() == entry["sha256"]


FILES = json.loads((FOLDER / "manifest.json").read_text())["files"]


@pytest.mark.parametrize("name", sorted(FILES))
def test_format2_stored_file_restores_byte_for_byte(name, tmp_path):
    from medzip import files

    entry = FILES[name]
    data = (FOLDER / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["mzp_sha256"]
    assert medzip.inspect(data)["format_version"] == entry["format_version"] == "2.0"
    (written,) = files.decompress_bytes(data, tmp_path / name)
    restored = written.read_bytes()
    assert len(restored) == entry["size"]
    assert hashlib.sha256(restored).hexdigest() == entry["sha256"]
