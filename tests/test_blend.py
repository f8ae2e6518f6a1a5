"""medzip-blend and the censored residual coder on real data (the bundled dipy b0 sample)."""
from __future__ import annotations

import struct

import numpy as np
import pytest

import medzip
from medzip.predictors.blend import (ALL_EXPERTS, N_CLASSES, N_WIDE, VERSION, WIDE_VERSION,
                                     BlendPredictor)
from medzip.predictors.ls3d import LS3DPredictor
from medzip.predictors.registry import fit_candidates
from medzip.training.data import mapped_volume
from medzip.volume_codec import chunk_geometry, code_chunk

from conftest import classic_version, deep_trio, long_dwi, wide_heart
from test_determinism import sample_array


def _bits(pred, vol3, vmax):
    geom = chunk_geometry(pred, vol3.shape)
    words = code_chunk(pred, geom, vmax, chunk=vol3)
    back = code_chunk(pred, geom, vmax, words=words).copy()
    np.testing.assert_array_equal(back, vol3)
    return 32 * words.size


@pytest.fixture(scope="module")
def clipped():
    """The real MR sample clipped at its 40th and 99.5th percentiles: many voxels sit exactly at
    the floor and the ceiling, as air sits at -1024 HU in clipped CT."""
    arr = sample_array().astype(np.int32)
    lo, hi = np.percentile(arr, [40, 99.5]).astype(int)
    return mapped_volume(np.clip(arr, lo, hi)).astype(np.int32)


def test_censoring_at_floor_and_ceiling_round_trips_and_pays(clipped):
    vmax = int(clipped.max())
    ls = LS3DPredictor.fit(clipped)
    censored = LS3DPredictor(ls.coef3, ls.coef2)
    censored.censored = True
    plain, cens = _bits(ls, clipped[0], vmax), _bits(censored, clipped[0], vmax)
    assert (clipped[0] == 0).mean() > 0.3 and (clipped[0] == vmax).any()
    assert cens < 0.9 * plain  # the floor voxels no longer pay for the impossible tail


def test_default_level_is_blend_and_round_trips_clipped_and_full_range(clipped):
    for arr in (clipped.reshape(clipped.shape[1:]).astype(np.uint16),
                (sample_array().astype(np.int64) * 13 - 20000).astype(np.int32)):
        for level in (5, 9):
            blob = medzip.compress(arr, level=level, workers=2)
            assert medzip.inspect(blob)["volumes"][0]["model"] == "medzip-blend"
            out = medzip.decompress(blob, workers=2)
            assert out.dtype == arr.dtype and np.array_equal(out, arr)


def test_blend_parameters_round_trip_and_reject_garbage(clipped):
    pred = BlendPredictor.fit(clipped)
    again = BlendPredictor.from_params(pred.params())
    assert again.params() == pred.params()
    np.testing.assert_array_equal(again.ccoef, pred.ccoef)
    assert again.ccoef.shape[0] == N_CLASSES
    blob = bytearray(pred.params())
    blob[0] = 9  # unknown version
    with pytest.raises(ValueError):
        BlendPredictor.from_params(bytes(blob))
    with pytest.raises(ValueError):
        BlendPredictor.from_params(pred.params()[:-3])


def test_wide_class_sets_round_trip_and_their_parameter_block_is_checked(clipped):
    """Version 3: the classified LS on 41 taps from a chunk's third slice on. Forced on here (the
    encoder turns it on where it pays): every tap must be decoded before the voxel that reads
    it, which the round trip through the wavefront decoder checks."""
    # no padding mask and no fixed-rule experts: versions 1 and 3 alone
    pred = BlendPredictor.fit(clipped, known=None, experts=ALL_EXPERTS)
    assert pred.wcoef is not None and pred.wcoef.shape == (N_CLASSES, N_WIDE)
    wide = pred.variant(wide=True)
    assert wide.version == WIDE_VERSION and wide.variant(wide=False).version == VERSION
    again = BlendPredictor.from_params(wide.params())
    assert again.wide and again.params() == wide.params()
    np.testing.assert_array_equal(again.wcoef, wide.wcoef)
    vmax = int(clipped.max())
    assert _bits(wide, clipped[0], vmax) != _bits(pred.variant(wide=False), clipped[0], vmax)
    arr = clipped.reshape(clipped.shape[1:]).astype(np.uint16)
    for workers in (1, 2):  # through the container, with the network on top
        blob = medzip.compress(arr, level=9, workers=workers)
        np.testing.assert_array_equal(medzip.decompress(blob, workers=workers), arr)
    block = wide.params()
    for forged in (bytes([2]) + block[1:],  # version 2 does not carry the wide sets
                   block[:4] + bytes([block[4] & ~4]) + block[5:],  # version 3 without them
                   block[:-5]):
        with pytest.raises(ValueError):
            BlendPredictor.from_params(forged)


def test_wide_class_sets_are_chosen_where_they_pay():
    """On real cine MR (the voxels of the blend3 golden crop) the encoder turns the wide sets on
    and they pay, their parameter bytes included; on the bundled DWI b0 sample it leaves them
    off (there they would not pay for their coefficients)."""
    arr = wide_heart()
    vol4 = mapped_volume(arr).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    assert pred.wide
    vmax = int(vol4.max())

    def total(p):
        return _bits(p, vol4[0], vmax) + 8 * len(p.params())

    assert total(pred) < 0.99 * total(pred.variant(wide=False))
    assert not BlendPredictor.fit(mapped_volume(sample_array()).astype(np.int32)).wide


def test_long_class_sets_are_chosen_on_interpolated_mr(monkeypatch):
    """On real MR reconstructed from zero-filled k-space (the blend4 golden crop) the encoder
    fits the long class sets and their in-slice set, they pay over the wide sets (parameter
    bytes included) and the stream is version 4 with the wider chunk padding; on the bundled DWI b0 sample, which is
    not interpolated, it does not use them."""
    from medzip.predictors import blend

    arr = long_dwi()
    vol4 = mapped_volume(arr).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    assert pred.long and pred.wide and classic_version(pred) == blend.LONG_VERSION
    assert pred.wcoef.shape == (N_CLASSES, blend.N_LONG) and pred.pad == blend.LONG_PAD
    monkeypatch.setattr(blend, "LONG_TRY_PERCENT", 0)  # the same fit, stopping at the wide sets
    # (whose in-slice set pays on these band-limited slices on its own: the stream without it)
    wide = BlendPredictor.fit(vol4, in_slice=False)
    assert wide.wide and not wide.long and classic_version(wide) == WIDE_VERSION
    assert wide.pad == 2
    vmax = int(vol4.max())

    def total(p):
        return _bits(p, vol4[0], vmax) + 8 * len(p.params())

    assert total(pred) < 0.95 * total(wide)
    assert pred.in_slice and pred.scoef.shape == (blend.N_LONG_SLICE,)  # comes with them
    # every expert of versions 1-5 blended (levels 7-9 try fewer), no fixed-rule one (they
    # cost on band-limited slices)
    assert pred.experts == blend.ALL_EXPERTS
    again = BlendPredictor.from_params(pred.params())
    assert again.long and again.in_slice and np.array_equal(again.wcoef, pred.wcoef)
    assert np.array_equal(again.scoef, pred.scoef)
    monkeypatch.undo()
    assert not BlendPredictor.fit(mapped_volume(sample_array()).astype(np.int32)).long


def _zero_filled_along_y(vol: np.ndarray) -> np.ndarray:
    """Each slice reconstructed on twice as many rows from zero-filled k-space (along y only),
    as MR acquired with fewer phase-encoding lines than it stores."""
    k = np.fft.fftshift(np.fft.fft(vol.astype(np.float64), axis=1), axes=1)
    big = np.zeros((vol.shape[0], 2 * vol.shape[1], vol.shape[2]), complex)
    big[:, vol.shape[1] // 2:vol.shape[1] // 2 + vol.shape[1]] = k
    out = np.abs(np.fft.ifft(np.fft.ifftshift(big, axes=1), axis=1)) * 2
    return np.round(out).astype(np.uint16)


def test_long_class_sets_are_chosen_on_mr_interpolated_along_y_only(monkeypatch):
    """MR zero-filled along one direction: the wide sets (two rows up) do not pay there, so the
    encoder judges the long sets against the 15-tap sets (the probe finds the band limit), and
    they cut the coded size by more than 5 %, parameter bytes included."""
    from medzip.predictors import blend

    arr = _zero_filled_along_y(sample_array())
    assert arr.shape == (6, 128, 64)
    vol4 = mapped_volume(arr).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    assert pred.long and pred.in_slice and classic_version(pred) == blend.LONG_VERSION
    monkeypatch.setattr(blend, "LONG_TRY_PERCENT", 0)  # no probe passes: the sets without them
    without = BlendPredictor.fit(vol4, in_slice=False)  # (the in-slice set alone pays too)
    assert not without.wide and classic_version(without) == VERSION
    vmax = int(vol4.max())

    def total(p):
        return _bits(p, vol4[0], vmax) + 8 * len(p.params())

    assert total(pred) < 0.95 * total(without)


def test_version_4_flags_are_checked():
    """Version 4 streams carry the long sets (flag 8, only with the wide flag 4) and / or the
    in-slice set (flag 16); parameter blocks that break those rules are refused, and every
    combination the encoder can write reads back equal."""
    from medzip.predictors import blend

    arr = long_dwi()
    pred = BlendPredictor.fit(mapped_volume(arr).astype(np.int32), experts=blend.ALL_EXPERTS)
    variants = {(True, True): pred, (False, True): pred.variant(wide=False),
                (True, False): pred.variant(in_slice=False)}
    for (wide, in_slice), p in variants.items():
        assert (p.wide, p.in_slice, p.version) == (wide, in_slice, blend.LONG_VERSION
                                                   if p.long or in_slice else 1)
        again = BlendPredictor.from_params(p.params())
        assert again.params() == p.params() and again.pad == p.pad == blend.LONG_PAD
    blob = bytearray(pred.params())
    assert blob[0] == 4 and blob[4] == blend.FLAG_WIDE | blend.FLAG_LONG | blend.FLAG_SLICE
    for flags in (0, blend.FLAG_LONG, blend.FLAG_LONG | blend.FLAG_SLICE, 32):
        forged = bytes(blob[:4]) + bytes([flags]) + bytes(blob[5:])
        with pytest.raises(ValueError):
            BlendPredictor.from_params(forged)


def test_deep_class_sets_are_chosen_on_slice_interpolated_mr(monkeypatch):
    """Real 3-D MR with twice the slices from zero-filled kz (the blend4deep golden crop): the
    encoder fits the deep class sets (four slices back), they cut the coded size by more than
    3 % (parameter bytes included; ~4.4 % on this crop), and the stream is version 4 with flag 32 and four padding
    slices per chunk; on the bundled DWI b0 sample, stored as acquired, it does not use them."""
    from medzip.predictors import blend

    vol4 = mapped_volume(deep_trio()).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    assert pred.deep and pred.wide and not pred.long and pred.version == blend.LONG_VERSION
    assert pred.wcoef.shape == (N_CLASSES, blend.N_DEEP)
    assert (pred.zpad, pred.zw, pred.pad) == (blend.DEEP_Z, blend.DEEP_Z, 2)
    assert pred.params()[4] & blend.FLAG_DEEP
    again = BlendPredictor.from_params(pred.params())
    assert again.deep and np.array_equal(again.wcoef, pred.wcoef) and again.zpad == blend.DEEP_Z
    monkeypatch.setattr(blend, "LONG_TRY_PERCENT", 0)  # no probe passes: the sets without them
    without = BlendPredictor.fit(vol4)
    assert not without.deep and without.zpad == 2
    vmax = int(vol4.max())

    def total(p):
        return _bits(p, vol4[0], vmax) + 8 * len(p.params())

    assert total(pred) < 0.97 * total(without)
    # the deep class sets alone beat blending the other experts in
    assert pred.experts == blend.DEEP_EXPERTS
    assert total(pred) < total(pred.variant(experts=blend.ALL_EXPERTS))
    monkeypatch.undo()
    assert not BlendPredictor.fit(mapped_volume(sample_array()).astype(np.int32)).deep


def test_deep_flag_is_checked():
    """Flag 32 (deep sets) needs the wide flag and excludes the long sets (8); flags above 63
    are refused; the deep body read with another set size is refused."""
    from medzip.predictors import blend

    pred = BlendPredictor.fit(mapped_volume(deep_trio()).astype(np.int32))
    blob = bytearray(pred.params())
    mask = blob[4] & blend.FLAG_MASK  # the trio's few background pixels: a mask since stop 14
    assert blob[0] == 4 and blob[4] == blend.FLAG_WIDE | blend.FLAG_DEEP | mask
    for flags in (blend.FLAG_DEEP, blend.FLAG_WIDE | blend.FLAG_LONG | blend.FLAG_DEEP,
                  blend.FLAG_WIDE | blend.FLAG_LONG, blend.FLAG_WIDE | blend.FLAG_SLICE,
                  blend.FLAG_WIDE, 64 | blend.FLAG_WIDE | blend.FLAG_DEEP):
        forged = bytes(blob[:4]) + bytes([flags | mask]) + bytes(blob[5:])
        with pytest.raises(ValueError):
            BlendPredictor.from_params(forged)


def test_level_9_tries_the_other_in_slice_choice():
    """On real cine MR (wide sets and, as it pays there, the in-slice set on at level 5) level 9
    also codes the wide sets without the in-slice set and the blend without the fixed-rule
    experts, and keeps the smallest stream."""
    arr = wide_heart()
    vol4 = mapped_volume(arr).astype(np.int32)
    cands = [c[0] for c in fit_candidates("medzip-blend", vol4, 9)]
    assert cands[0].in_slice and cands[0].wide
    assert [not c.in_slice and c.wide for c in cands].count(True) == 1
    # the crop is slice-poor: the fixed-rule experts at level 5, and a candidate without them
    from medzip.predictors.blend import FIXED_EXPERTS
    assert cands[0].experts & FIXED_EXPERTS and any(not c.experts & FIXED_EXPERTS for c in cands)
    nine = medzip.compress(arr, level=9, fallback=False)
    assert len(nine) <= len(medzip.compress(arr, level=5, fallback=False))
    np.testing.assert_array_equal(medzip.decompress(nine), arr)


def test_damaged_blend_chunks_are_reported_as_corruption(clipped):
    """Damage behind a recomputed CRC in a censored stream: a one-line CorruptStreamError (the
    folded distributions and bounded low bits must not leak other exceptions), or, for a bit the
    decoder never reads, the exact array."""
    import random
    import zlib

    from medzip.errors import CorruptStreamError

    from conftest import Stream

    arr = clipped.reshape(clipped.shape[1:]).astype(np.uint16)
    data = medzip.compress(arr, chunk_slices=3)
    rng = random.Random(8)
    caught = 0
    for trial in range(12):
        s = Stream.parse(data)
        ref = s.header["volumes"][0]["chunks"][trial % 2]
        body = bytearray(s.body)
        body[ref["offset"] + rng.randrange(ref["length"])] ^= 1 << rng.randrange(8)
        s.body = bytes(body)
        ref["crc32"] = zlib.crc32(s.section(ref)) & 0xFFFFFFFF
        try:
            out = medzip.decompress(s.build(), workers=1 + trial % 2)
        except CorruptStreamError as exc:
            assert str(exc) and "\n" not in str(exc)
            caught += 1
            continue
        assert np.array_equal(out, arr)
    assert caught >= 10


def test_levels_7_to_9_compare_candidates_on_a_sample_of_large_volumes(monkeypatch):
    """Above SEARCH_FULL_VOXELS the candidates are coded on two sample slabs and only the
    winner and, where the slabs pick another, the default level's choice code the whole volume
    (the smaller is kept: never larger than level 5); exact, and independent of workers."""
    import medzip.volume_codec as vc

    arr = sample_array()  # 6 x 64 x 64 real MR
    coded = []
    real_run = vc._run

    def counting_run(fn, state, jobs, workers, weights, *rest):
        coded.append((len(jobs), int(sum(weights))))
        return real_run(fn, state, jobs, workers, weights, *rest)

    monkeypatch.setattr(vc, "_run", counting_run)
    monkeypatch.setattr(vc, "SEARCH_FULL_VOXELS", arr.size // 2)
    monkeypatch.setattr(vc, "SEARCH_SAMPLE_SLICES", 2)  # two slabs of 2 of the 6 slices
    blob = medzip.compress(arr, level=9, fallback=False)
    full = [job for job in coded if job == (1, arr.size)]  # whole volume, one chunk
    assert len(full) in (1, 2) and coded[len(coded) - len(full):] == full
    assert len(coded) - len(full) >= 3  # three or more candidates on the slabs first
    assert all(job == (2, 2 * 2 * 64 * 64) for job in coded[:len(coded) - len(full)])
    assert len(blob) <= len(medzip.compress(arr, level=5, fallback=False))
    assert medzip.compress(arr, level=9, fallback=False, workers=2) == blob
    np.testing.assert_array_equal(medzip.decompress(blob, workers=2), arr)


def test_a_wrong_slab_pick_never_makes_level_9_larger_than_level_5(monkeypatch):
    """The sample slabs can pick a candidate that codes the whole volume larger (the head CT's
    did): the default level's choice is coded whole too and the smaller kept. Forced here: the
    slabs 'pick' the global-LS-only candidate, and level 9 still writes level 5's stream."""
    import medzip.volume_codec as vc

    arr = sample_array()
    monkeypatch.setattr(vc, "SEARCH_FULL_VOXELS", arr.size // 2)
    real_smallest = vc._smallest

    def wrong_pick(candidates, *args):
        if args[-2] == "search":
            return 0, candidates[2], None, None  # experts=GLOBAL_LS_EXPERTS (registry order)
        return real_smallest(candidates, *args)

    monkeypatch.setattr(vc, "_smallest", wrong_pick)
    five = medzip.compress(arr, level=5, fallback=False)
    assert medzip.compress(arr, level=9, fallback=False) == five


def test_large_volumes_without_wide_sets_use_the_in_slice_set(monkeypatch):
    """Thick-slice scans (wide sets off, many voxels) get the 36-tap in-slice set at the
    default level (a version 4 stream with flag 16 alone); small volumes keep the 6-tap one.
    Where the wide sets are on, slice-poor volumes of a quarter of that size get it too (flags
    4 + 16), others not. Shown on the bundled DWI sample (wide sets off) and on the cine MR
    crop (wide sets on, slice-poor), with the size threshold lowered to them."""
    from medzip.predictors import blend

    monkeypatch.setattr(blend, "IN_SLICE_PAYS_PERCENT", 0)  # the size rules alone
    arr = sample_array()
    vol4 = mapped_volume(arr).astype(np.int32)
    small = BlendPredictor.fit(vol4)
    assert not small.wide and not small.in_slice and vol4.size < blend.IN_SLICE_MIN_VOXELS
    heart4 = mapped_volume(wide_heart()).astype(np.int32)
    heart = BlendPredictor.fit(heart4)
    assert heart.wide and not heart.in_slice and heart4.size < blend.IN_SLICE_MIN_VOXELS // 4
    monkeypatch.setattr(blend, "IN_SLICE_MIN_VOXELS", vol4.size)
    pred = BlendPredictor.fit(vol4)
    assert pred.in_slice and not pred.wide and classic_version(pred) == blend.LONG_VERSION
    assert pred.params()[4] & blend.FLAG_SLICE and not pred.params()[4] & blend.FLAG_WIDE
    blob = medzip.compress(arr, chunk_slices=2, fallback=False)
    assert medzip.inspect(blob)["volumes"][0]["model_version"] == pred.version
    for workers in (1, 2):
        np.testing.assert_array_equal(medzip.decompress(blob, workers=workers), arr)
    heart = BlendPredictor.fit(heart4)
    assert heart.wide and heart.in_slice and heart.version == blend.FIXED_VERSION
    assert heart.params()[4] & (blend.FLAG_WIDE | blend.FLAG_SLICE) == 20
    monkeypatch.setattr(blend, "SLICE_AGREEMENT_PERCENT", 0)  # no volume is slice-poor
    heart = BlendPredictor.fit(heart4)
    assert heart.wide and not heart.in_slice and not heart.experts & blend.FIXED_EXPERTS


def test_in_slice_set_where_it_pays():
    """The in-slice set, without the size rules, wherever its error on a sample is well under
    the 6-tap set's and the bits that buys pay for its 37 coefficients: on the real cine MR crop
    (smooth slices, slice-poor) it is chosen and pays, parameter bytes included; on one slice
    of it the coefficients cost more than it buys (not chosen, and forcing it costs); on the
    bundled DWI sample (noisy) its error is not low enough."""
    from medzip.predictors import blend

    heart4 = mapped_volume(wide_heart()).astype(np.int32)
    assert heart4.size < blend.IN_SLICE_MIN_VOXELS // 4  # not the size rules
    vmax = int(heart4.max())

    def total(p, vol):
        return _bits(p, vol, vmax) + 8 * len(p.params())

    pred = BlendPredictor.fit(heart4)
    assert pred.in_slice and pred.params()[4] & blend.FLAG_SLICE
    assert total(pred, heart4[0]) < total(pred.variant(in_slice=False), heart4[0])
    one = BlendPredictor.fit(heart4[:, 5:6])
    assert not one.in_slice and one.scoef is not None
    assert total(one, heart4[0, 5:6]) < total(one.variant(in_slice=True), heart4[0, 5:6])
    dwi = BlendPredictor.fit(mapped_volume(sample_array()).astype(np.int32))
    assert not dwi.in_slice and not dwi.wide


def test_fixed_rule_experts_on_slice_poor_volumes_version_6():
    """Real cine MR (the blend3 golden crop: its W and N agree with the previous slice for
    fewer than SLICE_AGREEMENT_PERCENT of the varying voxels): the encoder blends the three
    fixed-rule in-slice experts in (a version 6 stream: version 3's layout plus their byte),
    which pays, parameter bytes included; every bit of that byte and of the version is
    checked on reading."""
    from medzip.predictors import blend

    vol4 = mapped_volume(wide_heart()).astype(np.int32)
    pred = BlendPredictor.fit(vol4)
    assert pred.experts == blend.DEFAULT_EXPERTS and pred.version == blend.FIXED_VERSION
    without = pred.variant(experts=blend.ALL_EXPERTS)  # wide sets + in-slice set: version 4
    assert without.version == classic_version(pred) == blend.LONG_VERSION
    vmax = int(vol4.max())

    def total(p):
        return _bits(p, vol4[0], vmax) + 8 * len(p.params())

    assert total(pred) < total(without)
    blob = pred.params()
    assert blob[0] == 6 and blob[4] & blend.FLAG_WIDE and blob[5] == blend.FIXED_EXPERTS >> 7
    again = BlendPredictor.from_params(blob)
    # (a volume without a previous one stores the in-volume experts' bits)
    assert again.experts == pred.experts & blend.SPATIAL_EXPERTS and again.params() == blob
    one = pred.variant(experts=blend.ALL_EXPERTS | 1 << 8)  # W + NE - N alone: also version 6
    assert one.params()[5] == 2
    assert BlendPredictor.from_params(one.params()).experts == 1 << 8 | 0b11111
    old = without.params()
    for forged in (blob[:5] + b"\x00" + blob[6:],  # version 6 without a fixed-rule expert
                   blob[:5] + b"\x08" + blob[6:],  # an expert this version does not have
                   blob[:3] + bytes([blob[3] | 0x80]) + blob[4:],  # bit 7 of the first byte
                   bytes([3]) + blob[1:],  # version 3 with the extra byte
                   bytes([6]) + old[1:],  # version 3's block named version 6
                   blob[:6]):  # truncated
        with pytest.raises((ValueError, struct.error)):
            BlendPredictor.from_params(forged)


def test_fixed_rule_experts_only_where_the_previous_slice_disagrees():
    """The bundled DWI sample's previous slice agrees for most voxels: no fixed-rule experts
    (the stream keeps its earlier version). A single slice has no previous slice: they are
    used. (A series coded with its previous volume never uses them: test_temporal's streams
    stay version 2.)"""
    from medzip.predictors import blend

    vol4 = mapped_volume(sample_array()).astype(np.int32)
    assert BlendPredictor.fit(vol4).experts == blend.ALL_EXPERTS
    one = BlendPredictor.fit(np.ascontiguousarray(vol4[:, :1]))
    assert one.experts & blend.FIXED_EXPERTS == blend.FIXED_EXPERTS
