"""Shared fixtures: real medical volumes, and helpers to take a ``.mzp`` stream apart.

Real data comes from ``<repo>/../shared/data`` when that folder exists (the project's data set,
never committed), and otherwise from files that pip-installed packages ship: nibabel's test
NIfTI files (stored integers via ``dataobj.get_unscaled()``) and pydicom's test DICOM files
(the raw PixelData words). Values are never rescaled. Axes follow the shared data set: (z, y, x)
for 3-D and (t, z, y, x) for 4-D; DICOM images are (frames, rows, columns).
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from medzip.container import compress_header, inflate_header

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDZIP_SHARED_DATA", REPO.parent / "shared" / "data"))
GOLDEN = Path(__file__).resolve().parent / "golden"

#: The classical predictor: the core tests pin it so they do not depend on a trained model file.
CORE_MODEL = "ls3d"


# -- real arrays ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RealArray:
    """A lazily loaded real array; ``id`` names it in test ids."""

    id: str
    load: Callable[[], np.ndarray]
    voxels: int = 0

    def __repr__(self) -> str:  # shows up in failure messages
        return f"RealArray({self.id})"


def _npy_voxels(path: Path) -> int:
    return int(np.prod(np.load(path, mmap_mode="r").shape))


def _shared_arrays(kind: str) -> list[RealArray]:
    folder = SHARED / kind
    if not folder.is_dir():
        return []
    return [RealArray(p.stem, (lambda p=p: np.load(p)), _npy_voxels(p))
            for p in sorted(folder.glob("*.npy"))]


def _nibabel_test_file(name: str) -> Path | None:
    try:
        import nibabel
    except ImportError:
        return None
    path = Path(nibabel.__file__).parent / "tests" / "data" / name
    return path if path.exists() else None


def _pydicom_test_file(name: str) -> Path | None:
    """A DICOM test file shipped inside the pydicom wheel (or already in its download cache).

    Deliberately not ``pydicom.data.get_testdata_file``: that downloads missing files.
    """
    try:
        import pydicom
    except ImportError:
        return None
    candidates = [Path(pydicom.__file__).parent / "data" / "test_files" / name,
                  Path.home() / ".pydicom" / "data" / name, SHARED / "originals" / name]
    return next((p for p in candidates if p.exists()), None)


def nifti_stored(path: Path) -> np.ndarray:
    """Stored integers of a NIfTI file, axes reversed to (t,) z, y, x; byte order kept."""
    import nibabel

    raw = np.asanyarray(nibabel.load(str(path)).dataobj.get_unscaled())
    return np.ascontiguousarray(raw.T)


def demo_volume() -> np.ndarray:
    """The bundled real DWI b0 sample (dipy) as stored: (z, y, x) int16."""
    from medzip.files import demo_sample_path
    from medzip.formats.base import adapter_for_path

    vol = adapter_for_path(demo_sample_path()).read(demo_sample_path()).volumes[0]
    return np.ascontiguousarray(vol.reshape(vol.shape[-3:]))


def golden_array(folder: str, name: str) -> np.ndarray:
    """The voxels of a golden stream (tests/golden/<folder>/<name>.mzp): real data of a kind
    the bundled sample lacks, kept losslessly in the stream itself."""
    import medzip

    return medzip.decompress((GOLDEN / folder / f"{name}.mzp").read_bytes())


def wide_heart() -> np.ndarray:
    """The blend3 golden crop of real cine MR: level 5 codes it with wide class sets (v3)."""
    return golden_array("blend3", "mr_heart_10x64x64_u1")


def long_dwi() -> np.ndarray:
    """The blend4 golden crop (real MR, zero-filled 2x): level 5 codes it with long sets (v4)."""
    return golden_array("blend4", "mr_dwi_b0_zerofilled_6x64x64_u2")


def deep_trio() -> np.ndarray:
    """The blend4deep golden crop (real MR, twice the slices from zero-filled kz): level 5
    codes it with deep class sets (v4, flag 32)."""
    return golden_array("blend4deep", "mr_trio_zfilled_z_32x64x64_u2")


def padded_ct() -> np.ndarray:
    """The blend5 golden crop (real head CT, pixels outside the inscribed circle at -2000 HU,
    air inside at -1024): level 5 codes it with a padding mask and that floor (v5, flag 64)."""
    return golden_array("blend5", "ct_head_fov_pad2000_32x64x64_i2")


def zero_padded_ct() -> np.ndarray:
    """The same real head CT zero-filled in HU outside the circle (0 HU there, air clipped at
    -1024 inside), as resampling or masking in HU leaves it: level 5 sends a padding mask with
    its value (blend version 7)."""
    ct = padded_ct()
    return np.where(ct == -2000, np.int16(0), ct)


EXAMPLE4D = _nibabel_test_file("example4d.nii.gz")


def example4d_masked_corner() -> np.ndarray:
    """Volume 0 of nibabel's real EPI, a corner of the head: the scanner's mask leaves a
    region at 0 in every slice. (8, 40, 48) int16."""
    return np.ascontiguousarray(nifti_stored(EXAMPLE4D)[0, 8:16, 0:40, 0:48])


def example4d_head_series() -> np.ndarray:
    """Both volumes of nibabel's real 4-D EPI, cropped to the head: (2, 8, 48, 64) int16."""
    arr = nifti_stored(EXAMPLE4D)
    assert arr.ndim == 4 and arr.shape[0] == 2
    return np.ascontiguousarray(arr[:, 8:16, 24:72, 32:96])


def dicom_words(path: Path) -> np.ndarray:
    """The raw PixelData words of an uncompressed single-sample DICOM file: (frames, rows, cols)."""
    import pydicom

    ds = pydicom.dcmread(str(path))
    tsyntax = ds.file_meta.TransferSyntaxUID
    assert not tsyntax.is_compressed and int(ds.SamplesPerPixel) == 1, path
    order = "<" if tsyntax.is_little_endian else ">"
    kind = "i" if int(ds.PixelRepresentation) else "u"
    dtype = np.dtype(f"{order}{kind}{int(ds.BitsAllocated) // 8}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    count = frames * int(ds.Rows) * int(ds.Columns)
    words = np.frombuffer(ds.PixelData, dtype, count=count)
    return words.reshape(frames, int(ds.Rows), int(ds.Columns)).copy()


_PIP_NIFTI = ["example4d.nii.gz", "anatomical.nii", "functional.nii"]
# emri_small.dcm is not in the pydicom wheel; it is used when a local copy exists.
# MR_small_bigendian (>i2 words) and rtdose (uint32 multi-frame) add dtypes the shared set lacks.
_PIP_DICOM = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "MR_small_bigendian.dcm",
              "rtdose.dcm"]


@lru_cache(maxsize=None)
def pip_arrays() -> tuple[RealArray, ...]:
    out = []
    for name in _PIP_NIFTI:
        path = _nibabel_test_file(name)
        if path is not None:
            out.append(RealArray("nibabel-" + name.split(".")[0], lambda p=path: nifti_stored(p)))
    for name in _PIP_DICOM:
        path = _pydicom_test_file(name)
        if path is not None:
            out.append(RealArray("pydicom-" + name.split(".")[0], lambda p=path: dicom_words(p)))
    return tuple(out)


SHARED_VOLUMES = _shared_arrays("volumes")
SHARED_SLICES = _shared_arrays("slices")
PIP_ARRAYS = list(pip_arrays())
#: What the round-trip tests run on: the shared volumes if present, else the pip-shipped arrays.
REAL_VOLUMES = SHARED_VOLUMES or PIP_ARRAYS


def _params(arrays: list[RealArray]) -> list:
    if not arrays:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no real data available"))]
    return [pytest.param(a, id=a.id) for a in arrays]


@pytest.fixture(params=_params(REAL_VOLUMES))
def shared_volumes(request) -> tuple[str, np.ndarray]:
    """One real volume per test instance: ``(name, array)``."""
    item: RealArray = request.param
    return item.id, item.load()


@pytest.fixture(params=_params(SHARED_SLICES))
def shared_slices(request) -> tuple[str, np.ndarray]:
    item: RealArray = request.param
    return item.id, item.load()


@pytest.fixture(params=_params(PIP_ARRAYS))
def pip_volumes(request) -> tuple[str, np.ndarray]:
    item: RealArray = request.param
    return item.id, item.load()


# -- taking a stream apart ------------------------------------------------------------------------
_PREFIX = struct.Struct("<8sHHI")


@dataclass
class Stream:
    """A ``.mzp`` byte string split into its parts (see docs/FORMAT.md)."""

    magic: bytes
    major: int
    minor: int
    header: dict
    body: bytes
    header_start: int  # offset of the JSON text
    body_start: int  # offset of the first section byte

    @classmethod
    def parse(cls, data: bytes) -> "Stream":
        magic, major, minor, hlen = _PREFIX.unpack_from(data)
        start = _PREFIX.size
        head = data[start:start + hlen]
        header = json.loads(inflate_header(head) if major >= 2 else head)  # 2.x: zstd'd
        return cls(magic, major, minor, header, data[start + hlen + 4:], start, start + hlen + 4)

    def build(self) -> bytes:
        """Serialise again, the way ContainerWriter does, with a fresh (valid) header CRC."""
        head = json.dumps(self.header, separators=(",", ":"), sort_keys=True).encode("utf-8")
        if self.major >= 2:
            head = compress_header(head)
        prefix = _PREFIX.pack(self.magic, self.major, self.minor, len(head)) + head
        return prefix + struct.pack("<I", zlib.crc32(prefix) & 0xFFFFFFFF) + self.body

    def section(self, ref: dict) -> bytes:
        return self.body[ref["offset"]:ref["offset"] + ref["length"]]


#: Volume-entry keys each format minor version added: an encoder-output ALARM test compares a
#: golden stream of an older minor with today's output after dropping what came later.
VOLUME_KEYS_ADDED = {(1, 1): ("digest",)}


def comparable_header(header: dict, version: tuple[int, int]) -> dict:
    """``header`` without the writer string and without keys newer than ``version``."""
    later = {k for v, keys in VOLUME_KEYS_ADDED.items() if v > tuple(version) for k in keys}
    out = {k: v for k, v in header.items() if k != "writer"}
    out["volumes"] = [{k: v for k, v in vh.items() if k not in later}
                      for vh in header.get("volumes", [])]
    return out


def recrc_header(data: bytes) -> bytes:
    """Recompute the header CRC of ``data`` in place (everything else untouched)."""
    hlen = _PREFIX.unpack_from(data)[3]
    end = _PREFIX.size + hlen
    return data[:end] + struct.pack("<I", zlib.crc32(data[:end]) & 0xFFFFFFFF) + data[end + 4:]


def flip_bit(data: bytes, pos: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[pos] ^= 1 << bit
    return bytes(b)


def classic_version(pred) -> int:
    """The version ``pred``'s stream has without the fixed-rule experts (version 6 is any
    layout of versions 2-5 plus their byte) and with its mask bit-packed (version 8 is any
    layout of versions 2-7 with the mask by rows)."""
    from medzip.predictors import blend

    return pred.variant(experts=pred.experts & ~blend.FIXED_EXPERTS, mask_by_rows=False).version
