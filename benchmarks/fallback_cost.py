"""What the zstd/xz fallback costs and gains on the shared dev set: bits/voxel and encode time
of medzip checkouts compared in one run (each imported in its own process from ``CHECKOUT/src``).

Runs alternate between the checkouts (A B A B ...) and the fastest of ``--repeat`` runs is
reported, so machine load hits both alike.

    python benchmarks/fallback_cost.py --src /tmp/medzip-base --src . --level 1 --repeat 2 \\
        ct_head_invesalius_cranium mr_dwi_dipy_small_64D
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared/data/volumes"

_CHILD = r"""
import json, sys, time
import numpy as np
import medzip
arr = np.load(sys.argv[1])
t0 = time.perf_counter()
data = medzip.compress(arr, level=int(sys.argv[2]) or None, workers=1)
dt = time.perf_counter() - t0
codec = medzip.inspect(data)["volumes"][0]["codec"]
print(json.dumps({"bytes": len(data), "seconds": dt, "voxels": int(arr.size), "codec": codec}))
"""


def run(src: str, path: Path, level: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(src).resolve() / "src"))
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(level)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", action="append", required=True, help="checkout (repeatable)")
    ap.add_argument("--level", type=int, default=0, help="0: medzip's default level")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("volumes", nargs="*", help="names in shared/data/volumes (default: all)")
    args = ap.parse_args()
    paths = ([SHARED / f"{v}.npy" for v in args.volumes] if args.volumes
             else sorted(SHARED.glob("*.npy")))
    print(f"level {args.level or 'default'}, fastest of {args.repeat}, workers=1\n")
    print("| volume | voxels | " + " | ".join(f"{s} bpv | {s} s | {s} codec" for s in args.src)
          + " | time ratio |")
    print("|---|---|" + "---|---|---|" * len(args.src) + "---|")
    totals = {s: [0, 0.0] for s in args.src}
    voxels = 0
    for path in paths:
        best: dict = {}
        for _ in range(args.repeat):
            for src in args.src:
                r = run(src, path, args.level)
                if src not in best or r["seconds"] < best[src]["seconds"]:
                    best[src] = r
        n = best[args.src[0]]["voxels"]
        voxels += n
        cols = []
        for s in args.src:
            totals[s][0] += best[s]["bytes"]
            totals[s][1] += best[s]["seconds"]
            cols.append(f"{8 * best[s]['bytes'] / n:.3f} | {best[s]['seconds']:.2f} | "
                        f"{best[s]['codec']}")
        ratio = best[args.src[-1]]["seconds"] / best[args.src[0]]["seconds"]
        print(f"| {path.stem} | {n:,} | " + " | ".join(cols) + f" | {ratio:.3f} |", flush=True)
    cols = [f"{8 * totals[s][0] / voxels:.3f} | {totals[s][1]:.1f} | " for s in args.src]
    ratio = totals[args.src[-1]][1] / totals[args.src[0]][1]
    print("| **all** | " + f"{voxels:,} | " + " | ".join(cols) + f" | {ratio:.3f} |")


if __name__ == "__main__":
    main()
