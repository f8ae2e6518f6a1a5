"""What each modelling step buys, in real coded bits/voxel (not estimates).

Variants, all through the real coder (chunking as medzip.compress, parameter bytes counted):
  ls3d         per-volume least squares + bias canceller (level 1)
  +censor      the same, coded with the distribution censored at the volume's floor/ceiling
  +classes     classified least squares alone (one LS set per causal class), censored
  +blend       blend of the five experts by local error (medzip-blend without the LSTM)
  +lstm        medzip-lstm (trained on LS residuals) on top of the blend: medzip-blend v1's default
  +blend-lstm  the network trained on the blend's residuals (medzip-blend-lstm) instead
  +previous    4-D series: the previous volume as context where the fit says it pays (blend v2);
               3-D volumes: = +blend-lstm
  +mask        the padding / field-of-view mask where it pays (blend v2; with its value above
               the floor, v7)
  +wide        the 41-tap class sets where they pay (blend v3)
  +in-slice    the 36-tap in-slice set where the default uses it (large volumes without wide
               sets; slice-poor ones with them; since stop 16 wherever it pays on a sample;
               blend v4 flag 16)
  +fixed       the fixed-rule in-slice experts and their error window where the default uses
               them (slice-poor volumes, blend v6): today's default (level 5)
  lstm-0.1     the previous default (row LSTM on global LS, uncensored), for reference
Volumes: every .npy in --data (default ../shared/data/volumes), or the names given.
Usage: python benchmarks/ablation.py [--data DIR] [--model NAME|FILE] [--blend-model NAME|FILE]
                                    [NAMES...]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from medzip.predictors import lstm as lstm_mod
from medzip.predictors.models import load_model
from medzip.predictors.blend import FIXED_EXPERTS, BlendPredictor
from medzip.predictors.ls3d import LS3DPredictor
from medzip.training.data import mapped_volume
from medzip.volume_codec import chunk_geometry, chunk_plan, code_chunk

# validation volumes of the shipped medzip-lstm (docs/MODELS.md): never seen in training
HELD_OUT = {"ct_head_invesalius_cranium", "mr_dwi_b0_dipy_S0_10slices", "mr_head_opendx_dxsamples"}
COLUMNS = ["ls3d", "+censor", "+classes", "+blend", "+lstm", "+blend-lstm", "+previous", "+mask",
           "+wide", "+in-slice", "+fixed", "lstm-0.1"]
DEFAULT = COLUMNS.index("+fixed")


def coded_bits(pred, vol4) -> int:
    """Bits of the stream medzip.compress writes with ``pred`` (chunking, previous-volume
    context and parameter bytes as there; container and header not counted)."""
    bits = 8 * len(pred.params())
    vmax = int(vol4.max())
    temporal = getattr(pred, "temporal", False)
    for t, z0, nz in chunk_plan(vol4.shape, None, temporal):
        part = vol4[t, z0:z0 + nz]
        previous = vol4[t - 1, z0:z0 + nz] if temporal and t else None
        bits += 32 * code_chunk(pred, chunk_geometry(pred, part.shape), vmax, chunk=part,
                                previous=previous).size
    return bits


def variants(vol4, model, blend_model):
    ls = LS3DPredictor.fit(vol4)
    censored = LS3DPredictor(ls.coef3, ls.coef2)
    censored.censored = True  # instance flag: the engine asks the coder to censor
    default = BlendPredictor.fit(vol4, ls, lstm=blend_model)  # each option where it pays
    classic = default.variant(experts=default.experts & ~FIXED_EXPERTS)  # versions 1-5
    # the in-slice set stays with the long sets (it comes with them)
    no_slice = classic if default.long else classic.variant(in_slice=False)
    narrow = no_slice.variant(wide=False)
    blend = narrow.variant(lstm=None, temporal=False, known=None)
    return [ls, censored, blend.variant(experts=0b00010), blend, blend.variant(lstm=model),
            blend.variant(lstm=blend_model), narrow.variant(known=None), narrow, no_slice,
            classic, default, lstm_mod.LSTMPredictor(model, ls)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/volumes")
    ap.add_argument("--model", default="medzip-lstm")
    ap.add_argument("--blend-model", default="medzip-blend-lstm")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    model, blend_model = load_model(args.model), load_model(args.blend_model)
    print(f"+lstm: {model.name} {model.sha256[:12]}; +blend-lstm: {blend_model.name} "
          f"{blend_model.sha256[:12]}  (* = not seen in training)")
    print("| volume | " + " | ".join(COLUMNS) + " | default / ls3d |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    names = args.names or sorted(p.stem for p in args.data.glob("*.npy"))
    for name in names:
        vol4 = mapped_volume(np.load(args.data / f"{name}.npy"))
        vol4 = vol4.astype(np.int32 if vol4.max() < (1 << 30) else np.int64)
        row = [coded_bits(p, vol4) / vol4.size for p in variants(vol4, model, blend_model)]
        star = " *" if name in HELD_OUT else ""
        print(f"| {name}{star} | " + " | ".join(f"{b:.4f}" for b in row)
              + f" | {row[DEFAULT] / row[0]:.3f} |", flush=True)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"[{time.time() - t0:.0f} s]")
