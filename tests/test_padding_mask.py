"""medzip-blend v2's padding mask: pixels at the floor in every slice are sent once and not
coded (real masked fMRI from nibabel's test data, so the suite runs without ../shared)."""
from __future__ import annotations

import numpy as np
import pytest

import medzip
from medzip.errors import CorruptStreamError
from medzip.predictors.blend import ALL_EXPERTS, TEMPORAL_VERSION, BlendPredictor
from medzip.predictors.padding import fit_known_plane
from medzip.training.data import mapped_volume
from medzip.volume_codec import chunk_geometry, code_chunk

from conftest import EXAMPLE4D, classic_version, example4d_masked_corner

pytestmark = pytest.mark.skipif(EXAMPLE4D is None, reason="nibabel's example4d.nii.gz is missing")


@pytest.fixture(scope="module")
def masked():
    """(8, 40, 48) int16 of real EPI with a region at 0 in every slice (conftest); its
    environment variations run in test_determinism.py with the other streams."""
    return example4d_masked_corner()


def _bits(pred, vol3, vmax):
    geom = chunk_geometry(pred, vol3.shape)
    words = code_chunk(pred, geom, vmax, chunk=vol3)
    back = code_chunk(pred, geom, vmax, words=words).copy()
    np.testing.assert_array_equal(back, vol3)
    return 32 * words.size + 8 * len(pred.params())


def test_mask_is_found_and_pays(masked):
    vol4 = mapped_volume(masked).astype(np.int32)
    mask = fit_known_plane(vol4)
    assert mask is not None and 0.05 < mask.mean() < 0.95
    assert not vol4[..., mask].any()  # every masked pixel is 0 in every slice
    pred = BlendPredictor.fit(vol4)
    assert classic_version(pred) == TEMPORAL_VERSION and np.array_equal(pred.known_plane, mask)
    with_mask = _bits(pred, vol4[0], int(vol4.max()))
    without = _bits(pred.variant(known=None), vol4[0], int(vol4.max()))
    assert with_mask < 0.99 * without, (with_mask, without)  # mask bytes included


def test_masked_stream_round_trips_with_workers_and_slices(masked):
    blob = medzip.compress(masked, chunk_slices=3, fallback=False)
    for workers in (1, 2):
        np.testing.assert_array_equal(medzip.decompress(blob, workers=workers), masked)
    np.testing.assert_array_equal(medzip.decompress(blob, slices=(2, 7)), masked[2:7])


def test_mask_over_nonzero_voxels_is_refused_by_the_encoder(masked):
    vol4 = mapped_volume(masked).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    wrong = pred.variant(known=~pred.known_plane)  # claims the head is padding
    with pytest.raises(ValueError, match="padding mask"):
        code_chunk(wrong, chunk_geometry(wrong, vol4.shape[1:]), int(vol4.max()), chunk=vol4[0])


def test_forged_mask_blocks_are_refused(masked, monkeypatch):
    vol4 = mapped_volume(masked).astype(np.int32)
    blob = BlendPredictor.fit(vol4).params()
    assert blob[4] == 2  # flags: mask, no previous-volume context
    with pytest.raises(ValueError):
        BlendPredictor.from_params(blob[:4] + b"\x00" + blob[5:])  # version 2 without flags
    with pytest.raises(ValueError):
        BlendPredictor.from_params(blob[:4] + b"\x04" + blob[5:])  # unknown flag
    # a mask whose plane is not the volume's: the decoder refuses it before decoding
    import medzip.volume_codec as vc

    stream = medzip.compress(masked, fallback=False)
    real_load = vc.load_predictor

    def other_plane(*args, **kw):
        pred = real_load(*args, **kw)
        return pred.variant(known=np.zeros((3, 3), bool))

    monkeypatch.setattr(vc, "load_predictor", other_plane)
    with pytest.raises(CorruptStreamError, match="padding mask"):
        medzip.decompress(stream)



# -- version 5: padding below the field of view's floor ----------------------------------------
@pytest.fixture(scope="module")
def padded_ct_array():
    """Real head CT (blend5 golden crop): -2000 HU outside the inscribed circle, air clipped
    at -1024 inside, as scanners that pad the field of view store it."""
    from conftest import padded_ct

    return padded_ct()


def test_field_of_view_floor_is_found_and_pays(padded_ct_array):
    """The mask covers the padding (0 after mapping); the floor is the lowest value inside,
    the clipped air (-1024 HU, 976 after mapping). Censoring coded voxels there and letting
    the masked ones read as air costs less than the v2 coding of the same fit (> 2 %,
    parameters included) and the stream is version 5."""
    from medzip.predictors.blend import FLOOR_VERSION

    vol4 = mapped_volume(padded_ct_array).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    assert pred.known_plane is not None and pred.known_plane.mean() > 0.15
    assert pred.floor == int(padded_ct_array.min(initial=0, where=padded_ct_array > -2000)) + 2000
    assert pred.floor == 976 and classic_version(pred) == FLOOR_VERSION
    vmax = int(vol4.max())
    with_floor = _bits(pred, vol4[0], vmax)
    without = _bits(pred.variant(floor=0), vol4[0], vmax)
    assert with_floor < 0.98 * without, (with_floor, without)
    back = BlendPredictor.from_params(pred.params(), pred.lstm)
    assert back.floor == pred.floor and back.version == pred.version
    assert back.params() == pred.params()


def test_floor_stream_round_trips_in_parts(padded_ct_array):
    blob = medzip.compress(padded_ct_array, chunk_slices=5, fallback=False)
    assert medzip.inspect(blob)["volumes"][0]["model_version"] == 8  # the disc by rows
    for workers in (1, 2):
        np.testing.assert_array_equal(medzip.decompress(blob, workers=workers), padded_ct_array)
    np.testing.assert_array_equal(medzip.decompress(blob, slices=(7, 13)),
                                  padded_ct_array[7:13])


def test_forged_floor_blocks_are_refused(padded_ct_array, monkeypatch):
    vol4 = mapped_volume(padded_ct_array).astype(np.int32)
    # version 5 (6 adds a byte, 8 codes the mask by rows)
    pred = BlendPredictor.fit(vol4, experts=ALL_EXPERTS, mask_by_rows=False)
    blob = pred.params()
    assert blob[0] == 5 and blob[4] & 64 and blob[4] & 2
    for version, flags in ((4, blob[4]), (5, blob[4] & ~64), (5, blob[4] | 128),
                           (5, blob[4] & ~2)):  # v4 with the floor, v5 without, unknown, no mask
        with pytest.raises(ValueError):
            BlendPredictor.from_params(bytes([version]) + blob[1:4] + bytes([flags]) + blob[5:])
    # a floor above every value: the decoder refuses the stream, never writes a wrong volume
    _decoding_refuses(padded_ct_array, monkeypatch, "floor", (int(vol4.max()) + 1, 1 << 40))


def _decoding_refuses(arr, monkeypatch, field, values):
    """``arr``'s stream, decoded with the predictor's ``field`` forged to each of ``values``,
    raises CorruptStreamError (never a wrong volume)."""
    import medzip.volume_codec as vc

    stream = medzip.compress(arr, fallback=False)
    real_load = vc.load_predictor
    for value in values:
        monkeypatch.setattr(vc, "load_predictor", lambda *a, _v=value, **k:
                            real_load(*a, **k).variant(**{field: _v}))
        with pytest.raises(CorruptStreamError):
            medzip.decompress(stream)


# -- version 7: padding at a value above the floor ---------------------------------------------
@pytest.fixture(scope="module")
def zero_padded_ct():
    from conftest import zero_padded_ct

    return zero_padded_ct()


def test_padding_value_is_found_and_pays(zero_padded_ct):
    """The mask covers the 0 HU padding (1024 after mapping), which the stream carries (version
    7, flags 2 + 128); the masked voxels read as the floor while coding. That costs less than
    coding the padding (parameters included) by more than 2 %."""
    from medzip.predictors.blend import FLAG_PAD_VALUE, PAD_VALUE_VERSION

    vol4 = mapped_volume(zero_padded_ct).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    assert pred.known_plane is not None and pred.known_plane.mean() > 0.15
    assert (vol4[..., pred.known_plane] == 1024).all()
    assert pred.pad_value == 1024 and pred.floor == 0 and classic_version(pred) == PAD_VALUE_VERSION
    blob = pred.variant(mask_by_rows=False).params()
    assert blob[0] == 7 and blob[4] & (2 | FLAG_PAD_VALUE) == 2 | FLAG_PAD_VALUE
    back = BlendPredictor.from_params(blob, pred.lstm)
    assert back.pad_value == 1024 and back.params() == blob
    rows = pred.params()  # the disc by rows: version 8, the same flags
    assert rows[0] == 8 and rows[4] == blob[4] and len(rows) < len(blob)
    back = BlendPredictor.from_params(rows, pred.lstm)
    assert back.pad_value == 1024 and back.params() == rows
    np.testing.assert_array_equal(back.known_plane, pred.known_plane)
    vmax = int(vol4.max())
    coded = BlendPredictor.fit(vol4, known=None, pad_value=0)  # the padding coded
    assert coded.known_plane is None
    assert _bits(pred, vol4[0], vmax) < 0.98 * _bits(coded, vol4[0], vmax)


def test_padding_value_round_trips_in_parts_and_in_a_series(zero_padded_ct):
    blob = medzip.compress(zero_padded_ct, chunk_slices=5, fallback=False)
    assert medzip.inspect(blob)["volumes"][0]["model_version"] == 8  # the disc by rows
    for workers in (1, 2):
        np.testing.assert_array_equal(medzip.decompress(blob, workers=workers), zero_padded_ct)
    np.testing.assert_array_equal(medzip.decompress(blob, slices=(7, 13)), zero_padded_ct[7:13])
    # a series: the previous volume's masked voxels read as the floor too
    series = np.stack([zero_padded_ct[:12], zero_padded_ct[12:24]])
    blob = medzip.compress(series, fallback=False)
    assert medzip.inspect(blob)["volumes"][0]["model_version"] == 8
    np.testing.assert_array_equal(medzip.decompress(blob, workers=2), series)


def test_padding_value_mask_over_other_voxels_is_refused_by_the_encoder(zero_padded_ct):
    vol4 = mapped_volume(zero_padded_ct).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    wrong = pred.variant(pad_value=pred.pad_value + 1)  # the padding holds another value
    with pytest.raises(ValueError, match="padding mask"):
        code_chunk(wrong, chunk_geometry(wrong, vol4.shape[1:]), int(vol4.max()), chunk=vol4[0])


def test_forged_padding_value_blocks_are_refused(zero_padded_ct, monkeypatch):
    vol4 = mapped_volume(zero_padded_ct).astype(np.int32)
    pred = BlendPredictor.fit(vol4, mask_by_rows=False)
    blob = pred.params()
    assert blob[0] == 7
    for version, flags in ((6, blob[4]), (7, blob[4] & ~128), (7, blob[4] & ~2)):
        # flag 128 under version 6, version 7 without it, a padding value without a mask
        with pytest.raises(ValueError):
            BlendPredictor.from_params(bytes([version]) + blob[1:4] + bytes([flags]) + blob[5:])
    with pytest.raises(ValueError):  # a version 6 block renamed 7: no padding value
        BlendPredictor.from_params(bytes([7]) + pred.variant(pad_value=0).params()[1:])
    # a padding value above every value: refused, never a wrong volume
    _decoding_refuses(zero_padded_ct, monkeypatch, "pad_value", (int(vol4.max()) + 1, 1 << 40))


# -- version 8: the mask by rows ----------------------------------------------------------------
def test_mask_rows_round_trip_shapes():
    """Discs, half-planes, blobs, empty and full rows, single pixels, noise: the row coding
    gives back the same mask (or declines where it would be longer than the packed bits)."""
    from medzip.predictors.padding import mask_from_rows, mask_rows

    rng = np.random.default_rng(8)
    yy, xx = np.mgrid[:61, :47]
    masks = [(yy - 30) ** 2 + (xx - 23) ** 2 > 22 ** 2, xx < 13, xx >= 0, xx < 0,
             (yy == 5) & (xx == 46), (yy % 7 < 3) & (xx % 5 < 2), rng.random((61, 47)) < 0.5,
             np.ones((1, 1), bool), np.zeros((3, 1), bool)]
    coded = 0
    for mask in masks:
        rows = mask_rows(mask)
        if rows is None:
            # scattered, or a plane of a byte or two
            assert mask.size <= 16 or (mask[:, 1:] != mask[:, :-1]).mean() > 0.1
            continue
        coded += 1
        assert len(rows) <= (mask.size + 7) // 8 or mask.size <= 8
        np.testing.assert_array_equal(mask_from_rows(rows, *mask.shape), mask)
    assert coded == 5  # the disc, three half-planes, one pixel


def test_malformed_mask_rows_are_refused():
    from medzip.predictors.padding import mask_from_rows, mask_rows

    yy, xx = np.mgrid[:40, :40]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 > 15 ** 2
    rows = mask_rows(disc)
    assert rows[0] == 3  # the first row: two transitions, as gaps
    forged = [rows[:-1], rows + b"\x00", b"\x02" + rows[1:],  # truncated, trailing, odd count
              bytes([3, 2 * 41]) + rows[2:],  # a transition beyond the row
              bytes([5, 4, 0]) + rows[3:],  # not strictly increasing
              b"\xff\xff\xff\xff\x01" + rows, b""]  # a varint too long; nothing
    for data in forged:
        with pytest.raises(ValueError):
            mask_from_rows(data, 40, 40)
    with pytest.raises(ValueError):  # the same bytes for a plane with more rows
        mask_from_rows(rows, 41, 40)


def test_mask_by_rows_is_chosen_where_smaller_and_round_trips(zero_padded_ct):
    """The 0 HU disc of the zero-padded CT: version 8 (flags as version 7), its parameter block
    smaller than the bit-packed one, decoded in parts; the masked EPI corner too (flags as
    version 2). Where the packed mask is smaller (scattered pixels) the stream stays as before."""
    from medzip.predictors.blend import MASK_ROWS_VERSION

    vol4 = mapped_volume(zero_padded_ct).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    packed = pred.variant(mask_by_rows=False)
    assert pred.version == MASK_ROWS_VERSION and packed.version == 7
    assert len(pred.params()) < len(packed.params())
    back = BlendPredictor.from_params(pred.params(), pred.lstm)
    assert back.version == MASK_ROWS_VERSION and back.params() == pred.params()
    np.testing.assert_array_equal(back.known_plane, pred.known_plane)
    vmax = int(vol4.max())
    assert _bits(pred, vol4[0], vmax) < _bits(packed, vol4[0], vmax)  # the same voxels coded
    rng = np.random.default_rng(3)
    scattered = rng.random(vol4.shape[2:]) < 0.3
    noisy = pred.variant(known=scattered, pad_value=0, floor=0)
    assert not noisy.mask_by_rows and noisy.version != MASK_ROWS_VERSION


def test_forged_mask_rows_blocks_are_refused(zero_padded_ct, monkeypatch):
    """Version 8 without a mask; row bytes read as packed bits (version 7) and packed bits
    read as rows of a plane they do not fit; row bytes damaged inside a valid zstd frame."""
    import medzip.predictors.blend as blend

    vol4 = mapped_volume(zero_padded_ct).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    rows = pred.params()
    assert rows[0] == 8 and rows[4] & 2
    for version, flags in ((8, rows[4] & ~2 & ~128), (7, rows[4])):
        with pytest.raises(ValueError):
            BlendPredictor.from_params(bytes([version]) + rows[1:4] + bytes([flags]) + rows[5:])
    real = blend.mask_rows
    for damage in (lambda b: b[:-1], lambda b: b + b"\x00", lambda b: b"\x02" + b[1:]):
        monkeypatch.setattr(blend, "mask_rows", lambda m, _d=damage: _d(real(m)))
        with pytest.raises(ValueError):
            BlendPredictor.from_params(pred.params(), pred.lstm)
