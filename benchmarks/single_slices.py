"""Single 2-D slices: medzip against the 2-D image codecs on one image at a time.

A PACS stores one DICOM instance per slice, and thick-slice scans are mostly coded from the
slice itself: there the 3-D context medzip was built for is missing and the comparison with
JPEG-XL, JPEG-LS and HTJ2K is 2-D against 2-D. Every ``.npy`` of ``--data`` (default: the shared
data's ``slices`` folder, genuine CT, MR and CR images from public DICOM test sets) is coded by
each codec of ``--codecs`` (``medzip bench``'s adapters, fallback as a user gets it), decoded
and compared; the table gives bits per pixel and medzip's ratio to the best other codec of the
same run (docs/BENCHMARKS.md "Single slices").

    python benchmarks/single_slices.py [--data DIR] [--codecs medzip-default,jpegxl-e7,...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from medzip.bench.codecs import select

SHARED = Path(__file__).resolve().parents[2] / "shared/data/slices"
DEFAULT_CODECS = "medzip-default,medzip-strong,jpegxl-e7,jpegxl-e9,jpegls,htj2k"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--codecs", default=DEFAULT_CODECS)
    args = ap.parse_args()
    codecs = [c for c in select(args.codecs) if c.unavailable() is None]
    ours = [c.name for c in codecs if c.family == "medzip"]
    print("| image | pixels | " + " | ".join(c.name for c in codecs)
          + f" | {ours[0]} / best other |")
    print("|---" * (len(codecs) + 3) + "|")
    ratios = []
    for path in sorted(args.data.glob("*.npy")):
        img = np.load(path)
        vol = img[None] if img.ndim == 2 else img
        bits = {}
        for codec in codecs:
            enc = codec.encode(vol)
            back = codec.decode(enc)
            if not (back.dtype == vol.dtype and np.array_equal(back.reshape(vol.shape), vol)):
                raise SystemExit(f"{codec.name}: round trip failed on {path.name}")
            bits[codec.name] = 8 * enc.nbytes / vol.size
        best_other = min(v for k, v in bits.items() if k not in ours)
        ratios.append(bits[ours[0]] / best_other)
        print(f"| {path.stem} | {'x'.join(map(str, vol.shape[1:]))} | "
              + " | ".join(f"{bits[c.name]:.3f}" for c in codecs) + f" | {ratios[-1]:.3f} |",
              flush=True)
    r = np.array(ratios)
    print(f"\n{ours[0]} / best other codec: median {np.median(r):.3f}, geometric mean "
          f"{np.exp(np.log(r).mean()):.3f}, best {r.min():.3f}, worst {r.max():.3f}, "
          f"ahead on {(r < 1).sum()} of {r.size}")


if __name__ == "__main__":
    main()
