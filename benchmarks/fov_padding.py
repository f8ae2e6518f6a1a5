"""CT padded outside its field of view: what version 5's floor and version 7's padding value buy.

Many CT scanners store the pixels outside the circular field of view with a padding value
below anything measured (-2000 or -3024 HU, DICOM's Pixel Padding Value) and clip air inside
at -1024 HU. medzip's padding mask (blend version 2) leaves those pixels out of the coded
symbols, but censoring at the volume's floor (the padding value) then no longer touches the
clipped air, and the predictors see a step of ~1000 HU at the edge of the field of view.
Version 5 sends the lowest value inside the field of view: coded voxels are censored there and
the masked ones read as that value while coding (docs/FORMAT.md 7.9). CT resampled or masked
in HU is often zero-filled there instead (0 HU, *above* the air): version 7 sends a mask of the
pixels that hold one value above the floor in every slice, and that value; they read as the
floor while coding (FORMAT.md 7.11).

This script sets the pixels outside the inscribed circle of a real CT to a padding value and
codes it at the default level with and without the floor and the padding value (everything
else the same encoder, every stream decoded and compared), next to JPEG-XL e7 on the same
slices.

Usage: python benchmarks/fov_padding.py [--data DIR] [--name NAME] [--steps S ...]
       [--pads P ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import medzip
from medzip.predictors import blend

SHARED = Path(__file__).resolve().parents[2] / "shared/data/volumes"


def padded(ct: np.ndarray, pad_value: int | None) -> np.ndarray:
    """``ct`` with the pixels outside the inscribed circle of each slice set to ``pad_value``
    (None: as stored)."""
    out = ct.copy()
    if pad_value is not None:
        _, y_, x_ = ct.shape
        yy, xx = np.mgrid[0:y_, 0:x_]
        outside = (yy - y_ / 2 + 0.5) ** 2 + (xx - x_ / 2 + 0.5) ** 2 > (min(y_, x_) / 2) ** 2
        out[:, outside] = pad_value
    return out


def jpegxl_bits(arr: np.ndarray, effort: int = 7) -> int:
    """JPEG-XL lossless per slice, values shifted to start at 0 (thick_slices.py uses it too)."""
    import imagecodecs
    u = (arr.astype(np.int64) - int(arr.min())).astype(np.uint16)
    bits = max(1, int(u.max()).bit_length())
    return 8 * sum(len(imagecodecs.jpegxl_encode(s, lossless=True, effort=effort,
                                                 bitspersample=bits)) for s in u)


def medzip_bits(arr: np.ndarray, floor: bool) -> tuple[int, int]:
    saved = blend.fit_fov_floor, blend.fit_padding_value
    if not floor:  # the stream without version 5's floor and version 7's padding value
        blend.fit_fov_floor = lambda vol4, mask: 0
        blend.fit_padding_value = lambda vol4: None
    try:
        data = medzip.compress(arr, fallback=False, workers=2)
    finally:
        blend.fit_fov_floor, blend.fit_padding_value = saved
    if not np.array_equal(medzip.decompress(data, workers=2), arr):
        raise SystemExit("round trip failed")
    return 8 * len(data), medzip.inspect(data)["volumes"][0].get("model_version", 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--name", default="ct_head_invesalius_cranium")
    ap.add_argument("--steps", type=int, nargs="+", default=[2],
                    help="keep every S-th slice (2: about 2.5 mm slices from the head CT)")
    ap.add_argument("--pads", nargs="+", default=["none", "-1024", "0", "-2000", "-3024"],
                    help="padding values in HU outside the circle ('none': as stored)")
    args = ap.parse_args()
    ct = np.load(args.data / f"{args.name}.npy")
    print("slices, padding: bits/voxel medzip -5 without floor / padding value -> with (stream "
          "versions), "
          "change; JPEG-XL e7; ratio medzip (with) / JPEG-XL")
    for step in args.steps:
        base = np.ascontiguousarray(ct[::step])
        for pad in args.pads:
            arr = padded(base, None if pad == "none" else int(pad))
            n = arr.size
            off, v_off = medzip_bits(arr, False)
            on, v_on = medzip_bits(arr, True)
            jxl = jpegxl_bits(arr)
            print(f"{args.name}[::{step}] {arr.shape}, pad {pad}: {off / n:.4f} -> {on / n:.4f}"
                  f" (v{v_off} -> v{v_on}), {100 * (on / off - 1):+.2f} %; JPEG-XL e7 "
                  f"{jxl / n:.4f}; ratio {on / jxl:.3f}", flush=True)


if __name__ == "__main__":
    main()
