"""Peak memory of file compression and decompression, as a user runs them.

Two inputs: the largest CT of the shared data set as ``.npy``, and a 133-file DICOM series made
from it (one Explicit VR Little Endian file per slice; real voxels, generated headers). Each
operation runs in a fresh process through ``medzip.files`` (what the CLI calls); peak memory
is the proportional set size (PSS) of that process and its workers, sampled every 20 ms.

Compare two versions of medzip in one run by pointing ``--src`` at their ``src`` folders:

    python benchmarks/memory.py --src src --src /path/to/old/checkout/src
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from speed import TREE_PSS  # the PSS sampler source, shared with speed.py

SHARED = Path(__file__).resolve().parents[2] / "shared/data/volumes"
CT = "derived_ct_brain_atlas_totalsegmentator"
SERIES_FILES = 133

_CHILD = TREE_PSS + r"""
import json, sys, threading, time

args = json.loads(sys.argv[1])
from medzip import files
files.demo_sample_path()  # imports done before the baseline
base = tree_pss_mb(os.getpid())
peak = [base]
def sample():
    while True:
        peak[0] = max(peak[0], tree_pss_mb(os.getpid()))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
t0 = time.perf_counter()
if args["op"] == "compress":
    files.compress_file(args["src"], args["dst"], workers=args["threads"], force=True)
else:
    files.decompress_file(args["src"], args["dst"], workers=args["threads"], force=True)
seconds = time.perf_counter() - t0
time.sleep(0.05)
print(json.dumps({"peak_mib": peak[0], "baseline_mib": base, "seconds": seconds}))
"""


def write_series(folder: Path, vol: np.ndarray) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series = generate_uid(entropy_srcs=["study"]), generate_uid(entropy_srcs=["series"])
    for z, plane in enumerate(vol):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(z)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta, ds.preamble = meta, b"\0" * 128
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Memory^Benchmark", "MZP"
        ds.InstanceNumber = z + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, float(z)]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.ascontiguousarray(plane, "<i2").tobytes()
        ds.save_as(folder / f"IM{z:04d}.dcm", enforce_file_format=True)


def measure(src_dir: str, op: str, src: Path, dst: Path, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": src_dir}
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(
        {"op": op, "src": str(src), "dst": str(dst), "threads": threads})],
        env=env, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"{op} {src} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", action="append", required=True,
                    help="a medzip src folder to measure (repeat to compare versions)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    vol = np.load(SHARED / f"{CT}.npy")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "ct.npy", vol)
        write_series(tmp / "series", vol[:SERIES_FILES].astype(np.int16))
        inputs = {f"{CT}.npy {vol.shape}": tmp / "ct.npy",
                  f"DICOM series, {SERIES_FILES} files": tmp / "series"}
        print(f"| input | medzip src | op | peak PSS MiB | above baseline MiB | seconds |")
        print("|---|---|---|---|---|---|")
        for label, path in inputs.items():
            for k, src_dir in enumerate(args.src):
                arc, back = tmp / f"a{k}.mzp", tmp / f"back{k}{path.suffix}"
                for op, a, b in (("compress", path, arc), ("decompress", arc, back)):
                    r = measure(src_dir, op, a, b, args.threads)
                    print(f"| {label} | {src_dir} | {op} | {r['peak_mib']:.0f} | "
                          f"{r['peak_mib'] - r['baseline_mib']:.0f} | {r['seconds']:.1f} |",
                          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
