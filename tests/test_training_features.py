"""``medzip train --base blend`` learns from the features the coder computes: the rows that
training/data.py builds equal what ``blend._blend_lstm_inputs`` hands the network while a chunk
is really coded, also where the blend needs a wider chunk padding (the 36-tap in-slice set)
and where masked voxels read as the floor (a padding value, blend version 7/8). Until stop 17
the training path built chunks with the default padding and failed on such volumes ("needs the
padding of its version"), and it fed the padding value where the coder sees the floor.
No PyTorch here: the features come from numba kernels."""
from __future__ import annotations

import numpy as np
import pytest

from medzip.predictors import blend
from medzip.predictors.blend import BlendPredictor
from medzip.predictors.lstm import N_FEATURES
from medzip.predictors.models import load_model
from medzip.training.data import _blend_features, blend_rows, mapped_volume
from medzip.volume_codec import chunk_geometry, code_chunk

from conftest import GOLDEN, zero_padded_ct


@pytest.fixture(scope="module")
def padded_ct():
    return np.ascontiguousarray(zero_padded_ct()[:6])


def _coder_features(pred, vol3, vmax, monkeypatch):
    """{padded flat index: (features, u)} as the coder computes them while encoding."""
    seen = {}
    real = blend._BlendChunk.network_inputs

    def recording(self, vol, flat, zloc, hs, xh):
        u, base = real(self, vol, flat, zloc, hs, xh)
        for i, f in enumerate(flat.tolist()):
            seen[f] = (xh[i, :N_FEATURES].astype(np.int64), int(u[i]))
        return u, base

    monkeypatch.setattr(blend._BlendChunk, "network_inputs", recording)
    geom = chunk_geometry(pred, vol3.shape)
    code_chunk(pred, geom, vmax, chunk=vol3)
    monkeypatch.undo()  # the training path below calls the real one
    return seen, geom


def test_training_rows_are_the_coders_features(padded_ct, monkeypatch):
    vol4 = mapped_volume(padded_ct).astype(np.int32)
    vmax = int(vol4.max())
    pred = BlendPredictor.fit(vol4, in_slice=True, lstm=load_model("medzip-blend-lstm"))
    assert pred.in_slice and pred.pad == blend.LONG_PAD and pred.pad_value > 0
    seen, geom = _coder_features(pred, vol4[0], vmax, monkeypatch)
    padded = np.zeros(geom.shape, np.int64).ravel()
    geom.embed(vol4[0], padded)
    feats, _, u = _blend_features(pred, vol4, 0, 0, geom, padded, vmax)
    flat, _ = geom.raster_indices()
    assert len(seen) == flat.size
    want_f = np.stack([seen[f][0] for f in flat.tolist()])
    want_u = np.array([seen[f][1] for f in flat.tolist()])
    np.testing.assert_array_equal(feats.astype(np.int64), want_f)
    np.testing.assert_array_equal(u, want_u)
    # the caller's buffer keeps the volume's values (the padding value, not the floor)
    np.testing.assert_array_equal(geom.extract(padded), vol4[0])


def test_blend_rows_accept_volumes_with_wider_padding():
    """A slice of the colin27 template, which the default fit codes with the in-slice set (the
    blend7 / blend8 golden file): before stop 17 ``blend_rows`` raised on it."""
    import medzip

    slice_ = medzip.decompress((GOLDEN / "blend8" / "mr_colin_1x217x181_u1.mzp").read_bytes())
    assert BlendPredictor.fit(mapped_volume(slice_).astype(np.int32)).in_slice
    rows = blend_rows("colin", slice_, 64, np.random.default_rng(0))
    assert rows is not None and rows.feats.shape[0] == 64 and rows.feats.shape[2] == N_FEATURES
