"""Train the published MedZip configuration (``medzip train --paper``) and export it.

Examples are the exact int8 pyramid sequences the coder feeds the network (gathered by the
coder's own kernel, predictors.paper.gather_sequences, from chunks padded as the coder pads
them), at random voxels of each volume; targets are the voxel values normalised to [-1, 1] by
the volume's range. The loss is the paper's MAE + (1 - |Pearson r|), Adam, batch 128. The
published learning rate 1e-4 needs far more steps than a CPU budget of minutes (1500 steps at
1e-4 left the mean error at ~10% of the range), so float training starts at ``lr_start`` (1e-3)
and decays (cosine) to the published 1e-4, which quantisation-aware tuning keeps. Float
training uses torch's fused LSTM (fast); the weights then move into the quantisation-aware cell
(training/qlstm.py) for fine-tuning, and are exported in its integer layout with
``kind: "paper"`` meta. Validation reports the integer model's MAE in grey levels,
run through the coder's kernel.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..predictors import paper as P
from ..predictors.models import MODEL_FORMAT, ModelFile
from ..scheduling import PaddedGeometry
from ..volume_codec import chunk_bounds
from .data import load_volume, mapped_volume
from .qlstm import QRowLSTM
from .train import split_by_subject

BACKGROUND_KEEP = 0.1  # fraction kept of examples whose inputs and target are all background


def volume_examples(arr: np.ndarray, n: int, rng: np.random.Generator):
    """(sequences int8 (n, 191), targets float32 (n,), range) from random voxels of ``arr``."""
    vol4 = mapped_volume(arr)
    vmax = int(vol4.max())
    if vmax == 0:
        return None
    ts = range(vol4.shape[0])
    if len(ts) > 4:  # 4-D series: a few time points are plenty
        ts = sorted(rng.choice(vol4.shape[0], 4, replace=False))
    chunks = [(t, z0, nz) for t in ts for z0, nz in chunk_bounds(vol4.shape[1], None)]
    seqs, tgts = [], []
    for t, z0, nz in chunks:
        part = vol4[t, z0:z0 + nz]
        geom = PaddedGeometry(*part.shape, pad=P.PaperPredictor.pad, zpad=P.PaperPredictor.zpad)
        padded = np.zeros(geom.shape, np.int64).ravel()
        geom.embed(part, padded)
        flat, _ = geom.raster_indices()
        take = rng.choice(flat, min(flat.size, 2 * (-(-n // len(chunks)))), replace=False)
        s = np.empty((take.size, P.SEQ_LEN), np.int64)
        P.gather_sequences(padded, take, P.source_offsets(geom), 0, vmax, s)
        v = padded[take]
        keep = (v > 0) | (s > -128).any(axis=1) | (rng.random(take.size) < BACKGROUND_KEEP)
        seqs.append(s[keep].astype(np.int8))
        tgts.append((2.0 * v[keep] / vmax - 1.0).astype(np.float32))
    seqs, tgts = np.concatenate(seqs), np.concatenate(tgts)
    pick = rng.permutation(len(tgts))[:n]
    return seqs[pick], tgts[pick], vmax


def paper_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MAE + (1 - |Pearson correlation|), on normalised values (Nagoor et al. 2020)."""
    pc, tc = pred - pred.mean(), target - target.mean()
    r = (pc * tc).sum() / torch.sqrt((pc * pc).sum() * (tc * tc).sum() + 1e-12)
    return (pred - target).abs().mean() + 1.0 - r.abs()


class PaperLSTM(QRowLSTM):
    """QRowLSTM (n_in=1, n_out=1) returning the head on the last step only."""

    def __init__(self, hidden: int = 128):
        super().__init__(1, hidden, 1)

    def load_float(self, lstm: nn.LSTM, head: nn.Linear) -> None:
        """Take the weights of torch's LSTM (same gate order i, f, g, o) and linear head."""
        with torch.no_grad():
            self.w.copy_(torch.cat([lstm.weight_ih_l0, lstm.weight_hh_l0], dim=1))
            self.b.copy_(lstm.bias_ih_l0 + lstm.bias_hh_l0)
            self.head_w.copy_(head.weight)
            self.head_b.copy_(head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, 1) -> (B,)
        return self.head(self.hidden_states(x, every_step=False))[:, 0]


def _batches(seqs, tgts, batch, steps, rng):
    for _ in range(steps):
        idx = rng.integers(0, len(tgts), batch)
        yield (torch.from_numpy(seqs[idx].astype(np.float32)[..., None] / 128.0),
               torch.from_numpy(tgts[idx]))


def float_mae(fn, val: list) -> dict:
    """Mean |error| in grey levels of a torch model on the validation sequences."""
    out = {}
    with torch.no_grad():
        for name, seqs, tgts, vmax in val:
            x = torch.from_numpy(seqs.astype(np.float32)[..., None] / 128.0)
            pred = torch.cat([fn(x[i:i + 512]) for i in range(0, len(x), 512)])
            err = pred - torch.from_numpy(tgts)
            out[name] = round(float(err.abs().mean()) * vmax / 2, 3)
    return out


def integer_mae(model_file: ModelFile, val: list) -> dict:
    """Mean |error| in grey levels of the exported integer network, per validation volume."""
    pred = P.PaperPredictor(model_file, lo=0, hi=1)
    net = pred.net
    h = np.empty(net.hidden, np.int16)
    c = np.empty(net.hidden, np.int64)
    acc = np.empty(4 * net.hidden, np.int64)
    out = {}
    for name, seqs, tgts, vmax in val:
        err = 0
        for s, t in zip(seqs.astype(np.int64), tgts):
            P.run_sequence(s, pred._wx, pred._wh, net.b, net.shift, net.sig, net.tanh_g,
                           net.tanh_c, h, c, acc)
            mu = P.head_to_value(h, pred._hw, int(net.head_b[0]), net.head_shift, 0, vmax, vmax)
            err += abs(mu - round((t + 1.0) * vmax / 2))
        out[name] = round(err / max(len(tgts), 1), 3)
    return out


def train_paper(paths: list[Path], out: Path, *, name: str = "medzip-paper", hidden: int = 128,
                steps: int = 2500, qat_steps: int = 200, batch: int = 128, lr: float = 1e-4,
                lr_start: float = 1e-3,
                samples_per_volume: int = 8000, val_samples: int = 1000, seed: int = 0,
                val: list[str] | None = None, threads: int = 2, command: str = "") -> dict:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    train_paths, val_paths = split_by_subject(sorted(paths), val, 0.25)
    print(f"train: {[p.name for p in train_paths]}\nvalid: {[p.name for p in val_paths]}")
    t0 = time.time()
    parts = [volume_examples(load_volume(p), samples_per_volume, rng)
             for p in tqdm(train_paths, desc="examples")]
    seqs = np.concatenate([p[0] for p in parts if p is not None])
    tgts = np.concatenate([p[1] for p in parts if p is not None])
    val_sets = [(p.name,) + e for p in val_paths
                if (e := volume_examples(load_volume(p), val_samples, rng)) is not None]
    print(f"{len(tgts)} training sequences in {time.time() - t0:.0f}s")

    lstm, head = nn.LSTM(1, hidden, batch_first=True), nn.Linear(hidden, 1)
    with torch.no_grad():  # forget gate open at start, as QRowLSTM
        lstm.bias_ih_l0[hidden:2 * hidden] = 1.0
        lstm.bias_hh_l0.zero_()
        head.weight.zero_()
        head.bias.zero_()
    params = list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=lr_start)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=lr)
    history = []

    def fit(step_fn, n_steps, label, sched=None):
        bar = tqdm(_batches(seqs, tgts, batch, n_steps, rng), total=n_steps, desc=label)
        run = None
        for k, (x, y) in enumerate(bar):
            loss = paper_loss(step_fn(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], 1.0)
            opt.step()
            if sched is not None:
                sched.step()
            lv = float(loss.detach())
            run = lv if run is None else 0.98 * run + 0.02 * lv
            if (k + 1) % 100 == 0 or k + 1 == n_steps:
                history.append({"stage": label, "step": k + 1, "loss": round(run, 5)})
            bar.set_postfix(loss=f"{run:.4f}")

    float_model = lambda x: head(lstm(x)[0][:, -1])[:, 0]  # noqa: E731
    fit(float_model, steps, "float", sched)
    history.append({"stage": "float", "valid_mae_grey_levels": float_mae(float_model, val_sets)})
    print(f"validation MAE (float model, grey levels): {history[-1]['valid_mae_grey_levels']}")
    model = PaperLSTM(hidden)
    model.load_float(lstm, head)
    model.quantized = True
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    fit(model, qat_steps, "qat")

    meta = {"format": MODEL_FORMAT, "kind": "paper", "name": name, "hidden": hidden,
            "seq_len": P.SEQ_LEN, "slope": P.SLOPE, "lag": P.LAG, "seed": seed,
            "loss": "MAE + (1 - |pearson|)", "lr": lr, "lr_start": lr_start, "batch": batch,
            "steps": steps, "qat_steps": qat_steps, "samples_per_volume": samples_per_volume,
            "train": [p.name for p in train_paths], "valid": [p.name for p in val_paths],
            "history": history, "command": command, "seconds": round(time.time() - t0)}
    arrays = model.export_arrays()
    blob = _model_bytes(arrays, meta)
    meta["valid_mae_grey_levels"] = integer_mae(ModelFile(blob, str(out)), val_sets)
    print(f"validation MAE (integer model, grey levels): {meta['valid_mae_grey_levels']}")
    meta["seconds"] = round(time.time() - t0)
    blob = _model_bytes(arrays, meta)
    out.write_bytes(blob)
    print(f"wrote {out} ({len(blob)} bytes, SHA-256 {hashlib.sha256(blob).hexdigest()}) "
          f"in {meta['seconds']}s")
    return meta


def _model_bytes(arrays: dict, meta: dict) -> bytes:
    text = json.dumps(meta, sort_keys=True).encode()
    arrays = dict(arrays, meta_json=np.frombuffer(text, np.uint8))
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()
