"""Rescaled integers: real scans stretched by a factor above 1 (as a converter filling the
16-bit range writes them), coded before and after the dense-part value-mapping rule
(volume_codec._missing_where_dense), beside the original scan and JPEG-XL e7 on the rescaled
array, all in the same run; every medzip stream is decoded and checked.

The rescaled arrays are synthetic *copies* of real scans: they show what the rule buys on such
data, not a compression figure for the scans themselves.
Usage: python benchmarks/rescaled.py [--data DIR] [NAME:FACTOR ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import medzip
from medzip import volume_codec
from medzip.bench.codecs import JpegXL

SHARED = Path(__file__).resolve().parents[2] / "shared/data/volumes"
DEFAULT = ("mr_epi_trio_axasc35_heudiconv:1.3", "mr_emri_small_pydicom:1.45",
           "ct_head_invesalius_cranium:1.5", "mr_pasl_prisma_0051_dicom3tools:1.2",
           "mr_epi_trio_axasc35_heudiconv:1.08")
MAX_SLICES = 16  # large volumes: a centred slab keeps the run short


def bits(blob: bytes, arr: np.ndarray) -> float:
    return 8 * len(blob) / arr.size


def coded(arr: np.ndarray) -> bytes:
    blob = medzip.compress(arr, workers=2)
    assert np.array_equal(medzip.decompress(blob, workers=2), arr)
    return blob


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("cases", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    rule = volume_codec._missing_where_dense
    jpegxl = JpegXL(7)
    print("| scan (real, rescaled here) | factor | original | rescaled, rule off | rescaled, "
          "rule on | JPEG-XL e7 (rescaled) | rule on / JPEG-XL |")
    print("|---|---|---|---|---|---|---|")
    for case in args.cases:
        name, factor = case.rsplit(":", 1)
        arr = np.load(args.data / f"{name}.npy")
        if arr.ndim == 3 and arr.shape[0] > MAX_SLICES:
            z0 = (arr.shape[0] - MAX_SLICES) // 2
            arr = np.ascontiguousarray(arr[z0:z0 + MAX_SLICES])
        scaled = np.round((arr.astype(np.int64) - arr.min()) * float(factor)).astype(np.uint16)
        try:
            volume_codec._missing_where_dense = lambda hist: False
            off = coded(scaled)
        finally:
            volume_codec._missing_where_dense = rule
        on = bits(coded(scaled), scaled)
        enc = jpegxl.encode(scaled)
        assert np.array_equal(jpegxl.decode(enc), scaled)
        jxl = 8 * enc.nbytes / scaled.size
        print(f"| {name} {'x'.join(map(str, arr.shape))} | {float(factor):.2f} | "
              f"{bits(coded(arr), arr):.3f} | {bits(off, scaled):.3f} | {on:.3f} | "
              f"{jxl:.3f} | {on / jxl:.3f} |", flush=True)


if __name__ == "__main__":
    main()
