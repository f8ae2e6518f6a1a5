"""Slice interpolation (k-space zero-filled along z): what deeper previous-slice taps buy.

3-D MR sequences are often reconstructed with more slices than were acquired (Siemens "slice
resolution" below 100 % with interpolation, GE "ZIP2"): k-space is zero-filled along z and
every column of voxels along z is band-limited. medzip-blend's wide and long sets reach at
most two slices back (3x3 there); the deep class sets (version 4, flag 32) reach four. This
script makes such volumes from real scans (benchmarks/interpolated.py's reconstruction, applied
along z) and measures (1) a least-squares proxy: one global set per tap neighbourhood, fitted on
one half of a random sample of voxels with four slices above them, mean |error| on the other
half, and (2) the real coder at the default level without and with the deep (and long) sets,
every stream decoded and compared, next to JPEG-XL e7 (MODELS.md "Slice interpolation").

Usage: python benchmarks/slice_interpolation.py [--data DIR] [--factors F ...] [--no-coder]
       [NAMES...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from medzip.predictors.blend import OFFS_DEEP, OFFS_LONG, OFFS_WIDE
from medzip.predictors.ls3d import OFFS_3D

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interpolated import _jpegxl_bits, _medzip_bits, zero_filled  # noqa: E402  (a sibling
# script, not a package)

SHARED = Path(__file__).resolve().parents[2] / "shared/data/volumes"
DEFAULT = ["ct_head_invesalius_cranium", "mr_epi_trio_axasc35_heudiconv",
           "mr_head_opendx_dxsamples", "derived_mr_t1_mean_pydeface"]
SETS = {"15-tap": OFFS_3D, "wide": OFFS_WIDE, "long": OFFS_LONG, "deep": OFFS_DEEP}
REACH = 4  # slices, rows and columns of zero border the sets need
MAX_SLICES = 40  # of each scan, before interpolation (keeps the coder runs short)


def zero_filled_z(vol: np.ndarray, factor: float, mode: str) -> np.ndarray:
    """``vol`` reconstructed with ``factor`` times as many slices from zero-filled kz."""
    return zero_filled(vol.transpose(1, 0, 2), mode, factors=(factor, 1.0)).transpose(1, 0, 2)


def ls_proxy(vol: np.ndarray, offsets, samples: int = 200_000, seed: int = 0) -> float:
    """Mean |error| of one least-squares set over ``offsets`` (+ bias), fitted on half of a
    random sample of voxels with REACH slices above them and scored on the other half."""
    rng = np.random.default_rng(seed)
    z_, y_, x_ = vol.shape
    p = REACH
    pad = np.zeros((z_, y_ + 2 * p, x_ + 2 * p))
    pad[:, p:-p, p:-p] = vol
    z = rng.integers(p, z_, samples)
    y = rng.integers(p, y_ + p, samples)
    x = rng.integers(p, x_ + p, samples)
    a = np.stack([pad[z + dz, y + dy, x + dx] for dz, dy, dx in offsets] + [np.ones(z.size)], 1)
    b = pad[z, y, x]
    half = z.size // 2
    coef = np.linalg.lstsq(a[:half], b[:half], rcond=None)[0]
    return float(np.abs(a[half:] @ coef - b[half:]).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=DEFAULT)
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--factors", nargs="+", type=float, default=[1.0, 1.25, 1.5, 2.0])
    ap.add_argument("--no-coder", action="store_true", help="the least-squares proxy only")
    args = ap.parse_args()
    print("volume, slices x factor, mode: LS mean |error| per tap set; deep / wide | medzip "
          "bits/voxel without deep and long sets -> with (stream version), JPEG-XL e7, ratio")
    for name in args.names:
        vol = np.load(args.data / f"{name}.npy")
        vol = (vol[0] if vol.ndim == 4 else vol)[:MAX_SLICES].astype(np.float64)
        vol -= vol.min()
        for factor in args.factors:
            for mode in ("magnitude", "complex") if factor > 1 else ("as stored",):
                arr = zero_filled_z(vol, factor, mode) if factor > 1 else vol
                err = {k: ls_proxy(arr, offs) for k, offs in SETS.items()}
                line = (f"{name}, x{factor:g}, {mode}, {arr.shape}: "
                        + ", ".join(f"{k} {v:.3f}" for k, v in err.items())
                        + f"; {err['deep'] / err['wide']:.3f}")
                if not args.no_coder:
                    ints = np.clip(np.round(arr), 0, np.iinfo(np.uint16).max).astype(np.uint16)
                    n = ints.size
                    off, _ = _medzip_bits(ints, False)
                    on, version = _medzip_bits(ints, True)
                    jxl = _jpegxl_bits(ints)
                    line += (f" | {off / n:.3f} -> {on / n:.3f} (v{version}, {on / off - 1:+.1%}),"
                             f" JPEG-XL {jxl / n:.3f}, {off / jxl:.3f} -> {on / jxl:.3f}")
                print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
