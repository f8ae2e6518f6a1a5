"""The .npy and NIfTI adapters: stored integers in, byte-identical files out.

Real data: the NIfTI files nibabel ships (always available) and, when the project's shared data
folder sits next to the repo, the NIfTI originals there. Coding uses level 1 to stay fast.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path as NIB_DATA

from medzip import api
from medzip.errors import CorruptStreamError, MedzipError, UnsupportedInputError
from medzip.formats import npy as npy_mod
from medzip.formats.base import Payload, adapter_by_name, adapter_for_path
from medzip.formats.nifti import ADAPTER as NIFTI
from medzip.formats.npy import ADAPTER as NPY

SHARED = Path(os.environ.get("MEDZIP_SHARED_DATA",  # same override as conftest.py
                            Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "originals"
NIB_FILES = ["anatomical.nii", "functional.nii", "example4d.nii.gz", "example_nifti2.nii.gz"]
SHARED_FILES = sorted(SHARED.glob("*.nii.gz")) if SHARED.is_dir() else []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def roundtrip(adapter, path: Path, out: Path) -> tuple[Payload, Payload]:
    """Read, code at level 1, decode, write; returns (original payload, decoded payload)."""
    payload = adapter.read(path)
    decoded = api.decompress_payload(api.compress_payload(payload, level=1))
    assert adapter.write(decoded, out) == [out]
    return payload, decoded


def nii_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


# ---- NIfTI on real files ----------------------------------------------------------------------

@pytest.mark.parametrize("src", [Path(NIB_DATA) / n for n in NIB_FILES] + SHARED_FILES,
                         ids=lambda p: p.name)
def test_nifti_real_files_restore_identical(src, tmp_path):
    assert adapter_for_path(src) is NIFTI
    out = tmp_path / src.name
    payload, decoded = roundtrip(NIFTI, src, out)
    # The decompressed .nii bytes are identical in every case ...
    assert sha(nii_bytes(out)) == sha(nii_bytes(src)) == payload.meta["nii_sha256"]
    # ... and the .gz file itself when the original zlib level was found.
    if payload.meta.get("gz_level"):
        assert out.read_bytes() == src.read_bytes()
    # Stored integers, in medzip's (..., z, y, x) order, native byte order.
    stored = np.asarray(nib.load(src).dataobj.get_unscaled())
    vol = payload.volumes[0]
    assert vol.dtype.isnative and vol.dtype.kind == stored.dtype.kind
    np.testing.assert_array_equal(vol.reshape(stored.T.shape), stored.T)


def test_nifti_big_endian_is_kept(tmp_path):
    src = Path(NIB_DATA) / "anatomical.nii"
    payload = NIFTI.read(src)
    assert payload.meta["dtype"] == ">i2" and payload.volumes[0].dtype == np.dtype("=i2")
    assert payload.volumes[0].shape == (25, 41, 33)  # nibabel (33, 41, 25) reversed
    out = tmp_path / "a.nii"
    roundtrip(NIFTI, src, out)
    assert out.read_bytes() == src.read_bytes()


def test_nifti_gz_archive_can_be_restored_as_plain_nii(tmp_path):
    src = Path(NIB_DATA) / "example4d.nii.gz"
    out = tmp_path / "plain.nii"
    roundtrip(NIFTI, src, out)
    assert out.read_bytes() == gzip.decompress(src.read_bytes())
    assert NIFTI.default_output(NIFTI.read(src), tmp_path / "x.nii.gz.mzp").name == "x.nii.gz"
    assert NIFTI.default_output(NIFTI.read(src), tmp_path / "x.mzp").name == "x.nii.gz"


# ---- NIfTI synthetic edge cases ---------------------------------------------------------------

def _save(path: Path, arr, *, endian="<", klass=nib.Nifti1Image, slope=None, ext=None):
    hdr = (nib.Nifti1Header if klass is nib.Nifti1Image else nib.Nifti2Header)(endianness=endian)
    img = klass(arr, np.diag([1.5, 2.0, 3.0, 1.0]), hdr)
    img.set_data_dtype(arr.dtype)
    if slope is not None:
        img.header.set_slope_inter(*slope)
    if ext is not None:
        img.header.extensions.append(nib.nifti1.Nifti1Extension("comment", ext))
    nib.save(img, path)
    return path


@pytest.mark.parametrize("dtype", ["i1", "u1", "i2", "u2", "i4", "u4"])
@pytest.mark.parametrize("endian", ["<", ">"])
def test_nifti_integer_dtypes_both_byte_orders(dtype, endian, tmp_path):
    info = np.iinfo(dtype)
    rng = np.random.default_rng(1)
    arr = rng.integers(info.min, info.max, (7, 6, 5), dtype=np.int64, endpoint=True).astype(dtype)
    src = _save(tmp_path / f"v_{dtype}{'be' if endian == '>' else 'le'}.nii", arr, endian=endian)
    out = tmp_path / "out.nii"
    payload, _ = roundtrip(NIFTI, src, out)
    assert out.read_bytes() == src.read_bytes()
    np.testing.assert_array_equal(payload.volumes[0], arr.T)


def test_nifti2_extensions_trailer_and_scaling_survive(tmp_path):
    arr = np.arange(4 * 5 * 6 * 2, dtype=np.int16).reshape(4, 5, 6, 2) - 100
    src = _save(tmp_path / "n2.nii", arr, klass=nib.Nifti2Image, slope=(0.5, -3.0),
                ext=b"kept verbatim")
    with open(src, "ab") as f:
        f.write(b"trailing bytes after the voxel data")
    payload = NIFTI.read(src)
    assert payload.meta["nifti_version"] == 2 and "nifti_trailer" in payload.members
    assert b"kept verbatim" in payload.members["nifti_header"]
    # Stored integers, not scl_slope/scl_inter-scaled floats.
    np.testing.assert_array_equal(payload.volumes[0], arr.T)
    out = tmp_path / "out.nii"
    roundtrip(NIFTI, src, out)
    assert out.read_bytes() == src.read_bytes()


def test_nifti_float_is_refused_in_one_line(tmp_path):
    src = _save(tmp_path / "float.nii", np.zeros((3, 3, 3), np.float32))
    with pytest.raises(UnsupportedInputError) as exc:
        NIFTI.read(src)
    msg = str(exc.value)
    assert str(src) in msg and "float32" in msg and "\n" not in msg


def test_nifti_truncated_and_garbage_are_refused(tmp_path):
    src = _save(tmp_path / "t.nii", np.ones((8, 8, 8), np.int16))
    cut = tmp_path / "cut.nii"
    cut.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(UnsupportedInputError, match="truncated"):
        NIFTI.read(cut)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UnsupportedInputError, match="junk.nii.gz"):
        NIFTI.read(junk)
    plain = tmp_path / "plain.nii"
    plain.write_bytes(b"\0" * 400)
    with pytest.raises(UnsupportedInputError, match="not a NIfTI"):
        NIFTI.read(plain)


@pytest.mark.parametrize("klass", [nib.Nifti1Image, nib.Nifti2Image], ids=["nifti1", "nifti2"])
@pytest.mark.parametrize("dims", [(-8, -8), (-(2 ** 14), 8)], ids=["two_negative", "one_negative"])
def test_nifti_negative_dimensions_are_refused(tmp_path, klass, dims):
    """Forged ``dim`` fields: one negative axis made nibabel allocate from a negative (NIfTI-2:
    huge) count and raise OverflowError; two passed the size check (found by fuzzing input
    files, stop 18)."""
    src = _save(tmp_path / "n.nii", np.ones((8, 8, 8), np.int16), klass=klass)
    raw = bytearray(src.read_bytes())
    fmt, at = ("<hh", 42) if klass is nib.Nifti1Image else ("<qq", 24)  # dim[1], dim[2]
    struct.pack_into(fmt, raw, at, *(d if klass is nib.Nifti1Image else d * 2 ** 48 for d in dims))
    src.write_bytes(bytes(raw))
    with pytest.raises(UnsupportedInputError, match="negative dimension") as exc:
        NIFTI.read(src)
    assert "\n" not in str(exc.value)


def test_nifti_is_sniffed_by_content(tmp_path):
    src = Path(NIB_DATA) / "example4d.nii.gz"
    anon = tmp_path / "no_extension"
    shutil.copy(src, anon)
    assert NIFTI.can_read(anon) and not NPY.can_read(anon)
    assert adapter_for_path(anon) is NIFTI


def test_nifti_write_refuses_wrong_voxels_and_writes_nothing(tmp_path):
    src = Path(NIB_DATA) / "functional.nii"
    payload = NIFTI.read(src)
    bad = payload.volumes[0].copy()
    bad.flat[123] += 1
    out = tmp_path / "bad.nii"
    with pytest.raises(CorruptStreamError, match="SHA-256"):
        NIFTI.write(Payload([bad], payload.members, payload.meta), out)
    with pytest.raises(CorruptStreamError):
        NIFTI.verify(Payload([bad], payload.members, payload.meta))
    assert not out.exists()


# ---- .npy -------------------------------------------------------------------------------------

def _arrays():
    rng = np.random.default_rng(2)
    return {
        "c_i16_3d": rng.integers(-500, 500, (5, 6, 7)).astype("<i2"),
        "be_u16_3d": rng.integers(0, 4000, (4, 8, 9)).astype(">u2"),
        "fortran_i32_3d": np.asfortranarray(rng.integers(-10**6, 10**6, (6, 5, 4)).astype("<i4")),
        "fortran_be_u32_4d": np.asfortranarray(
            rng.integers(0, 2**32 - 1, (3, 5, 4, 2), dtype=np.uint64).astype(">u4")),
        "u8_1d": rng.integers(0, 255, 100).astype("u1"),
        "i8_2d": rng.integers(-128, 127, (9, 11)).astype("i1"),
        "scalar": np.array(7, dtype="<i2"),
        "empty": np.zeros((0, 3), dtype="<i2"),
        "five_d": rng.integers(0, 9, (2, 2, 3, 4, 5)).astype("<u2"),
    }


@pytest.mark.parametrize("name", list(_arrays()))
def test_npy_roundtrip_byte_identical(name, tmp_path):
    arr = _arrays()[name]
    src = tmp_path / f"{name}.npy"
    np.save(src, arr)
    out = tmp_path / "out.npy"
    payload, _ = roundtrip(NPY, src, out)
    assert out.read_bytes() == src.read_bytes()
    back = np.load(out)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    if arr.ndim > 1:
        assert back.flags.f_contiguous == arr.flags.f_contiguous
        assert back.flags.c_contiguous == arr.flags.c_contiguous
    assert payload.meta["dtype"] == arr.dtype.str
    assert all(v.dtype.isnative and 2 <= v.ndim <= 4 for v in payload.volumes)


def test_npy_fortran_reaches_codec_in_storage_order(tmp_path):
    arr = np.asfortranarray(np.arange(24, dtype=np.int16).reshape(2, 3, 4))
    src = tmp_path / "f.npy"
    np.save(src, arr)
    vol = NPY.read(src).volumes[0]
    np.testing.assert_array_equal(vol, arr.T)  # (x, y, z) Fortran -> (z, y, x) C, no copy needed


@pytest.mark.parametrize("arr", [np.zeros(4, np.float32), np.zeros(3, np.int64), np.zeros(2, bool),
                                 np.zeros(2, dtype=[("a", "<i2"), ("b", "<i2")])],
                         ids=["float32", "int64", "bool", "structured"])
def test_npy_non_integer_dtypes_refused(arr, tmp_path):
    src = tmp_path / "x.npy"
    np.save(src, arr)
    with pytest.raises(UnsupportedInputError) as exc:
        NPY.read(src)
    assert str(src) in str(exc.value) and "\n" not in str(exc.value)


def test_npy_trailer_truncation_and_sniffing(tmp_path):
    arr = np.arange(60, dtype=np.uint16).reshape(3, 4, 5)
    src = tmp_path / "t.npy"
    np.save(src, arr)
    with open(src, "ab") as f:
        f.write(b"extra")
    out = tmp_path / "o.npy"
    roundtrip(NPY, src, out)
    assert out.read_bytes() == src.read_bytes()
    cut = tmp_path / "cut.npy"
    cut.write_bytes(src.read_bytes()[:-20])
    with pytest.raises(UnsupportedInputError, match="truncated"):
        NPY.read(cut)
    anon = tmp_path / "anon.bin"
    shutil.copy(src, anon)
    assert adapter_for_path(anon) is NPY


@pytest.mark.parametrize("edit", [(b"{", b"("), (b"{", b"["), (b"'descr'", b"'desc\n"),
                                  (b"}", b" ")], ids=["paren", "bracket", "newline", "unclosed"])
def test_npy_mangled_header_is_refused(tmp_path, edit):
    """A header dict numpy's tokenizer cannot finish (an unbalanced bracket raised
    tokenize.TokenError, not a MedzipError: found by fuzzing input files, stop 18)."""
    src = tmp_path / "m.npy"
    np.save(src, np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    old, new = edit
    src.write_bytes(src.read_bytes().replace(old, new, 1))
    with pytest.raises(UnsupportedInputError) as exc:
        NPY.read(src)
    assert str(src) in str(exc.value) and "\n" not in str(exc.value)


def test_npy_default_output_and_wrong_volume(tmp_path):
    src = tmp_path / "v.npy"
    np.save(src, np.ones((2, 3, 4), np.int16))
    payload = NPY.read(src)
    assert NPY.default_output(payload, tmp_path / "v.npy.mzp").name == "v.npy"
    assert NPY.default_output(payload, tmp_path / "v.mzp").name == "v.npy"
    assert NPY.default_output(payload, tmp_path / "v.bin").name == "v.bin.npy"
    with pytest.raises(CorruptStreamError):
        NPY.verify(Payload([np.zeros((2, 3, 4), np.int16)], payload.members, payload.meta))
    with pytest.raises(MedzipError):
        NPY.verify(Payload([np.ones((5,), np.int16)], payload.members, payload.meta))


def test_adapters_registered_and_describe():
    assert adapter_by_name("npy") is NPY and adapter_by_name("nifti") is NIFTI
    meta = NIFTI.read(Path(NIB_DATA) / "example4d.nii.gz").meta
    lines = NIFTI.describe(meta)
    assert any("NIfTI-1" in line for line in lines) and all("\n" not in line for line in lines)
    assert npy_mod.strip_archive_suffix(Path("a.nii.MZP")) == "a.nii"
