"""Damaged streams: every kind of damage raises CorruptStreamError with a one-line message.

Never a wrong array, never another exception type. The damage is applied to compressed real
volumes: a multi-chunk crop of nibabel's example4d fMRI (always installed), and the golden
sparse-histogram CT (the value-table path). Cases where the header CRC or a chunk CRC is
recomputed after the damage reach the checks behind the CRCs: header validation, the entropy
decoder, the value range check and the final SHA-256.
"""
from __future__ import annotations

import json
import random
import struct
import zlib

import numpy as np
import pytest

import medzip
from medzip.container import FORMAT_MAJOR, FORMAT_MINOR, MAGIC
from medzip.errors import CorruptStreamError, UnsupportedVersionError

from conftest import CORE_MODEL, GOLDEN, PIP_ARRAYS, Stream, flip_bit, recrc_header


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real():
    """(array, stream) for a real 4-D MR crop coded as 2 x 3 chunks."""
    item = next(a for a in PIP_ARRAYS if a.id == "nibabel-example4d")
    arr = np.ascontiguousarray(item.load()[:, 8:14, 20:60, 30:70])
    data = medzip.compress(arr, model=CORE_MODEL, chunk_slices=2)
    assert len(Stream.parse(data).header["volumes"][0]["chunks"]) == 6
    return arr, data


@pytest.fixture(scope="module")
def sparse():
    """(array, stream) for a real CT crop whose sparse histogram is coded via a value table."""
    data = (GOLDEN / "ct_nema_2x64x64_u2.mzp").read_bytes()
    assert "value_table" in Stream.parse(data).header["volumes"][0]
    return medzip.decompress(data), data


def expect_corrupt(data: bytes, original: np.ndarray | None = None, *, workers: int = 1,
                   version: bool = False, benign_ok: bool = False) -> str:
    """Decode ``data``; it must raise CorruptStreamError (UnsupportedVersionError if ``version``).

    ``benign_ok``: for damage behind a recomputed CRC, decoding to exactly ``original`` is also
    acceptable (a flipped bit the decoder never reads); anything else is a failure.
    """
    try:
        out = medzip.decompress(data, workers=workers)
    except CorruptStreamError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, repr(msg)
        if version:
            assert isinstance(exc, UnsupportedVersionError), msg
        return msg
    except Exception as exc:  # noqa: BLE001 - the point of this suite
        pytest.fail(f"leaked {type(exc).__name__}: {exc}")
    if benign_ok and original is not None and out.dtype == original.dtype \
            and np.array_equal(out, original):
        return ""
    pytest.fail("damaged stream decoded without an error"
                + (" to a WRONG array" if original is not None else ""))


def _layout(data: bytes) -> dict:
    s = Stream.parse(data)
    vh = s.header["volumes"][0]
    return {"stream": s, "vh": vh, "hlen": s.body_start - 4 - s.header_start}


# -- truncation ---------------------------------------------------------------------------------
def test_truncation_everywhere(real):
    arr, data = real
    lay = _layout(data)
    s, vh = lay["stream"], lay["vh"]
    points = {0, 1, 4, 7, 8, 9, 10, 12, 15, 16, 17, s.header_start + lay["hlen"] // 2,
              s.body_start - 5, s.body_start - 4, s.body_start - 1, s.body_start,
              len(data) - 1, len(data) - 4}
    for ref in [vh["predictor_params"], *vh["chunks"]]:
        start = s.body_start + ref["offset"]
        points |= {start + 1, start + ref["length"] // 2, start + ref["length"] - 1}
    points |= set(range(0, len(data), max(1, len(data) // 97)))
    for n in sorted(p for p in points if 0 <= p < len(data)):
        msg = expect_corrupt(data[:n], arr)
        assert "truncated" in msg or "magic" in msg or "CRC" in msg, (n, msg)


def test_empty_and_tiny_inputs():
    for data in (b"", b"\x89", MAGIC, MAGIC + b"\x01\x00"):
        expect_corrupt(data)


# -- the fixed part and the header ---------------------------------------------------------------
@pytest.mark.parametrize("pos", range(8))
def test_wrong_magic(real, pos):
    arr, data = real
    msg = expect_corrupt(flip_bit(data, pos, 3), arr)
    assert "magic" in msg


def test_other_file_types_are_refused():
    for data in (b"\x89PNG\r\n\x1a\n" + bytes(64), b"\x93NUMPY" + bytes(64), bytes(100),
                 b"\x28\xb5\x2f\xfd" + bytes(60)):
        assert "not a medzip file" in expect_corrupt(data)


def test_header_json_bit_flips(real):
    arr, data = real
    lay = _layout(data)
    start, hlen = lay["stream"].header_start, lay["hlen"]
    for pos in sorted({start, start + 1, start + hlen // 3, start + hlen // 2, start + hlen - 1}
                      | set(range(start, start + hlen, max(1, hlen // 40)))):
        for bit in (0, 5):
            assert "CRC" in expect_corrupt(flip_bit(data, pos, bit), arr)


@pytest.mark.parametrize("byte", range(4))
def test_header_crc_bit_flip(real, byte):
    arr, data = real
    pos = _layout(data)["stream"].body_start - 4 + byte
    assert "header is corrupted" in expect_corrupt(flip_bit(data, pos, 7), arr)


def test_header_length_field_damage(real):
    arr, data = real
    for bit in (0, 3, 8, 15, 20, 31):
        pos = 12 + bit // 8
        expect_corrupt(flip_bit(data, pos, bit % 8), arr)


@pytest.mark.parametrize("major", [FORMAT_MAJOR + 1, FORMAT_MAJOR + 7, 0xFFFF])
def test_newer_major_version_is_refused(real, major):
    arr, data = real
    bumped = recrc_header(data[:8] + struct.pack("<H", major) + data[10:])
    msg = expect_corrupt(bumped, arr, version=True)
    assert f"{major}." in msg and "upgrade" in msg


def test_newer_minor_version_and_unknown_keys_are_accepted(real):
    """Version policy: minor versions are additive and readers ignore unknown keys."""
    arr, data = real
    s = Stream.parse(data)
    s.minor = FORMAT_MINOR + 3
    s.header["future_key"] = {"anything": [1, 2]}
    s.header["volumes"][0]["future_volume_key"] = "x"
    s.header["volumes"][0]["chunks"][0]["future_chunk_key"] = 7
    out = medzip.decompress(s.build())
    assert out.dtype == arr.dtype and np.array_equal(out, arr)


def test_major_version_rewritten_without_crc_fix(real):
    arr, data = real
    expect_corrupt(data[:8] + struct.pack("<H", FORMAT_MAJOR + 1) + data[10:], arr, version=True)


# -- sections -----------------------------------------------------------------------------------
def test_chunk_payload_bit_flips(real):
    arr, data = real
    lay = _layout(data)
    for i, c in enumerate(lay["vh"]["chunks"]):
        start = lay["stream"].body_start + c["offset"]
        for off in (0, c["length"] // 2, c["length"] - 1):
            msg = expect_corrupt(flip_bit(data, start + off, off % 8), arr)
            assert f"chunk {i}" in msg and "CRC" in msg


def test_predictor_params_bit_flips(real):
    arr, data = real
    lay = _layout(data)
    ref = lay["vh"]["predictor_params"]
    start = lay["stream"].body_start + ref["offset"]
    for off in (0, 1, 2, ref["length"] // 2, ref["length"] - 1):
        assert "predictor parameters" in expect_corrupt(flip_bit(data, start + off, 2), arr)


def test_value_table_bit_flips(sparse):
    arr, data = sparse
    lay = _layout(data)
    ref = lay["vh"]["value_table"]
    start = lay["stream"].body_start + ref["offset"]
    for off in range(ref["length"]):
        assert "value table" in expect_corrupt(flip_bit(data, start + off, off % 8), arr)


def test_multi_worker_decoder_reports_damage(real):
    arr, data = real
    lay = _layout(data)
    c = lay["vh"]["chunks"][4]
    expect_corrupt(flip_bit(data, lay["stream"].body_start + c["offset"] + 9, 1), arr, workers=2)


# -- header edited consistently (CRC recomputed) --------------------------------------------------
def _edited(data: bytes, edit) -> bytes:
    s = Stream.parse(data)
    edit(s.header["volumes"][0], s)
    return s.build()


def test_header_with_a_chunk_entry_removed(real):
    arr, data = real
    for i in (0, 3, 5):
        bad = _edited(data, lambda vh, s, i=i: vh["chunks"].pop(i))
        assert "do not cover" in expect_corrupt(bad, arr)


def test_header_with_a_chunk_entry_duplicated(real):
    arr, data = real
    bad = _edited(data, lambda vh, s: vh["chunks"].append(dict(vh["chunks"][1])))
    assert "do not cover" in expect_corrupt(bad, arr)


def test_header_with_swapped_chunk_payloads(real):
    """Two chunk entries exchange their byte ranges: every CRC matches, content is wrong."""
    arr, data = real

    def swap(vh, s):
        a, b = vh["chunks"][1], vh["chunks"][2]
        for key in ("offset", "length", "crc32"):
            a[key], b[key] = b[key], a[key]
    expect_corrupt(_edited(data, swap), arr)


# name -> (edit of the first volume entry / the header, words the message must contain)
MALFORMED = {
    "vmax_missing": (lambda vh, s: vh.pop("vmax"), "value range"),
    "vmax_negative": (lambda vh, s: vh.update(vmax=-1), "value range"),
    "vmax_string": (lambda vh, s: vh.update(vmax="12"), "value range"),
    "min_missing": (lambda vh, s: vh.pop("min"), "minimum value"),
    "min_null": (lambda vh, s: vh.update(min=None), "minimum value"),
    "chunks_object": (lambda vh, s: vh.update(chunks={"0": 1}), "chunk index"),
    "chunks_of_ints": (lambda vh, s: vh.update(chunks=[1, 2]), "chunk index"),
    "chunk_nz_missing": (lambda vh, s: vh["chunks"][0].pop("nz"), "chunk index"),
    "chunk_t_string": (lambda vh, s: vh["chunks"][0].update(t="x"), "chunk index"),
    "chunk_nz_zero": (lambda vh, s: vh["chunks"][0].update(nz=0), "chunk index"),
    "chunk_offset_past_end": (lambda vh, s: vh["chunks"][0].update(offset=10**12), "chunk 0"),
    "chunk_length_negative": (lambda vh, s: vh["chunks"][0].update(length=-5), "chunk 0"),
    "params_missing": (lambda vh, s: vh.pop("predictor_params"), "predictor parameters"),
    "params_list": (lambda vh, s: vh.update(predictor_params=[0, 1]), "predictor parameters"),
    "model_string": (lambda vh, s: vh.update(model="ls3d"), "model entry"),
    "shape_zero_axis": (lambda vh, s: vh.update(shape=[2, 6, 0, 40]), "shape"),
    "shape_string": (lambda vh, s: vh.update(shape="2x6"), "shape"),
    "shape_other_plane": (lambda vh, s: vh.update(shape=[2, 6, 20, 80]), ""),
    "shape_fewer_slices": (lambda vh, s: vh.update(shape=[2, 3, 40, 80]), "chunk"),
    "dtype_float": (lambda vh, s: vh.update(dtype="<f4"), "dtype"),
    "dtype_int64": (lambda vh, s: vh.update(dtype="<i8"), "dtype"),
    "dtype_nonsense": (lambda vh, s: vh.update(dtype="nonsense"), "dtype"),
    "dtype_wider": (lambda vh, s: vh.update(dtype="<i4"), ""),
    "min_below_dtype": (lambda vh, s: vh.update(min=-10**6), "do not fit"),
    "min_above_dtype": (lambda vh, s: vh.update(min=40000), "do not fit"),
    "codec_unknown": (lambda vh, s: vh.update(codec="wavelet"), "wavelet"),
    "sha256_wrong": (lambda vh, s: vh.update(sha256="0" * 64), "SHA-256"),
    "digest_wrong": (lambda vh, s: vh.update(digest="0" * 64), "SHA-256"),
    "value_table_added": (lambda vh, s: vh.update(
        value_table={"count": 3, "offset": 0, "length": 1, "crc32": 0}), "value table"),
    "volumes_object": (lambda vh, s: s.header.update(volumes={"a": 1}), "volume"),
    "volumes_of_ints": (lambda vh, s: s.header.update(volumes=[7]), "volume"),
    "volumes_missing": (lambda vh, s: s.header.pop("volumes"), "volume"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_header_fields(real, name):
    """CRC-valid but malformed headers: decompress and inspect both raise CorruptStreamError
    whose message names the damaged part."""
    arr, data = real
    edit, words = MALFORMED[name]
    bad = _edited(data, edit)
    assert words in expect_corrupt(bad, arr)
    try:
        medzip.inspect(bad)
    except CorruptStreamError as exc:
        assert "\n" not in str(exc)
    except Exception as exc:  # noqa: BLE001 - the point of the test
        pytest.fail(f"inspect leaked {type(exc).__name__}: {exc}")


def test_unknown_codec_is_a_version_error(real):
    arr, data = real
    bad = _edited(data, lambda vh, s: vh.update(codec="wavelet"))
    assert "wavelet" in expect_corrupt(bad, arr, version=True)


def test_constant_volume_with_edited_value(real):
    arr = np.full((3, 4, 5), 7, np.uint8)
    data = medzip.compress(arr, model=CORE_MODEL)
    for value in (8, -1, 300, "x", None):
        expect_corrupt(_edited(data, lambda vh, s, v=value: vh.update(min=v)), arr)


# -- damage behind a recomputed CRC: only the decoder's own checks can catch it -------------------
def _flip_behind_crc(data: bytes, key: str, index: int | None, off: int, bit: int) -> bytes:
    s = Stream.parse(data)
    vh = s.header["volumes"][0]
    ref = vh[key] if index is None else vh[key][index]
    body = bytearray(s.body)
    body[ref["offset"] + off] ^= 1 << bit
    s.body = bytes(body)
    ref["crc32"] = zlib.crc32(s.section(ref)) & 0xFFFFFFFF
    return s.build()


def test_chunk_damage_with_recomputed_crc(real):
    arr, data = real
    chunks = _layout(data)["vh"]["chunks"]
    rng = random.Random(20240601)
    raised = 0
    trials = 0
    for i, c in enumerate(chunks):
        offsets = {0, 1, c["length"] // 2, c["length"] - 5} | {rng.randrange(c["length"])
                                                              for _ in range(5)}
        for off in sorted(offsets):
            bad = _flip_behind_crc(data, "chunks", i, off, rng.randrange(8))
            raised += bool(expect_corrupt(bad, arr, workers=1 + (off % 2), benign_ok=True))
            trials += 1
    # a flip in the last word's unused tail bits may be harmless; anything else must be caught
    assert raised >= trials - len(chunks), (raised, trials)


def test_chunk_word_damage_with_recomputed_crc_is_caught(real):
    """Changing a whole early word of the range-coded payload always corrupts the decode."""
    arr, data = real
    for i in (0, 2, 5):
        s = Stream.parse(data)
        ref = s.header["volumes"][0]["chunks"][i]
        body = bytearray(s.body)
        word = slice(ref["offset"], ref["offset"] + 4)
        body[word] = bytes(b ^ 0xA5 for b in body[word])
        s.body = bytes(body)
        ref["crc32"] = zlib.crc32(s.section(ref)) & 0xFFFFFFFF
        assert expect_corrupt(s.build(), arr)


def test_chunk_truncated_to_odd_length_with_recomputed_crc(real):
    arr, data = real
    s = Stream.parse(data)
    ref = s.header["volumes"][0]["chunks"][1]
    ref["length"] -= 3
    ref["crc32"] = zlib.crc32(s.section(ref)) & 0xFFFFFFFF
    assert "truncated" in expect_corrupt(s.build(), arr)


def test_chunk_shortened_by_words_with_recomputed_crc(real):
    arr, data = real
    for drop in (4, 40):
        s = Stream.parse(data)
        ref = s.header["volumes"][0]["chunks"][2]
        ref["length"] -= drop
        ref["crc32"] = zlib.crc32(s.section(ref)) & 0xFFFFFFFF
        expect_corrupt(s.build(), arr)


def test_predictor_params_damage_with_recomputed_crc(real):
    arr, data = real
    length = _layout(data)["vh"]["predictor_params"]["length"]
    for off in (0, 1, 2, 9, length // 2, length - 1):
        for bit in (0, 6):
            bad = _flip_behind_crc(data, "predictor_params", None, off, bit)
            expect_corrupt(bad, arr, benign_ok=True)


def test_value_table_damage_with_recomputed_crc(sparse):
    arr, data = sparse
    length = _layout(data)["vh"]["value_table"]["length"]
    raised = 0
    for off in range(length):
        bad = _flip_behind_crc(data, "value_table", None, off, (3 * off) % 8)
        raised += bool(expect_corrupt(bad, arr, benign_ok=True))
    assert raised >= length - 2  # e.g. a zstd frame-header bit the decoder does not need


def test_value_table_count_edited(sparse):
    arr, data = sparse
    for count in (1, 2, 10**6, 0, -3):
        bad = _edited(data, lambda vh, s, n=count: vh["value_table"].update(count=n))
        expect_corrupt(bad, arr)


# -- the other entry points -----------------------------------------------------------------------
def test_payload_verify_and_inspect_report_damage(real):
    arr, data = real
    lay = _layout(data)
    bad = flip_bit(data, lay["stream"].body_start + lay["vh"]["chunks"][0]["offset"] + 3)
    for fn in (medzip.decompress_payload, medzip.verify):
        with pytest.raises(CorruptStreamError):
            fn(bad)
    with pytest.raises(CorruptStreamError):
        medzip.inspect(flip_bit(data, 20))
    assert medzip.verify(data)["volumes"][0]["shape"] == list(arr.shape)


def test_member_damage(real):
    """A stored member (e.g. a file header) is checked by CRC, zstd and SHA-256."""
    from medzip.formats.base import Payload

    arr, _ = real
    payload = Payload([arr], {"hdr.bin": bytes(range(256)) * 8}, {"format": "array"})
    data = medzip.compress_payload(payload, model=CORE_MODEL)
    s = Stream.parse(data)
    (m,) = s.header["members"]
    start = s.body_start + m["offset"]
    assert "member" in expect_corrupt(flip_bit(data, start + m["length"] // 2), arr)

    def edit(vh, st):
        st.header["members"][0]["sha256"] = "0" * 64
    assert "member" in expect_corrupt(_edited(data, edit), arr)
    assert json.loads(json.dumps(medzip.inspect(data)))["members"][0]["name"] == "hdr.bin"
