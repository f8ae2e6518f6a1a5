"""Slice interpolation (k-space zero-filled along z): what deeper previous-slice taps would buy.

3-D MR sequences are often reconstructed with more slices than were acquired (Siemens "slice
resolution" below 100 % with interpolation, GE "ZIP2"): k-space is zero-filled along z and
every column of voxels along z is band-limited. medzip-blend's sets reach at most two slices
back (3x3 there), so the long class sets (version 4, in-slice reach) cannot use that. This
study makes such volumes from real scans (benchmarks/interpolated.py's reconstruction, applied
along z) and measures a least-squares proxy: one global set per tap neighbourhood, fitted on
one half of a random sample of voxels with four slices above them, mean |error| on the other
half. It is a study, not a coder measurement: no format has deeper sets yet (MODELS.md
"Slice interpolation").

Usage: python benchmarks/slice_interpolation.py [--data DIR] [--factors F ...] [NAMES...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from medzip.predictors.blend import OFFS_LONG, OFFS_WIDE
from medzip.predictors.ls3d import OFFS_3D

sys.path.insert(0, str(Path(__file__).resolve().parent))
from interpolated import zero_filled  # noqa: E402  (a sibling script, not a package)

SHARED = Path(__file__).resolve().parents[2] / "shared/data/volumes"
DEFAULT = ["ct_head_invesalius_cranium", "mr_epi_trio_axasc35_heudiconv",
           "mr_head_opendx_dxsamples", "derived_mr_t1_mean_pydeface"]
# the wide sets plus the 5x5 ring two slices back and 3x3 three and four slices back
DEEP = OFFS_WIDE + [(-2, dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                    if max(abs(dy), abs(dx)) == 2] \
    + [(dz, dy, dx) for dz in (-3, -4) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
SETS = {"15-tap": OFFS_3D, "wide": OFFS_WIDE, "long": OFFS_LONG, "wide+deep": DEEP}
REACH = 4  # slices, rows and columns of zero border the sets need


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
    args = ap.parse_args()
    print("volume, slices x factor, mode: LS mean |error| per tap set; wide+deep / wide")
    for name in args.names:
        vol = np.load(args.data / f"{name}.npy")
        vol = (vol[0] if vol.ndim == 4 else vol).astype(np.float64)
        for factor in args.factors:
            for mode in ("magnitude", "complex") if factor > 1 else ("as stored",):
                arr = zero_filled_z(vol - vol.min(), factor, mode) if factor > 1 else vol
                err = {k: ls_proxy(arr, offs) for k, offs in SETS.items()}
                print(f"{name}, x{factor:g}, {mode}: "
                      + ", ".join(f"{k} {v:.3f}" for k, v in err.items())
                      + f"; {err['wide+deep'] / err['wide']:.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
