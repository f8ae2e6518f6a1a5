"""What each part of the default model buys, in real coded bits/voxel (not estimates).

Variants, all through the real coder on the genuine 3-D volumes of ../shared/data/volumes:
  ls3d            per-volume least squares + bias canceller (level 1)
  lstm-no-bias    the row LSTM without the online bias canceller
  lstm            the default model (level 5)
Usage: python benchmarks/ablation.py [--data DIR] [--model NAME|FILE]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from medzip.predictors import lstm as lstm_mod
from medzip.predictors.ls3d import LS3DPredictor
from medzip.training.data import mapped_volume
from medzip.volume_codec import chunk_bounds, chunk_geometry, code_chunk

GENUINE_3D = ["ct_head_invesalius_cranium", "mr_epi_trio_axasc35_heudiconv",
              "mr_pasl_prisma_0051_dicom3tools", "mr_pasl_prisma_0001_dicomnifti",
              "mr_dwi_b0_dipy_S0_10slices", "mr_epi_dipy_aniso_vox", "mr_emri_small_pydicom",
              "mr_head_opendx_dxsamples", "mr_epi_fslpy_example_func",
              "mr_heart_8bit_16frame_amijs"]


def coded_bits(pred, vol4) -> int:
    bits = 0
    vmax = int(vol4.max())
    for t in range(vol4.shape[0]):
        for z0, nz in chunk_bounds(vol4.shape[1], None):
            part = vol4[t, z0:z0 + nz]
            bits += 32 * code_chunk(pred, chunk_geometry(pred, part.shape), vmax, chunk=part).size
    return bits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/volumes")
    ap.add_argument("--model", default="medzip-lstm")
    args = ap.parse_args()
    model = lstm_mod.load_model(args.model)
    print(f"model {model.name} sha256 {model.sha256[:12]}")
    print(f"{'volume':36s} {'ls3d':>8s} {'lstm-no-bias':>13s} {'lstm':>8s}  lstm/ls3d")
    for name in GENUINE_3D:
        path = args.data / f"{name}.npy"
        if not path.exists():
            continue
        vol4 = mapped_volume(np.load(path))
        vol4 = vol4.astype(np.int32 if vol4.max() < (1 << 30) else np.int64)
        ls = LS3DPredictor.fit(vol4)
        nobias = lstm_mod.LSTMPredictor(model, ls)
        nobias.bias_cancel = False
        full = lstm_mod.LSTMPredictor(model, ls)
        row = [coded_bits(p, vol4) / vol4.size for p in (ls, nobias, full)]
        print(f"{name:36s} {row[0]:8.4f} {row[1]:13.4f} {row[2]:8.4f}  {row[2] / row[0]:.4f}", flush=True)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"[{time.time() - t0:.0f} s]")
