"""Is there structure left that a learned causal model could find? A same-scan test.

For each volume a small network is trained on one half of the scan and scored on the other half,
beside medzip's default on the same array (same run, round trip verified). The network sees a
wide causal neighbourhood (97 voxels: 3 rows above and 3 voxels left in the slice, 7 x 7 in the
previous slice, 5 x 5 two slices back) relative to the mean of W, N and the voxel above, plus the
intensity, and outputs a mixture of three logistics censored at the volume's floor and ceiling,
as medzip's coder is; the score is its ideal code length in bits/voxel. Training on the scan
itself is an advantage no shipped model has (it has seen this scanner, this subject, this noise),
so where even this network does not beat medzip by much, no generalising model will.

Halves: slices z < split and z >= split (of the voxels with 2 slices and 3 pixels of context
inside the volume), each way round; a network trained on *all* voxels and scored on them
memorises (on a 10 x 128 x 128 MR, 128 units score 5.78 on their own training voxels and 6.81
on the other half), which is why the score is always taken on the half it did not see.

Needs the training extras (PyTorch, CPU): pip install -e ".[train]". Runs on the CPU threads
torch picks (~1-2 minutes per half on 2 cores for a 3-D MR volume).
Usage: python benchmarks/learnability.py [--data DIR] [--hidden 16] [--iters 3000]
                                         [--crop Z0:Z1] NAMES...
4-D series use their first volume; --crop keeps slices Z0..Z1-1 (large CT).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import medzip

SHARED = Path(__file__).resolve().parents[2] / "shared/data/volumes"
ROWS, PLANES = 3, 2  # in-plane reach and slices back
MIXTURE = 3
BATCH = 8192


def causal_offsets():
    inplane = [(0, dy, dx) for dy in range(-ROWS, 1) for dx in range(-ROWS, ROWS + 1)
               if dy < 0 or dx < 0]
    prev = [(-1, dy, dx) for dy in range(-ROWS, ROWS + 1) for dx in range(-ROWS, ROWS + 1)]
    prev2 = [(-2, dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
    return inplane + prev + prev2


def load(path: Path, crop: str | None) -> np.ndarray:
    a = np.load(path)
    if a.ndim == 4:  # medzip's .npy series are (t, z, y, x) or (z, y, x, t)
        a = a[0] if a.shape[0] < a.shape[-1] else a[..., 0]
    if crop:
        z0, z1 = (int(v) for v in crop.split(":"))
        a = a[z0:z1]
    return np.ascontiguousarray(a)


def samples(a: np.ndarray):
    """Features, targets (both relative to a local reference and scaled) and slice indices."""
    v = a.astype(np.int64) - int(a.min())
    vmax = max(1, int(v.max()))
    z_, y_, x_ = v.shape
    r = ROWS
    core = (slice(PLANES, None), slice(r, y_ - r), slice(r, x_ - r))

    def shifted(dz, dy, dx):
        return v[PLANES + dz:z_ + dz, r + dy:y_ - r + dy, r + dx:x_ - r + dx].ravel()

    target = v[core].ravel()
    ref = (shifted(0, 0, -1) + shifted(0, -1, 0) + shifted(-1, 0, 0)) / 3.0
    scale = float(np.std(target - ref)) + 1.0
    feats = np.empty((target.size, len(causal_offsets()) + 1), np.float32)
    for k, off in enumerate(causal_offsets()):
        feats[:, k] = (shifted(*off) - ref) / scale
    feats[:, -1] = (ref - vmax / 2) / (vmax / 2)
    zs = np.repeat(np.arange(PLANES, z_), (y_ - 2 * r) * (x_ - 2 * r))
    return (feats, ((target - ref) / scale).astype(np.float32), zs,
            (-ref / scale).astype(np.float32), ((vmax - ref) / scale).astype(np.float32),
            0.5 / scale)


def code_lengths(net, x, y, lo, hi, half):
    """Bits of each voxel under the censored, discretised mixture of logistics."""
    out = net(x)
    mu, log_s = out[:, :MIXTURE], out[:, MIXTURE:2 * MIXTURE].clamp(-9, 5)
    log_w = torch.log_softmax(out[:, 2 * MIXTURE:], 1)
    inv = torch.exp(-log_s)
    up = torch.sigmoid((y[:, None] + half - mu) * inv)
    down = torch.sigmoid((y[:, None] - half - mu) * inv)
    up = torch.where((y >= hi - 1e-6)[:, None], torch.ones_like(up), up)  # ceiling: all above
    down = torch.where((y <= lo + 1e-6)[:, None], torch.zeros_like(down), down)  # floor
    p = (up - down).clamp_min(1e-12)
    return -torch.logsumexp(log_w + torch.log(p), 1) / np.log(2)


def held_out_bits(data, train, test, hidden: int, iters: int, seed: int = 0) -> float:
    feats, y, _, lo, hi, half = data
    torch.manual_seed(seed)
    x_t, y_t = torch.from_numpy(feats), torch.from_numpy(y)
    lo_t, hi_t = torch.from_numpy(lo), torch.from_numpy(hi)
    net = torch.nn.Sequential(torch.nn.Linear(feats.shape[1], hidden), torch.nn.SiLU(),
                              torch.nn.Linear(hidden, hidden), torch.nn.SiLU(),
                              torch.nn.Linear(hidden, 3 * MIXTURE))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    train_t = torch.from_numpy(train)
    for it in range(iters):
        idx = train_t[torch.randint(0, train.size, (BATCH,))]
        loss = code_lengths(net, x_t[idx], y_t[idx], lo_t[idx], hi_t[idx], half).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it == 2 * iters // 3:
            for g in opt.param_groups:
                g["lr"] = 5e-4
    with torch.no_grad():
        bits = [code_lengths(net, x_t[i], y_t[i], lo_t[i], hi_t[i], half)
                for i in torch.from_numpy(test).split(65536)]
    return float(torch.cat(bits).mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--crop", default=None)
    args = ap.parse_args(argv)
    print("| volume | shape | medzip -5 (whole array) | network, other half: first / second |")
    print("|---|---|---|---|")
    for name in args.names:
        t0 = time.perf_counter()
        a = load(args.data / f"{name}.npy", args.crop)
        blob = medzip.compress(a, level=5)
        if not np.array_equal(medzip.decompress(blob), a):
            raise SystemExit(f"{name}: medzip round trip failed")
        data = samples(a)
        zs = data[2]
        split = PLANES + (a.shape[0] - PLANES) // 2
        first, second = np.nonzero(zs < split)[0], np.nonzero(zs >= split)[0]
        b_first = held_out_bits(data, second, first, args.hidden, args.iters)
        b_second = held_out_bits(data, first, second, args.hidden, args.iters)
        print(f"| {name} | {'x'.join(map(str, a.shape))} | {8 * len(blob) / a.size:.3f} | "
              f"{b_first:.3f} / {b_second:.3f} |  <!-- {time.perf_counter() - t0:.0f} s -->",
              flush=True)


if __name__ == "__main__":
    main()
