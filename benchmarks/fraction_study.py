"""Would the prediction's fractional part pay as a context of the residual coder? A study for a
future coder version, not a codec run.

medzip's predictors round their fixed-point prediction to an integer before coding; the
residual tables are per scale bucket only. Where the residual's scale is about one grey level
(smooth, noise-free regions: CT air reconstructed smooth, cine MR) a prediction of 10.5 and one
of 10.0 want different distributions. Per image (first volume of a series): a causal float LS
predictor (ten in-slice taps, the previous slice's 3x3 block from the second slice on, a bias),
fitted on a random sample and rounded; a causal activity (mean |residual| of W, N, NW, NE) picks
one of 40 buckets; on the low-activity voxels (activity < LOW_ACTIVITY) the residual is coded by
adaptive counts (KT estimator, every count starts at 1/2) per bucket, per bucket x fraction class
(2 or 4 classes of |fraction|, residual sign folded when the fraction is negative) and per bucket
with the sign folding alone. Reported: the change in bits per voxel of the whole image (learning
cost included, since every context starts empty as in the coder).
Usage: python benchmarks/fraction_study.py [--data DIR] NAMES_OR_PATHS...
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numba
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared/data"
MAX_SAMPLE = 200_000
LOW_ACTIVITY = 3.0
N_BUCKETS = 40
Q = 64  # residuals beyond +-Q share an end symbol (rare where activity is low)
OFFS_SLICE = [(0, 0, -1), (0, 0, -2), (0, -1, 0), (0, -1, -1), (0, -1, 1), (0, -2, 0),
              (0, -1, -2), (0, -1, 2), (0, -2, -1), (0, -2, 1)]
OFFS_PREV = [(-1, dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


@numba.njit(cache=True)
def adaptive_bits(sym, ctx, n_ctx, n_sym):
    counts = np.full((n_ctx, n_sym), 0.5)
    total = np.full(n_ctx, 0.5 * n_sym)
    bits = 0.0
    for i in range(sym.size):
        c, s = ctx[i], sym[i]
        bits -= np.log2(counts[c, s] / total[c])
        counts[c, s] += 1.0
        total[c] += 1.0
    return bits


def load(name: str, data: Path) -> np.ndarray:
    path = Path(name)
    if not path.exists():
        hits = sorted(data.glob(f"*/{name}*.npy"))
        if not hits:
            raise SystemExit(f"not found: {name}")
        path = hits[0]
    vol = np.load(path)
    while vol.ndim > 3:
        vol = vol[0]
    return (vol if vol.ndim == 3 else vol[None]).astype(np.int64)


def study(vol: np.ndarray, rng) -> dict:
    vol = vol - vol.min()
    z0 = 1 if vol.shape[0] > 1 else 0
    offs = OFFS_SLICE + (OFFS_PREV if z0 else [])
    nz, ny, nx = vol.shape
    padded = np.pad(vol.astype(np.float64), ((1, 0), (2, 2), (2, 2)), mode="edge")
    cols = [padded[1 + dz + z0:1 + dz + nz, 2 + dy:2 + dy + ny, 2 + dx:2 + dx + nx].ravel()
            for dz, dy, dx in offs]
    a = np.stack(cols + [np.ones(cols[0].size)], axis=1)
    target = vol[z0:].astype(np.float64)
    b = target.ravel()
    sample = rng.choice(b.size, min(b.size, MAX_SAMPLE), replace=False)
    coef, *_ = np.linalg.lstsq(a[sample], b[sample], rcond=None)
    pred = np.clip(a @ coef, 0, vol.max())
    rounded = np.round(pred)
    frac = pred - rounded
    r = (b - rounded).astype(np.int64)
    mag = np.pad(np.abs(r).reshape(target.shape).astype(np.float64), ((0, 0), (1, 0), (1, 1)))
    act = (mag[:, 1:, :-2] + mag[:, :-1, 1:-1] + mag[:, :-1, :-2] + mag[:, :-1, 2:]).ravel() / 4
    bucket = np.clip(np.round(2 * np.log2(act + 0.25)) + 6, 0, N_BUCKETS - 1).astype(np.int64)
    low = act < LOW_ACTIVITY
    folded = np.where(frac < 0, -r, r)

    def bits(res, ctx, n_ctx):
        return adaptive_bits(np.clip(res[low], -Q, Q) + Q, ctx[low], n_ctx, 2 * Q + 1)

    base = bits(r, bucket, N_BUCKETS)
    out = {"voxels": b.size, "low share": low.mean(),
           "fold": (bits(folded, bucket, N_BUCKETS) - base) / b.size}
    for n_cls in (2, 4):
        cls = np.minimum((np.abs(frac) * 2 * n_cls).astype(np.int64), n_cls - 1)
        out[f"frac{n_cls}"] = (bits(folded, bucket * n_cls + cls, N_BUCKETS * n_cls) - base) / b.size
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("names", nargs="+")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print("| image | voxels | low-activity share | sign folding | 2 fraction classes "
          "| 4 fraction classes |")
    print("|---|---|---|---|---|---|")
    for name in args.names:
        res = study(load(name, args.data), rng)
        print(f"| {Path(name).stem} | {res['voxels']} | {res['low share']:.2f} | "
              f"{res['fold']:+.4f} | {res['frac2']:+.4f} | {res['frac4']:+.4f} |")


if __name__ == "__main__":
    main()
