"""Value mapping on real data: rescaled integers (values missing where the histogram is dense)
are coded as their ranks, which are the original integers again; merely sparse tails are not."""
from __future__ import annotations

import numpy as np
import pytest

import medzip
from medzip import volume_codec
from medzip.container import Container

from conftest import EXAMPLE4D, demo_volume, example4d_head_series


@pytest.fixture(scope="module")
def dwi_b0() -> np.ndarray:
    """The bundled real DWI b0 volume (dipy, 10 x 128 x 128 int16)."""
    return demo_volume()


def _table(blob: bytes):
    (vh,) = Container.parse(blob).header["volumes"]
    return vh.get("value_table")


def test_real_scan_with_rare_values_keeps_its_values(dwi_b0):
    """Noise makes every value occur where the histogram is dense (45 % of the span is unused
    only in the tails): no rank table, which would bend the predictors' geometry there."""
    hist = np.bincount((dwi_b0.astype(np.int64) - dwi_b0.min()).ravel())
    assert 0.5 < np.count_nonzero(hist) / hist.size < 0.6
    assert _table(medzip.compress(dwi_b0, fallback=False)) is None


@pytest.fixture(scope="module")
def epi() -> np.ndarray:
    """Volume 0 of nibabel's real EPI, cropped to the head (8 x 48 x 64 int16)."""
    if EXAMPLE4D is None:
        pytest.skip("nibabel's example4d.nii.gz is missing")
    return example4d_head_series()[0]


@pytest.mark.parametrize("name, factor, gain", [("dwi_b0", 1.08, 0.01), ("epi", 1.3, 0.03),
                                                ("epi", 1.6, 0.06)])
def test_rescaled_scan_is_coded_as_its_original_integers(request, name, factor, gain,
                                                          monkeypatch):
    """A real scan stretched by a factor above 1 (as converters filling the 16-bit range write
    it) that still uses more than half of its span, so only the dense-part rule sees it: coded
    as ranks, it costs what the original costs, and log2(factor) bits per voxel less than
    without the table."""
    arr = request.getfixturevalue(name)
    scaled = np.round((arr.astype(np.int64) - arr.min()) * factor).astype(np.uint16)
    used = np.unique(scaled)
    assert used.size * 2 > int(scaled.max()) + 1  # not caught by the sparse-span rule
    blob = medzip.compress(scaled, fallback=False)
    table = _table(blob)
    assert table is not None and table["count"] == used.size
    np.testing.assert_array_equal(medzip.decompress(blob, workers=2), scaled)
    assert len(blob) < 1.01 * len(medzip.compress(arr, fallback=False))
    monkeypatch.setattr(volume_codec, "_missing_where_dense", lambda hist: False)
    without = medzip.compress(scaled, fallback=False)
    assert _table(without) is None
    assert len(blob) < (1 - gain) * len(without)


def test_dense_part_rule_on_synthetic_histograms():
    """Every third value missing over a wide dense stretch: ranks; a dense stretch with all
    values, empty tails and a floor spike with empty neighbours: none; too few dense values to
    judge: none."""
    stretch = np.zeros(4000, np.int64)
    stretch[1000:3000] = 50
    stretch[1000:3000:3] = 0
    assert volume_codec._missing_where_dense(stretch)
    full = np.zeros(4000, np.int64)
    full[1000:3000] = 50
    full[3500:4000:7] = 1  # rare values in a tail
    full[0] = 10**6  # a mask or clip floor, its neighbours empty
    assert not volume_codec._missing_where_dense(full)
    few = np.zeros(400, np.int64)
    few[100:160] = 50
    few[100:160:3] = 0
    assert not volume_codec._missing_where_dense(few)


@pytest.mark.parametrize("name, factor", [("dwi_b0", 1), ("epi", 1.3)])
def test_chunks_map_their_own_slabs_in_small_blocks(request, name, factor, monkeypatch):
    """The encoder maps each slab as it copies it into the chunk (no mapped copy of the volume
    while the workers code). With blocks of a few voxels (rows split, big-endian stored
    integers) the mapping equals the whole-volume one and the stream is the same bytes."""
    arr = request.getfixturevalue(name)
    arr = np.round((arr.astype(np.int64) - arr.min()) * factor).astype(">i4") - 7
    reference = medzip.compress(arr, fallback=False, chunk_slices=4, workers=2)
    values = volume_codec.scan_values(arr)
    assert (values.lut is not None) == (factor != 1)
    whole = volume_codec.map_values(arr)[0][0]
    monkeypatch.setattr(volume_codec, "_BLOCK", 5)
    part = np.full((arr.shape[0] + 1, arr.shape[1], arr.shape[2]), -1, np.int64)
    values.fill(arr, part[1:])
    np.testing.assert_array_equal(part[1:], whole)
    assert (part[0] == -1).all() and int(whole.max()) == values.top
    assert medzip.compress(arr, fallback=False, chunk_slices=4, workers=2) == reference
    np.testing.assert_array_equal(medzip.decompress(reference), arr)
