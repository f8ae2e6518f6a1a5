"""Does a volume have pixel-parity structure (in-plane 2x interpolation), and what would
parity-specific least squares buy? A study for a future predictor version, not a codec run.

Per volume (first volume of a series; at most the 40 central slices): the 15-tap causal 3-D
least-squares predictor of ls3d, fitted once globally and once per parity class (x parity,
y parity, both), on a random sample of at most 400,000 voxels (a strided sample would alias
with the parity), scored on every voxel. Reported: mean |residual| per fit and the saving it
implies for a Laplacian residual, log2(global / parity-specific mean |residual|) bits per voxel.
That proxy overstates what the blend would gain (its classified LS and error weighting already
take part of it) but ranks volumes reliably: with no parity structure all columns agree.
Usage: python benchmarks/parity_study.py [--data DIR] [NAMES...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medzip.predictors.ls3d import OFFS_3D

SHARED = Path(__file__).resolve().parents[2] / "shared/data/volumes"
MAX_SLICES = 40
MAX_SAMPLE = 400_000
# a fit scored on the voxels it was fitted on flatters small volumes: below this many voxels
# per parity class (100 per coefficient) a volume is reported as too small, not studied
MIN_CLASS_VOXELS = 100 * (len(OFFS_3D) + 1)
MODES = {"x": lambda yy, xx: xx % 2, "y": lambda yy, xx: yy % 2,
         "xy": lambda yy, xx: 2 * (yy % 2) + xx % 2}


def design(vol: np.ndarray):
    """Columns of the causal taps and the targets for z >= 1, 2 <= y < Y-1, 2 <= x < X-2."""
    z_, y_, x_ = vol.shape
    cols = [vol[1 + dz:z_ + dz, 2 + dy:y_ - 1 + dy, 2 + dx:x_ - 2 + dx].ravel()
            for dz, dy, dx in OFFS_3D]
    target = vol[1:, 2:y_ - 1, 2:x_ - 2]
    a = np.stack(cols + [np.ones(target.size)], axis=1)
    yy, xx = np.meshgrid(np.arange(2, y_ - 1), np.arange(2, x_ - 2), indexing="ij")
    return a, target.ravel(), target.shape, yy, xx


def fit(a, b, rows):
    coef, *_ = np.linalg.lstsq(a[rows], b[rows], rcond=None)
    return coef


def study(vol: np.ndarray, rng) -> dict:
    a, b, shape, yy, xx = design(vol.astype(np.float64))
    sample = rng.choice(b.size, min(b.size, MAX_SAMPLE), replace=False)
    out = {"global": np.abs(a @ fit(a, b, sample) - b).mean()}
    for mode, par in MODES.items():
        cls = np.broadcast_to(par(yy, xx)[None], shape).ravel()
        err = np.empty(b.size)
        for c in np.unique(cls):
            rows = cls == c
            err[rows] = np.abs(a[rows] @ fit(a, b, sample[rows[sample]]) - b[rows])
        out[mode] = err.mean()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    names = args.names or sorted(p.stem for p in args.data.glob("*.npy")
                                 if not p.stem.startswith("derived_"))
    rng = np.random.default_rng(0)
    print("| volume | shape studied | mean \\|r\\| global | x parity | y parity | both | "
          "best saving (bits/voxel, Laplacian proxy) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        vol = np.load(args.data / f"{name}.npy")
        vol = vol[0] if vol.ndim == 4 else vol
        if vol.shape[0] > MAX_SLICES:
            z0 = (vol.shape[0] - MAX_SLICES) // 2
            vol = vol[z0:z0 + MAX_SLICES]
        studied = (vol.shape[0] - 1) * (vol.shape[1] - 3) * (vol.shape[2] - 4)
        if min(vol.shape) < 2 or studied < 4 * MIN_CLASS_VOXELS:
            print(f"| {name} | {'x'.join(map(str, vol.shape))} | too small to judge | | | | |")
            continue
        r = study(vol, rng)
        best = min(r["x"], r["y"], r["xy"])
        print(f"| {name} | {'x'.join(map(str, vol.shape))} | {r['global']:.3f} | {r['x']:.3f} | "
              f"{r['y']:.3f} | {r['xy']:.3f} | {np.log2(r['global'] / best):+.3f} |", flush=True)


if __name__ == "__main__":
    main()
