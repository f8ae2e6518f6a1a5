"""medzip-blend v2: a 4-D series coded with its previous volume as context (real fMRI from
nibabel's test data, so the suite runs without ../shared)."""
from __future__ import annotations


import numpy as np
import pytest

import medzip
from medzip.container import Container
from medzip.errors import CorruptStreamError
from medzip.predictors.blend import (ALL_EXPERTS, SPATIAL_EXPERTS, TEMPORAL_EXPERTS,
                                     TEMPORAL_VERSION, BlendPredictor)
from medzip.training.data import mapped_volume
from medzip.volume_codec import _decode_stacks, chunk_geometry, code_chunk

from conftest import EXAMPLE4D, classic_version, example4d_head_series

pytestmark = pytest.mark.skipif(EXAMPLE4D is None, reason="nibabel's example4d.nii.gz is missing")


@pytest.fixture(scope="module")
def fmri():
    """(2, 8, 48, 64) int16 of real fMRI (conftest); its environment variations run in
    test_determinism.py with the other streams."""
    return example4d_head_series()


def _chunk_bits(pred, vol4, t, vmax):
    """Coded bits of volume t of a series (one chunk), checked by decoding it again."""
    geom = chunk_geometry(pred, vol4.shape[1:])
    previous = vol4[t - 1] if t else None
    words = code_chunk(pred, geom, vmax, chunk=vol4[t], previous=previous)
    back = code_chunk(pred, geom, vmax, words=words, previous=previous).copy()
    np.testing.assert_array_equal(back, vol4[t])
    return 32 * words.size


def test_previous_volume_is_chosen_and_pays_on_fmri(fmri):
    vol4 = mapped_volume(fmri).astype(np.int32)
    vmax = int(vol4.max())
    pred = BlendPredictor.fit(vol4)
    assert pred.temporal and pred.version == TEMPORAL_VERSION
    spatial = pred.variant(temporal=False)
    with_context = _chunk_bits(pred, vol4, 1, vmax)
    without = _chunk_bits(spatial, vol4, 1, vmax)
    assert with_context < 0.9 * without, (with_context, without)
    # the first volume has no previous one: both code it identically
    assert _chunk_bits(pred, vol4, 0, vmax) == _chunk_bits(spatial, vol4, 0, vmax)


def test_unrelated_volumes_keep_version_1(fmri):
    """A series whose volumes do not resemble each other (two different parts of the head
    side by side as "time points") gets no temporal context: the stream stays version 1."""
    series = np.ascontiguousarray(np.stack([fmri[0, :4], fmri[1, 4:]]))
    pred = BlendPredictor.fit(mapped_volume(series).astype(np.int32))
    assert pred.tcoef is not None and not pred.temporal and classic_version(pred) == 1
    (vh,) = medzip.inspect(medzip.compress(series, fallback=False))["volumes"]
    assert vh["model"] == "medzip-blend"


@pytest.mark.parametrize("level", [5, 9])
def test_series_round_trip_workers_slabs_and_partial_decode(fmri, level):
    blob = medzip.compress(fmri, level=level, chunk_slices=3, fallback=False)
    (vh,) = Container.parse(blob).header["volumes"]
    assert vh["model"]["version"] == TEMPORAL_VERSION
    info = medzip.inspect(blob)["volumes"][0]  # what `medzip info` shows
    assert info["model_version"] == TEMPORAL_VERSION
    assert info["network"]["name"] == "medzip-blend-lstm"
    assert sorted({(c["z0"], c["nz"]) for c in vh["chunks"]}) == [(0, 2), (2, 3), (5, 3)]
    for workers in (1, 2):
        out = medzip.decompress(blob, workers=workers)
        assert out.dtype == fmri.dtype
        np.testing.assert_array_equal(out, fmri)
    for start, stop in [(0, 8), (2, 7), (4, 5), (6, 6)]:
        np.testing.assert_array_equal(medzip.decompress(blob, slices=(start, stop), workers=2),
                                      fmri[:, start:stop])


def test_misaligned_slabs_of_a_temporal_stream_are_refused():
    class Temporal:
        temporal = True

    places = [(0, 0, 2), (0, 2, 2), (1, 0, 4)]  # volume 1 cut differently from volume 0
    with pytest.raises(CorruptStreamError, match="do not line up"):
        _decode_stacks(places, [0, 1, 2], Temporal(), 2)
    aligned = [(1, 0, 2), (0, 2, 2), (0, 0, 2), (1, 2, 2)]
    assert _decode_stacks(aligned, [0, 1, 2, 3], Temporal(), 2) == [[2, 0], [1, 3]]


def test_forged_parameter_blocks_are_refused(fmri):
    pred = BlendPredictor.fit(mapped_volume(fmri).astype(np.int32))
    blob = pred.params()
    assert blob[0] == TEMPORAL_VERSION and blob[3] & TEMPORAL_EXPERTS
    BlendPredictor.from_params(blob)  # intact: accepted
    v1_with_temporal_experts = bytes([1]) + blob[1:]
    with pytest.raises(ValueError):
        BlendPredictor.from_params(v1_with_temporal_experts)
    spatial = pred.variant(temporal=False).params()
    assert spatial[0] == 1 and spatial[3] == SPATIAL_EXPERTS & ALL_EXPERTS
    with pytest.raises(ValueError):  # a v1 block (no temporal sets) named version 2
        BlendPredictor.from_params(bytes([TEMPORAL_VERSION]) + spatial[1:])
