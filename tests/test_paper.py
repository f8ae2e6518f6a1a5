"""The published MedZip configuration (``model="medzip-paper"``): exact, batch-independent."""
from __future__ import annotations

import numpy as np
import pytest

import medzip
from conftest import (SHARED, Stream, _nibabel_test_file, _pydicom_test_file, dicom_words,
                      nifti_stored)
from medzip.intlstm import linear_head

from int_reference import lstm_cell
from medzip.predictors import paper as P
from medzip.predictors.models import builtin_model
from medzip.scheduling import PaddedGeometry
from medzip.training.data import mapped_volume

MODEL = "medzip-paper"


def _real_crop() -> np.ndarray:
    """3x16x16 of real stored integers (shared data set, else a pip-shipped file)."""
    path = SHARED / "volumes" / "mr_emri_small_pydicom.npy"
    if path.exists():
        return np.load(path)[4:7, 24:40, 24:40].copy()
    dcm = _pydicom_test_file("MR_small.dcm")
    if dcm is not None:
        return np.repeat(dicom_words(dcm), 3, axis=0)[:, 20:36, 20:36].copy()
    nii = _nibabel_test_file("example4d.nii.gz")
    if nii is not None:
        return nifti_stored(nii)[0, :3, 40:56, 40:56].copy()
    pytest.skip("no real data available")


@pytest.fixture(scope="module")
def crop():
    return _real_crop()


@pytest.fixture(scope="module")
def coded(crop):
    # the paper predictor is what is under test: no zstd/xz fallback for these small crops
    return medzip.compress(crop, model=MODEL, fallback=False)


def test_round_trip_is_exact(crop, coded):
    out = medzip.decompress(coded)
    assert out.dtype == crop.dtype and out.shape == crop.shape
    assert np.array_equal(out, crop)


def test_stream_names_model_and_hash(coded):
    entry = Stream.parse(coded).header["volumes"][0]["model"]
    mf = builtin_model(MODEL)
    assert entry == {"name": MODEL, "sha256": mf.sha256}
    assert mf.meta["kind"] == "paper" and mf.meta["seq_len"] == P.SEQ_LEN == 191


def test_chunking_does_not_change_the_decoded_volume(crop, coded):
    """Different wavefront batches (one-slice chunks vs one chunk) decode to the same array."""
    per_slice = medzip.compress(crop, model=MODEL, chunk_slices=1, fallback=False)
    assert len(Stream.parse(per_slice).header["volumes"][0]["chunks"]) == crop.shape[0]
    assert np.array_equal(medzip.decompress(per_slice), medzip.decompress(coded))


def test_kernel_batch_equals_single_voxels_and_reference_cell(crop):
    """The coder's kernel on a batch == one voxel at a time == intlstm.lstm_cell step by step."""
    vol4 = mapped_volume(crop)
    pred = P.PaperPredictor(builtin_model(MODEL), vol4)
    geom = PaddedGeometry(*vol4.shape[1:], pad=pred.pad, zpad=pred.zpad)
    padded = np.zeros(geom.shape, np.int64).ravel()
    geom.embed(vol4[0], padded)
    flat, _ = geom.raster_indices()
    src = P.source_offsets(geom)
    vmax = int(vol4.max())
    batch = pred.predict_voxels(padded, flat, src, vmax)
    pick = np.arange(0, flat.size, max(1, flat.size // 24))
    single = [pred.predict_voxels(padded, flat[i:i + 1], src, vmax)[0] for i in pick]
    assert np.array_equal(batch[pick], single)

    n = pred.net
    lo, span = pred.lo, pred.hi - pred.lo
    seqs = np.empty((pick.size, P.SEQ_LEN), np.int64)
    P.gather_sequences(padded, flat[pick], src, lo, span, seqs)
    assert seqs.min() >= -128 and seqs.max() <= 127
    ref = []
    for s in seqs:
        h = np.zeros(n.hidden, np.int64)
        c = np.zeros(n.hidden, np.int64)
        acc = np.empty(4 * n.hidden, np.int64)
        for t in range(s.size):
            lstm_cell(s[t:t + 1], h, c, n.w, n.b, n.shift, n.sig, n.tanh_g, n.tanh_c, acc)
        out = np.empty(1, np.int64)
        linear_head(h, n.head_w, n.head_b, out)
        y = min(max(out[0] / 2 ** n.head_shift, -2.0), 2.0)  # normalised prediction
        ref.append(min(max(lo + int(np.floor((y + 1) / 2 * span + 0.5)), 0), vmax))
    assert np.array_equal(batch[pick], ref)


def test_pyramid_is_the_published_window_and_causal():
    win, src = P.pyramid_offsets()
    assert len(win) == len(src) == 191
    by_slice = [sum(1 for o in win if o[0] == dz) for dz in (-3, -2, -1, 0)]
    assert by_slice == [1, 25, 81, 84]
    assert [o[0] for o in win] == sorted(o[0] for o in win)  # oldest slice first
    # with the current slope every window voxel is decoded earlier (t = x + 7y + 33z): src == win
    assert all(dx + P.SLOPE * dy + P.LAG * dz < 0 for dz, dy, dx in src)
    assert src == win
    # the first model's slope 2 lacked 9 upper-right voxels; they read the row's last decoded one
    win2, src2 = P.pyramid_offsets(2)
    assert all(dx + 2 * dy + P.lag_for(2) * dz < 0 for dz, dy, dx in src2)
    assert sum(a != b for a, b in zip(win2, src2)) == 9
    assert max(max(abs(dy), abs(dx)) for _, dy, dx in src) <= P.PaperPredictor.pad


def test_train_paper_cli_exports_a_usable_model(tmp_path, crop):
    """``medzip train --paper`` (a few steps) writes a model the coder runs from its file."""
    from medzip.cli import main

    vols = []
    for i in range(3):
        np.save(tmp_path / f"subject{'abc'[i]}.npy", np.roll(crop, 5 * i, axis=2))
        vols.append(str(tmp_path / f"subject{'abc'[i]}.npy"))
    model = tmp_path / "tiny-paper.npz"
    rc = main(["train", *vols, "--paper", "--out", str(model), "--name", "tiny-paper",
               "--steps", "2", "--qat-steps", "1", "--batch", "16", "--samples-per-volume", "40",
               "--val", vols[0]])
    assert rc == 0 and model.stat().st_size > 10000
    blob = medzip.compress(crop[:2, :8, :8], model=str(model), fallback=False)
    assert Stream.parse(blob).header["volumes"][0]["model"]["name"] == "tiny-paper"
    np.testing.assert_array_equal(medzip.decompress(blob, model=str(model)), crop[:2, :8, :8])


def test_stream_of_the_first_paper_model_still_decodes():
    """Streams coded with the archived slope-2 model decode with today's medzip (no --model)."""
    from importlib import resources

    old = resources.files("medzip") / "models" / "medzip-paper@094ecf9c1918.npz"
    arr = _real_crop()[:2, :12, :12]
    blob = medzip.compress(arr, model=str(old), fallback=False)
    info = medzip.inspect(blob)["volumes"][0]
    assert info["model"] == "medzip-paper" and info["model_sha256"].startswith("094ecf9c1918")
    np.testing.assert_array_equal(medzip.decompress(blob), arr)
    current = medzip.compress(arr, model="medzip-paper", fallback=False)
    assert medzip.inspect(current)["volumes"][0]["model_sha256"] != info["model_sha256"]
    np.testing.assert_array_equal(medzip.decompress(current), arr)
