"""Format 1.2 fallback: a volume's bytes (zstd -19 / xz) or a member (raw / zstd / xz) are
stored with whichever coding is smallest; decoding stays exact and hostile fallback sections
cost no more than their real data."""
from __future__ import annotations

import functools
import lzma
import zlib

import numpy as np
import pytest
import zstandard

import medzip
from medzip import general, volume_codec
from medzip.container import FORMAT_MAJOR, FORMAT_MINOR
from medzip.errors import CorruptStreamError, UnsupportedVersionError
from medzip.formats.base import Payload

from conftest import PIP_ARRAYS, Stream
from test_hostile import RSS_BUDGET, _outcome, run_limited


def label_map(shape=(6, 64, 64)) -> np.ndarray:
    """A synthetic label image: a few flat regions with exact repeats (what LZ coders eat)."""
    z, y, x = np.indices(shape)
    lab = ((x // 16 + y // 16 + z // 3) % 4).astype(np.uint8) * 60
    lab[:, 20:30, 5:50] = 255
    return lab


@pytest.fixture(scope="module")
def labels():
    arr = label_map()
    return arr, medzip.compress(arr, level=1)


def test_label_map_is_stored_by_an_lz_coder_smaller_than_predictively(labels):
    arr, data = labels
    vh = Stream.parse(data).header["volumes"][0]
    assert vh["codec"] in ("zstd", "xz") and "data" in vh and not vh["chunks"]
    assert len(data) < len(medzip.compress(arr, level=1, fallback=False))
    out = medzip.decompress(data)
    assert out.dtype == arr.dtype and np.array_equal(out, arr)
    out[0, 0, 0] ^= 1  # a normal, writable array
    info = medzip.inspect(data)
    assert info["volumes"][0]["codec"] == vh["codec"] and info["complete"]
    assert info["volumes"][0]["stored_bytes"] == vh["data"]["length"]
    assert medzip.decompress(data, slices=(2, 4)).tolist() == arr[2:4].tolist()


def test_version_is_1_2():
    assert (FORMAT_MAJOR, FORMAT_MINOR) >= (1, 2)


@pytest.mark.parametrize("dtype", [">u2", "<i4", "|i1"])
def test_fallback_keeps_byte_order_and_dtype(dtype):
    arr = (label_map((3, 32, 32)).astype(np.int64) - 100).astype(dtype)
    data = medzip.compress(arr, level=1)
    assert Stream.parse(data).header["volumes"][0]["codec"] in ("zstd", "xz")
    out = medzip.decompress(data)
    assert out.dtype.str == np.dtype(dtype).str and np.array_equal(out, arr)


def test_real_images_stay_predictive():
    """Real CT/MR: the predictive coding is smaller and is kept."""
    real = [a for a in PIP_ARRAYS if "CT_small" in a.id or "MR_small" == a.id[8:]]
    if not real:
        pytest.skip("pydicom's CT_small.dcm / MR_small.dcm not installed")
    for item in real:
        arr = item.load()
        data = medzip.compress(arr, level=1)
        assert Stream.parse(data).header["volumes"][0]["codec"] == "predictive", item.id
        assert len(data) < len(general.zstd(arr.tobytes())), item.id


def test_large_volumes_probe_with_zstd_3_first(monkeypatch):
    """Above FALLBACK_TRY_ALL_VOXELS the slow coders run only when zstd -3 comes close."""
    calls = []
    real_xz = general.xz
    monkeypatch.setattr(general, "xz", lambda data: calls.append(len(data)) or real_xz(data))
    monkeypatch.setattr(volume_codec, "FALLBACK_TRY_ALL_VOXELS", 20_000)
    rng = np.random.default_rng(5)
    z, y, x = np.mgrid[0:6, 0:64, 0:64]
    smooth = (800 * np.sin(x / 7) * np.cos(y / 9) + 40 * z + rng.integers(-3, 4, x.shape))
    smooth = smooth.astype(np.int16)  # noisy and smooth: predictive wins by far
    data = medzip.compress(smooth, level=1)
    assert Stream.parse(data).header["volumes"][0]["codec"] == "predictive"
    assert calls == []  # zstd -3 was far off: xz never ran
    arr = label_map()
    data = medzip.compress(arr, level=1)
    assert Stream.parse(data).header["volumes"][0]["codec"] in ("zstd", "xz")
    assert calls == [arr.nbytes]
    assert np.array_equal(medzip.decompress(data), arr)


def test_members_take_the_smallest_coding():
    text = b"(0008,0016) SOP Class UID " * 200
    noise = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    payload = Payload([np.arange(24, dtype=np.uint8).reshape(2, 3, 4)],
                      {"text": text, "noise": noise, "tiny": b"ab", "empty": b""})
    data = medzip.compress_payload(payload, level=1)
    members = {m["name"]: m for m in Stream.parse(data).header["members"]}
    assert members["noise"]["codec"] == "raw" and members["noise"]["length"] == len(noise)
    assert members["tiny"]["codec"] == "raw"
    assert members["text"]["codec"] in ("zstd", "xz")
    assert members["text"]["length"] == min(len(general.zstd(text)), len(general.xz(text)))
    back = medzip.decompress_payload(data)
    assert back.members == payload.members


# -- damaged and hostile fallback sections ---------------------------------------------------
def _replace_data(data: bytes, blob: bytes, **volume) -> bytes:
    """The archive with its volume's fallback section replaced by ``blob`` (valid CRC)."""
    s = Stream.parse(data)
    vh = s.header["volumes"][0]
    vh.update(volume)
    vh["data"] = {"offset": len(s.body), "length": len(blob),
                  "crc32": zlib.crc32(blob) & 0xFFFFFFFF}
    s.body += blob
    return s.build()


def test_damaged_fallback_section_is_corrupt(labels):
    arr, data = labels
    s = Stream.parse(data)
    ref = s.header["volumes"][0]["data"]
    start = s.body_start + ref["offset"] + ref["length"] // 2
    flipped = data[:start] + bytes([data[start] ^ 4]) + data[start + 1:]
    with pytest.raises(CorruptStreamError, match="volume data"):
        medzip.decompress(flipped)
    with pytest.raises(CorruptStreamError, match="volume data"):
        medzip.decompress(data[:s.body_start + ref["offset"] + 3])  # truncated
    codec = s.header["volumes"][0]["codec"]
    coded = bytearray(s.section(ref))
    coded[len(coded) // 2] ^= 0x10  # damage that the CRC no longer sees
    with pytest.raises(CorruptStreamError):
        medzip.decompress(_replace_data(data, bytes(coded)))
    other = arr.copy()
    other[0, 0, 0] ^= 1  # a valid stream of other voxels: the digest catches it
    for blob in (general.zstd(other.tobytes()), general.xz(other.tobytes())):
        with pytest.raises(CorruptStreamError, match="SHA-256"):
            medzip.decompress(_replace_data(data, blob, codec="zstd" if blob[:4] ==
                                            b"\x28\xb5\x2f\xfd" else "xz"))
    short = general.zstd(arr.tobytes()[:-1]) if codec == "zstd" else general.xz(arr.tobytes()[:-1])
    with pytest.raises(CorruptStreamError, match="wrong size|incomplete"):
        medzip.decompress(_replace_data(data, short))


def test_unknown_volume_codec_is_an_unsupported_version(labels):
    _, data = labels
    s = Stream.parse(data)
    s.header["volumes"][0]["codec"] = "brotli"
    with pytest.raises(UnsupportedVersionError, match="unknown"):
        medzip.decompress(s.build())


@functools.lru_cache(maxsize=None)
def _bomb(codec: str) -> bytes:
    """512 MiB of zeros (twice the RSS budget), coded fast: a reader that inflated it whole
    would fail the memory check."""
    zeros = bytes(512 << 20)
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(zeros)
    return lzma.compress(zeros, format=lzma.FORMAT_RAW,
                         filters=[{"id": lzma.FILTER_LZMA2, "preset": 0}])


@pytest.mark.parametrize("codec", ["zstd", "xz"])
@pytest.mark.parametrize("forge", ["bomb_in_small_volume", "huge_shape_small_data"])
def test_forged_fallback_costs_only_its_real_data(labels, codec, forge):
    arr, data = labels
    if forge == "bomb_in_small_volume":  # 256 MiB of zeros declared as the 24 KiB volume
        bad = _replace_data(data, _bomb(codec), codec=codec)
    else:  # a 2 GiB volume declared, 24 KiB of real data
        bad = _replace_data(data, general.zstd(arr.tobytes()) if codec == "zstd"
                            else general.xz(arr.tobytes()), codec=codec, shape=[1024] * 3)
    status, value, growth = run_limited(_outcome, bad, arr)
    assert status == "ok", value
    assert value in ("corrupt", "refused"), value
    assert growth < RSS_BUDGET, f"resident memory grew by {growth >> 20} MiB"


@pytest.mark.parametrize("codec", ["zstd", "xz"])
def test_forged_member_bomb_costs_only_its_declared_size(codec):
    data = medzip.compress_payload(Payload([np.zeros((1, 2, 2), np.uint8)], {"m": b"x" * 100}))
    s = Stream.parse(data)
    blob = _bomb(codec)
    m = s.header["members"][0]
    m.update(codec=codec, size=100, offset=len(s.body), length=len(blob),
             crc32=zlib.crc32(blob) & 0xFFFFFFFF)
    s.body += blob
    status, value, growth = run_limited(_outcome, s.build(), np.zeros((1, 2, 2), np.uint8))
    assert status == "ok" and value in ("corrupt", "refused"), value
    assert growth < RSS_BUDGET


# -- format 2.0 headers and stored files -------------------------------------------------------
def test_compressed_header_bomb_is_refused_cheaply():
    import struct

    from medzip.container import MAGIC, compress_header

    packed = compress_header(b" " * (64 << 20))  # 64 MiB of JSON whitespace, a few KiB coded
    prefix = MAGIC + struct.pack("<HHI", 2, 0, len(packed)) + packed
    bad = prefix + struct.pack("<I", zlib.crc32(prefix) & 0xFFFFFFFF)
    status, value, growth = run_limited(_outcome, bad, np.zeros(1, np.uint8))
    assert status == "ok" and value == "corrupt", value
    assert growth < RSS_BUDGET


def test_writer_picks_2_0_when_the_compressed_header_is_smaller(labels):
    _, data = labels
    s = Stream.parse(data)
    assert (s.major, s.minor) == (2, 0)
    plain = json_len(s.header)
    assert s.body_start - 20 < plain  # the compressed header is what made it 2.0


def json_len(header: dict) -> int:
    import json

    return len(json.dumps(header, separators=(",", ":"), sort_keys=True))


def test_old_1_x_files_still_decode_with_their_header_form():
    """A 1.2 file (plain JSON header) written by this writer when it is the smaller form."""
    from medzip.container import JSON_FORMAT, ContainerWriter

    writer = ContainerWriter()
    data = writer.finish({"volumes": [], "members": []})  # tiny: JSON is not larger
    assert Stream.parse(data).major in (1, 2)
    assert JSON_FORMAT == (1, 2)
    assert medzip.decompress_payload(data).volumes == []


@pytest.mark.parametrize("content", ["gzip", "text"])
def test_small_files_are_stored_whole_when_smaller(tmp_path, content):
    """A tiny .nii.gz (already compressed) and a tiny NRRD whose header is most of it: the
    archive is the stored form, restores byte for byte, and costs at most 64 bytes more than
    zstd -19 of the file."""
    from medzip import files

    arr = label_map((2, 8, 8))
    if content == "gzip":
        import nibabel

        src = tmp_path / "tiny.nii.gz"
        nibabel.save(nibabel.Nifti1Image(arr.T.copy(), np.eye(4)), str(src))
        assert src.read_bytes()[:2] == b"\x1f\x8b"
    else:
        src = tmp_path / "tiny.nrrd"
        src.write_bytes(b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 8 8 2\nencoding: raw\n"
                        b"# a comment that makes the header most of the file\n\n" + arr.tobytes())
    raw = src.read_bytes()
    data = files.encode_file(src, level=1, workers=1)
    s = Stream.parse(data)
    assert s.header["source"] == {"format": "stored"} and (s.major, s.minor) == (2, 0)
    assert len(data) <= len(general.zstd(raw)) + 64
    (tmp_path / "out").mkdir()
    out = files.decompress_bytes(data, tmp_path / "out" / src.name)
    assert [p.read_bytes() for p in out] == [raw]
    info = files.info_bytes(data)
    assert info["details"] and "stored" in info["details"][0]
    # the member's CRC-32 catches damage in the stored bytes (section CRC fixed up)
    m = s.header["members"][0]
    body = bytearray(s.body)
    body[len(body) // 2] ^= 1
    s.body = bytes(body)
    m["crc32"] = zlib.crc32(s.body) & 0xFFFFFFFF
    if m.get("codec", "raw") == "raw":
        m["data_crc32"] = zlib.crc32(raw) & 0xFFFFFFFF  # raw: keep the real check of the bytes
    with pytest.raises(CorruptStreamError):
        medzip.decompress_payload(s.build())


def test_header_dictionary_is_the_documented_one():
    """The 2.0 dictionary is part of the format (docs/FORMAT.md §1.1): never edited."""
    import hashlib

    from medzip.header_dict import HEADER_DICT_2_0

    assert len(HEADER_DICT_2_0) == 2009
    assert hashlib.sha256(HEADER_DICT_2_0).hexdigest() == (
        "54ae63fe8436e14b2d9d26bbd9efb9a453857831e2fa9b8e762addb685398ea8")


def test_detached_data_file_is_never_stored_alone(tmp_path):
    """A .nhdr names its data file: storing the header alone would lose the voxels, so the
    stored-file form is not offered (even though the header alone would be tiny)."""
    from medzip import files

    arr = label_map((2, 8, 8))
    (tmp_path / "tiny.raw").write_bytes(arr.tobytes())
    src = tmp_path / "tiny.nhdr"
    src.write_bytes(b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 8 8 2\nencoding: raw\n"
                    b"data file: tiny.raw\n\n")
    data = files.encode_file(src, level=1, workers=1)
    assert medzip.inspect(data)["source"]["format"] == "nrrd"
    out = tmp_path / "out"
    out.mkdir()
    written = files.decompress_bytes(data, out / src.name)
    assert sorted(p.name for p in written) == ["tiny.nhdr", "tiny.raw"]
    assert (out / "tiny.raw").read_bytes() == arr.tobytes()
