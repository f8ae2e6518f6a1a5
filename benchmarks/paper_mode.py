#!/usr/bin/env python
"""medzip-paper (the published MedZip configuration) against JPEG-LS, JPEG 2000, ls3d and medzip.

Codes central crops of the held-out validation volumes (never seen in training) with every
codec, checks that each round trip is exact and prints bits/voxel, plus medzip-paper's encode
and decode speed. Sizes are whole outputs: medzip's complete .mzp stream (header included) and
the per-slice JPEG-LS / JPEG 2000 codestreams (imagecodecs, one thread).

    python benchmarks/paper_mode.py                    # 8x64x64 crops of the three volumes
    python benchmarks/paper_mode.py --crop 4 32 32     # quicker
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

import medzip
from medzip.bench.codecs import Jpeg2000, JpegLS
from medzip.errors import MedzipError

DATA = Path(os.environ.get("MEDZIP_BENCH_DATA", "/work/shared/data/volumes"))
VOLUMES = ["ct_head_invesalius_cranium", "mr_dwi_b0_dipy_S0_10slices", "mr_head_opendx_dxsamples"]


def central_crop(vol: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    vol = vol.reshape(-1, *vol.shape[-2:])
    starts = [max(0, (n - s) // 2) for n, s in zip(vol.shape, size)]
    return np.ascontiguousarray(vol[tuple(slice(a, a + s) for a, s in zip(starts, size))])


def medzip_run(vol, **kw):
    """(bits/voxel, encode s, decode s) or None when the model is not installed."""
    try:
        t0 = time.perf_counter()
        data = medzip.compress(vol, workers=1, **kw)
        t1 = time.perf_counter()
    except MedzipError as exc:
        print(f"    medzip {kw}: unavailable ({exc})")
        return None
    out = medzip.decompress(data, workers=1)
    t2 = time.perf_counter()
    assert np.array_equal(out, vol) and out.dtype == vol.dtype, f"medzip {kw} not lossless"
    return 8 * len(data) / vol.size, t1 - t0, t2 - t1


def image_run(codec, vol):
    enc = codec.encode(vol)
    out = codec.decode(enc)
    assert np.array_equal(out, vol), f"{codec.name} not lossless"
    return 8 * enc.nbytes / vol.size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--crop", type=int, nargs=3, default=(8, 64, 64), metavar=("Z", "Y", "X"))
    ap.add_argument("--volumes", nargs="*", default=VOLUMES)
    args = ap.parse_args(argv)
    cols = ["JPEG-LS", "JPEG 2000", "ls3d", "medzip L5", "medzip-paper", "paper enc vox/s",
            "paper dec vox/s"]
    rows = []
    for name in args.volumes:
        path = args.data / f"{name}.npy"
        if not path.exists():
            print(f"skipping {name}: {path} not found")
            continue
        vol = central_crop(np.load(path), tuple(args.crop))
        print(f"{name}: crop {vol.shape} {vol.dtype} values {vol.min()}..{vol.max()}", flush=True)
        paper = medzip_run(vol, model="medzip-paper")
        l5 = medzip_run(vol, level=5)
        r = [image_run(JpegLS(), vol), image_run(Jpeg2000(), vol),
             medzip_run(vol, model="ls3d")[0], l5 and l5[0], paper and paper[0],
             paper and vol.size / paper[1], paper and vol.size / paper[2]]
        rows.append((name, vol.shape, r))
    print(f"\nbits/voxel on central {'x'.join(map(str, args.crop))} crops (lower is better); "
          "every round trip verified exact; speeds: one process, workers=1, "
          f"{platform.machine()} with {os.cpu_count()} CPUs\n")
    print("| volume | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, shape, r in rows:
        cells = ["n/a" if v is None else f"{v:.0f}" if i >= 5 else f"{v:.3f}"
                 for i, v in enumerate(r)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
