"""NRRD and MetaImage adapters: byte-identical restore through the codec, checked against
pynrrd / SimpleITK as independent readers."""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

import medzip
from medzip.errors import CorruptStreamError, UnsupportedInputError
from medzip.formats.base import adapter_by_name, adapter_for_path

try:  # optional extras ("formats"): only used here as independent writers/readers
    import nrrd
except ImportError:
    nrrd = None
try:
    import SimpleITK as sitk
except ImportError:
    sitk = None
needs_nrrd = pytest.mark.skipif(nrrd is None, reason="pynrrd not installed")
needs_sitk = pytest.mark.skipif(sitk is None, reason="SimpleITK not installed")

SHARED = Path(os.environ.get("MEDZIP_SHARED_DATA",  # same override as conftest.py
                            Path(__file__).resolve().parents[1].parent / "shared" / "data"))
VOLUME = SHARED / "volumes" / "ct_head_invesalius_cranium.npy"


@pytest.fixture(scope="module")
def vol() -> np.ndarray:
    """Real CT (int16) when the shared data is here, else a smooth deterministic phantom."""
    if VOLUME.exists():
        return np.ascontiguousarray(np.load(VOLUME)[40:48, 64:160, 64:176])
    z, y, x = np.mgrid[0:8, 0:96, 0:112]
    rng = np.random.default_rng(3)
    return (1000 * np.sin(x / 9.0) * np.cos(y / 7.0) + 30 * z + rng.integers(-5, 6, x.shape)).astype(np.int16)


def roundtrip(src: Path, out_dir: Path):
    """Returns (payload read, payload decoded, written paths)."""
    adapter = adapter_for_path(src)
    payload = adapter.read(src)
    back = medzip.decompress_payload(medzip.compress_payload(payload, level=1))
    out_dir.mkdir(parents=True, exist_ok=True)
    return payload, back, adapter_by_name(back.meta["format"]).write(back, out_dir / src.name)


def assert_identical(written, src_dir: Path, out_dir: Path):
    assert written
    for p in written:
        assert p.read_bytes() == (src_dir / p.relative_to(out_dir)).read_bytes(), p.name


@needs_nrrd
# -- NRRD ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, options", [
    ("raw.nrrd", {"header": {"encoding": "raw"}}),
    ("gzip9.nrrd", {"header": {"encoding": "gzip"}}),
    ("gzip1.nrrd", {"header": {"encoding": "gzip"}, "compression_level": 1}),
    ("big.nrrd", {"header": {"encoding": "raw", "endian": "big"}}),
    ("detached.nhdr", {"header": {"encoding": "raw"}, "detached_header": True}),
])
def test_nrrd_restores_byte_identical(tmp_path, vol, name, options):
    src = tmp_path / name
    nrrd.write(str(src), vol.T.copy(), **options)
    payload, back, written = roundtrip(src, tmp_path / "out")
    assert payload.meta["format"] == "nrrd" and payload.meta.get("exact", True)
    assert_identical(written, tmp_path, tmp_path / "out")
    assert len(written) == (2 if name.endswith(".nhdr") else 1)
    data, _ = nrrd.read(str(src), index_order="C")
    assert np.array_equal(payload.volumes[0], data)  # same voxels as an independent reader


@needs_nrrd
def test_nrrd_vector_axis_coded_first(tmp_path, vol):
    vec = np.stack([vol[:4], vol[:4] // 2, vol[:4] + 7], axis=-1)  # (z, y, x, c) in C order
    src = tmp_path / "dwi.nrrd"
    nrrd.write(str(src), vec.T.copy(), {"encoding": "gzip", "kinds": ["vector", "domain", "domain", "domain"]})
    payload, _, written = roundtrip(src, tmp_path / "out")
    assert payload.volumes[0].shape == (3, 4) + vol.shape[1:]
    assert np.array_equal(payload.volumes[0], np.moveaxis(vec, -1, 0))
    assert_identical(written, tmp_path, tmp_path / "out")


def test_nrrd_skips_comments_and_trailing_bytes(tmp_path, vol):
    body = vol.astype("<i2").tobytes()
    header = (b"NRRD0004\n# written by hand\ntype: short\ndimension: 3\n"
              b"sizes: %d %d %d\nendian: little\nencoding: raw\nline skip: 1\nbyte skip: 5\n"
              b"my key:=my: value\n\n" % vol.shape[::-1])
    src = tmp_path / "skips.nrrd"
    src.write_bytes(header + b"junk line\n" + b"ABCDE" + body + b"trailing")
    payload, _, written = roundtrip(src, tmp_path / "out")
    assert np.array_equal(payload.volumes[0], vol)
    assert_identical(written, tmp_path, tmp_path / "out")
    # byte skip -1: the voxels are the last bytes of the file
    src2 = tmp_path / "tail.nrrd"
    src2.write_bytes(header.replace(b"line skip: 1\nbyte skip: 5", b"byte skip: -1") + b"pad" + body)
    payload, _, written = roundtrip(src2, tmp_path / "out2")
    assert np.array_equal(payload.volumes[0], vol)
    assert_identical(written, tmp_path, tmp_path / "out2")


@needs_nrrd
def test_nrrd_gzip_from_other_deflater_keeps_voxels(tmp_path, vol):
    """A gzip stream zlib cannot reproduce (here: memLevel 9, filtered strategy) is restored
    re-deflated: header and voxels identical, checked by the decoded data's SHA-256."""
    header = b"NRRD0004\ntype: int16\ndimension: 3\nsizes: %d %d %d\nendian: little\nencoding: gzip\n\n" % vol.shape[::-1]
    comp = zlib.compressobj(6, zlib.DEFLATED, 31, 9, zlib.Z_FILTERED)
    src = tmp_path / "other.nrrd"
    src.write_bytes(header + comp.compress(vol.astype("<i2").tobytes()) + comp.flush())
    payload, back, written = roundtrip(src, tmp_path / "out")
    assert payload.meta["exact"] is False
    assert written[0].read_bytes().startswith(header)
    data, _ = nrrd.read(str(written[0]), index_order="C")
    assert np.array_equal(data, vol)
    assert any("file bytes differ" in line for line in adapter_by_name("nrrd").describe(back.meta))


@needs_nrrd
def test_nrrd_ascii_kept_verbatim_and_float_refused(tmp_path, vol):
    src = tmp_path / "text.nrrd"
    nrrd.write(str(src), vol[:1, :5, :5].T.copy(), {"encoding": "ascii"})
    payload, _, written = roundtrip(src, tmp_path / "out")
    assert payload.volumes == [] and "ascii" in payload.meta["verbatim"]
    assert_identical(written, tmp_path, tmp_path / "out")
    flt = tmp_path / "float.nrrd"
    nrrd.write(str(flt), vol.astype(np.float32).T.copy())
    with pytest.raises(UnsupportedInputError, match="float.nrrd"):
        adapter_for_path(flt).read(flt)


@needs_nrrd
def test_nrrd_damage_is_reported_with_file_name(tmp_path, vol):
    src = tmp_path / "scan.nrrd"
    nrrd.write(str(src), vol.T.copy(), {"encoding": "gzip"})
    adapter = adapter_for_path(src)
    back = medzip.decompress_payload(medzip.compress_payload(adapter.read(src), level=1))
    back.volumes[0][2, 3, 4] += 1
    with pytest.raises(CorruptStreamError, match="scan.nrrd"):
        adapter.write(back, tmp_path / "restored.nrrd")
    assert not (tmp_path / "restored.nrrd").exists()


# -- MetaImage ----------------------------------------------------------------------------------

def _mha_header(vol, *, extra=b"", data_file=b"LOCAL"):
    return (b"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            b"ElementSpacing = 0.5 0.5 2\nDimSize = %d %d %d\nElementType = MET_SHORT\n%s"
            b"ElementDataFile = %s\n" % (vol.shape[2], vol.shape[1], vol.shape[0], extra, data_file))


def test_mha_zlib_compressed_restores_byte_identical(tmp_path, vol):
    stream = zlib.compress(vol.astype("<i2").tobytes(), 6)
    src = tmp_path / "zlib.mha"
    src.write_bytes(_mha_header(vol, extra=b"CompressedData = True\nCompressedDataSize = %d\n" % len(stream)) + stream)
    payload, back, written = roundtrip(src, tmp_path / "out")
    assert payload.meta["exact"] is True and payload.meta["deflate_level"] == 6
    assert np.array_equal(payload.volumes[0], vol)
    assert_identical(written, tmp_path, tmp_path / "out")


def test_mhd_header_size_skip_and_detached_file(tmp_path, vol):
    (tmp_path / "scan.raw").write_bytes(b"\x00" * 12 + vol.astype("<i2").tobytes())
    src = tmp_path / "scan.mhd"
    src.write_bytes(_mha_header(vol, extra=b"HeaderSize = 12\n", data_file=b"scan.raw"))
    payload, _, written = roundtrip(src, tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in written] == ["scan.mhd", "scan.raw"]
    assert np.array_equal(payload.volumes[0], vol)
    assert_identical(written, tmp_path, tmp_path / "out")


@pytest.mark.parametrize("name", [b"../outside.raw", b"data/scan.raw", b".bashrc", b"/etc/x.raw"])
def test_mha_unsafe_data_file_refused(tmp_path, vol, name):
    # A restore writes the data file under this name beside its output, so only a plain,
    # visible name in the header's own folder is accepted.
    src = tmp_path / "evil.mhd"
    src.write_bytes(_mha_header(vol, data_file=name))
    with pytest.raises(UnsupportedInputError, match="evil.mhd.*plain file name"):
        adapter_for_path(src).read(src)


@needs_sitk
@pytest.mark.parametrize("name, compress", [("plain.mha", False), ("plain.mhd", False),
                                            ("itk.mha", True), ("itk.mhd", True)])
def test_simpleitk_files(tmp_path, vol, name, compress):
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((0.7, 0.7, 2.5))
    src = tmp_path / name
    sitk.WriteImage(img, str(src), useCompression=compress)
    payload, back, written = roundtrip(src, tmp_path / "out")
    assert payload.meta["format"] == "metaimage"
    assert np.array_equal(payload.volumes[0], sitk.GetArrayFromImage(sitk.ReadImage(str(src))))
    if payload.meta.get("exact", True):
        assert_identical(written, tmp_path, tmp_path / "out")
    else:  # ITK's zlib-ng stream: same header fields and voxels, re-deflated data
        again = sitk.ReadImage(str(written[0]))
        assert np.array_equal(sitk.GetArrayFromImage(again), vol)
        assert again.GetSpacing() == img.GetSpacing()


@needs_sitk
def test_simpleitk_vector_image(tmp_path, vol):
    vec = np.stack([vol[:3], vol[:3] - 5], axis=-1)
    src = tmp_path / "vec.mha"
    sitk.WriteImage(sitk.GetImageFromArray(vec, isVector=True), str(src))
    payload, _, written = roundtrip(src, tmp_path / "out")
    assert np.array_equal(payload.volumes[0], np.moveaxis(vec, -1, 0))
    assert_identical(written, tmp_path, tmp_path / "out")


@needs_nrrd
def test_describe_and_default_output(tmp_path, vol):
    src = tmp_path / "a.nrrd"
    nrrd.write(str(src), vol.T.copy(), {"encoding": "gzip"})
    adapter = adapter_for_path(src)
    payload = adapter.read(src)
    text = "\n".join(adapter.describe(payload.meta))
    assert "gzip" in text and "byte-identical" in text and "int16" in text
    assert adapter.default_output(payload, tmp_path / "a.nrrd.mzp") == tmp_path / "a.nrrd"
    assert adapter.default_output(payload, tmp_path / "archive") == tmp_path / "a.nrrd"
    gz = gzip.compress(b"not an image")
    (tmp_path / "x.bin").write_bytes(gz)
    with pytest.raises(UnsupportedInputError, match="unrecognised"):
        adapter_for_path(tmp_path / "x.bin")


@needs_nrrd
def test_detached_gzip_nrrd_with_byte_skip_minus_one(tmp_path, vol):
    """'byte skip: -1' with gzip: the voxels are the last bytes of the *decoded* data (NRRD
    spec; pynrrd reads it so). Restores byte for byte; pynrrd agrees on the voxels."""
    body = b"\x07" * 37 + vol.astype("<i2").tobytes()  # decoded data: a prefix, then voxels
    header = (b"NRRD0004\ntype: short\ndimension: 3\nsizes: %d %d %d\nendian: little\n"
              b"encoding: gzip\nbyte skip: -1\ndata file: ball.raw.gz\n\n"
              % tuple(reversed(vol.shape)))
    (tmp_path / "ball.nhdr").write_bytes(header)
    (tmp_path / "ball.raw.gz").write_bytes(gzip.compress(body, compresslevel=6, mtime=0))
    expected, _ = nrrd.read(str(tmp_path / "ball.nhdr"), index_order="C")
    payload, back, written = roundtrip(tmp_path / "ball.nhdr", tmp_path / "out")
    assert np.array_equal(payload.volumes[0].reshape(vol.shape), expected)
    assert_identical(written, tmp_path, tmp_path / "out")


def test_nrrd_byte_skip_below_minus_one_names_the_field(tmp_path, vol):
    body = vol.astype("<i2").tobytes()
    src = tmp_path / "bad.nrrd"
    src.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: %d %d %d\nendian: little\n"
                    b"encoding: raw\nbyte skip: -5\n\n" % tuple(reversed(vol.shape)) + body)
    with pytest.raises(UnsupportedInputError, match=r"invalid 'byte skip: -5'.*-1 or more"):
        adapter_for_path(src).read(src)
