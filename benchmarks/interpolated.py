"""Interpolated MR: real scans reconstructed with zero-filled k-space, coded with and without
medzip-blend's long class sets (version 4), next to JPEG-XL.

MR scanners commonly reconstruct on a finer grid than they acquire by zero-filling k-space (the
"interpolation" / "ZIP" option; DWI and EPI are often resampled 2x in-plane), which makes every
slice band-limited: a long linear filter then predicts it far better than a short one. None of
the development scans is interpolated, so this script makes such scans from real ones, 2x
in-plane (``--factors``: other grids, e.g. ``1.333x1`` for 192 phase-encoding lines stored as
256 rows, the common one-direction case), two ways:

* ``magnitude``: the stored magnitude slice's spectrum zero-filled (exactly band-limited);
* ``complex``: the magnitude given a smooth phase (a random low-order field per slice) and
  complex Gaussian noise of the scan's background level at the acquired resolution, then
  zero-filled and the magnitude taken, as a scanner does: the background becomes Rician noise
  that is correlated but not band-limited, so the gain there is smaller.

``--windows fermi hamming`` also applies a k-space filter before the zero-filling (GE's default
Fermi filter, r = 0.9 kmax, width 0.05; a Hamming window as for EPI and "raw filters"): with
``--factors 1x1`` the scan is filtered only, smoother but not band-limited.

Every stream is decoded and compared. The figures are in docs/MODELS.md ("Interpolated MR").
Usage: python benchmarks/interpolated.py [--data DIR] [--factors FYxFX ...]
       [--windows none|fermi|hamming ...] [NAMES...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import medzip
from medzip.predictors import blend

SHARED = Path(__file__).resolve().parents[2] / "shared/data/volumes"
DEFAULT = ["mr_dwi_b0_dipy_S0_10slices", "mr_emri_small_pydicom", "mr_epi_trio_axasc35_heudiconv",
           "mr_pasl_prisma_0001_dicomnifti", "mr_head_opendx_dxsamples"]


def zero_filled(vol: np.ndarray, mode: str = "magnitude", seed: int = 0,
                factors: tuple[float, float] = (2.0, 2.0), window: str = "none") -> np.ndarray:
    """Each (y, x) slice of ``vol`` reconstructed from zero-filled k-space on a grid
    ``factors`` (y, x) times finer, its acquired k-space multiplied by ``window`` first."""
    rng = np.random.default_rng(seed)
    sigma = _background_sigma(vol)
    out = []
    for s in np.asarray(vol, np.float64):
        y, x = s.shape
        img = s.astype(complex)
        if mode == "complex":
            yy, xx = np.mgrid[-1:1:y * 1j, -1:1:x * 1j]
            a = rng.normal(0, 1.0, 6)
            phase = a[0] + a[1] * xx + a[2] * yy + a[3] * xx * yy + a[4] * xx ** 2 + a[5] * yy ** 2
            img = s * np.exp(1j * phase) + sigma * (rng.normal(size=s.shape)
                                                    + 1j * rng.normal(size=s.shape))
        k = np.fft.fftshift(np.fft.fft2(img)) * _k_window(window, y, x)
        big_y, big_x = round(factors[0] * y), round(factors[1] * x)
        big = np.zeros((big_y, big_x), complex)
        oy, ox = (big_y - y) // 2, (big_x - x) // 2
        big[oy:oy + y, ox:ox + x] = k
        out.append(np.abs(np.fft.ifft2(np.fft.ifftshift(big))) * (big_y * big_x / (y * x)))
    top = np.iinfo(np.uint16).max
    return np.clip(np.round(np.array(out)), 0, top).astype(np.uint16)


def _k_window(window: str, y: int, x: int):
    """A k-space filter over the centred spectrum of a y x x slice."""
    if window == "none":
        return 1.0
    if window == "hamming":
        return np.outer(np.hamming(y), np.hamming(x))
    if window == "fermi":
        r = np.hypot(*np.meshgrid(np.linspace(-1, 1, y), np.linspace(-1, 1, x), indexing="ij"))
        return 1 / (1 + np.exp((r - 0.9) / 0.05))
    raise SystemExit(f"unknown window {window}")


def _background_sigma(vol: np.ndarray) -> float:
    """Noise level from the darkest tenth of the scan (Rayleigh mean = sigma * 1.25)."""
    v = np.asarray(vol, np.float64)
    dark = v[v <= np.percentile(v, 10)]
    return float(max(dark.mean() / 1.25, 1.0))


def _jpegxl_bits(arr: np.ndarray) -> float:
    import imagecodecs
    return 8 * sum(len(imagecodecs.jpegxl_encode(s, lossless=True, effort=7)) for s in arr)


def _medzip_bits(arr: np.ndarray, long_sets: bool) -> tuple[float, int]:
    saved = blend.LONG_TRY_PERCENT
    blend.LONG_TRY_PERCENT = saved if long_sets else 0  # 0: the long sets are never tried
    try:
        data = medzip.compress(arr, fallback=False)
    finally:
        blend.LONG_TRY_PERCENT = saved
    if not np.array_equal(medzip.decompress(data), arr):
        raise SystemExit("round trip failed")
    return 8 * len(data), medzip.inspect(data)["volumes"][0].get("model_version", 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=DEFAULT)
    ap.add_argument("--data", type=Path, default=SHARED)
    ap.add_argument("--factors", nargs="+", default=["2x2"],
                    help="finer grid per direction, FYxFX (default 2x2)")
    ap.add_argument("--windows", nargs="+", default=["none"],
                    choices=["none", "fermi", "hamming"], help="k-space filters (default none)")
    args = ap.parse_args()
    grids = [tuple(float(f) for f in g.lower().split("x")) for g in args.factors]
    print("volume, mode, shape: bits/voxel medzip without long sets -> with (stream version); "
          "JPEG-XL e7; ratio to JPEG-XL")
    for name in args.names:
        vol = np.load(args.data / f"{name}.npy")
        vol = vol[0] if vol.ndim == 4 else vol
        if vol.shape[1] > 128:  # keep the 2x volume small
            vol = vol[:, ::2, ::2]
        vol = vol.astype(np.int64) - int(vol.min())
        for grid in grids:
            for window in args.windows:
                for mode in ("magnitude", "complex"):
                    arr = zero_filled(vol, mode, factors=grid, window=window)
                    n = arr.size
                    off, _ = _medzip_bits(arr, False)
                    on, version = _medzip_bits(arr, True)
                    jxl = _jpegxl_bits(arr)
                    print(f"{name}, {grid[0]:g}x{grid[1]:g}, {window}, {mode}, {arr.shape}: "
                          f"{off / n:.3f} -> {on / n:.3f} (v{version}, {on / off - 1:+.1%}); "
                          f"JPEG-XL {jxl / n:.3f}; {off / jxl:.3f} -> {on / jxl:.3f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
