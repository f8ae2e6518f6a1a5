"""Thick slices: how medzip's lead over 2-D codecs changes with the slice spacing of a CT.

The development set's only large genuine CT (the head CT) has thin slices; clinical chest and
abdomen CT is often reconstructed at 2.5-5 mm. This script keeps every S-th slice of a real
volume (thicker spacing) or averages S neighbouring slices (thick reconstruction, rounded to
the stored integers) and codes it at the given medzip levels and with JPEG-XL e7 / e9 per
slice, every stream decoded and compared (docs/MODELS.md "Thick slices").

Usage: python benchmarks/thick_slices.py [--data DIR] [--name NAME] [--factors S ...]
       [--levels L ...] [--no-e9]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import sys

import numpy as np

import medzip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fov_padding import jpegxl_bits  # noqa: E402  (a sibling script, not a package)

SHARED = Path(__file__).resolve().parents[2] / "shared/data/volumes"


def thick(vol: np.ndarray, factor: int, mode: str) -> np.ndarray:
    """Every ``factor``-th slice (``step``) or the mean of ``factor`` slices (``mean``)."""
    if mode == "step":
        return np.ascontiguousarray(vol[::factor])
    n = vol.shape[0] // factor * factor
    mean = vol[:n].astype(np.float64).reshape(-1, factor, *vol.shape[1:]).mean(axis=1)
    return np.floor(mean + 0.5).astype(vol.dtype)


def medzip_bits(arr: np.ndarray, level: int) -> int:
    data = medzip.compress(arr, level=level, workers=2)
    if not np.array_equal(medzip.decompress(data, workers=2), arr):
        raise SystemExit("round trip failed")
    return 8 * len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--name", default="ct_head_invesalius_cranium")
    ap.add_argument("--factors", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--levels", type=int, nargs="+", default=[5])
    ap.add_argument("--no-e9", action="store_true", help="skip JPEG-XL effort 9 (slow)")
    args = ap.parse_args()
    vol = np.load(args.data / f"{args.name}.npy")
    print("volume, slices: bits/voxel per medzip level; JPEG-XL e7 (e9); ratio of the first "
          "level to the best JPEG-XL")
    for factor in args.factors:
        for mode in ("step", "mean") if factor > 1 else ("step",):
            arr = thick(vol, factor, mode)
            n = arr.size
            ours = [medzip_bits(arr, lv) for lv in args.levels]
            peers = [jpegxl_bits(arr)] + ([] if args.no_e9 else [jpegxl_bits(arr, 9)])
            label = "as stored" if factor == 1 else f"{mode} {factor}"
            print(f"{args.name} {label} {arr.shape}: "
                  + ", ".join(f"-{lv} {b / n:.3f}" for lv, b in zip(args.levels, ours))
                  + f"; JPEG-XL e7 {peers[0] / n:.3f}"
                  + ("" if args.no_e9 else f" (e9 {peers[1] / n:.3f})")
                  + f"; ratio {ours[0] / min(peers):.3f}", flush=True)


if __name__ == "__main__":
    main()
