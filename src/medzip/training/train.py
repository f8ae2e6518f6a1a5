"""Train a row-LSTM model and export it as an integer model file (see intlstm.py).

Float pre-training, then quantisation-aware fine-tuning, fixed seeds, split by subject,
validation bits/voxel per epoch (a discretised-Laplace estimate of the coded size).
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..predictors.lstm import N_FEATURES
from ..predictors.models import MODEL_FORMAT
from .data import BASES, RowSet, load_volume
from .qlstm import QRowLSTM

LN2 = math.log(2.0)


def subject_key(path: Path) -> str:
    """Files of one subject/series share a key: the stem without trailing run/frame digits."""
    return re.sub(r"[_\-]?\d+$", "", path.name.split(".")[0])


def split_by_subject(paths: list[Path], val: list[str] | None, fraction: float):
    keys = sorted({subject_key(p) for p in paths})
    if val:
        val_keys = {subject_key(Path(v)) for v in val}
        unknown = val_keys - set(keys)
        if unknown:
            raise SystemExit(f"--val names no training input: {', '.join(sorted(unknown))}")
    else:
        ranked = sorted(keys, key=lambda k: hashlib.sha256(k.encode()).hexdigest())
        val_keys = set(ranked[: max(1, round(fraction * len(keys)))]) if len(keys) > 1 else set()
    train = [p for p in paths if subject_key(p) not in val_keys]
    valid = [p for p in paths if subject_key(p) in val_keys]
    return train, valid


def laplace_bits(e: torch.Tensor, mu: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """-log2 P(e) for a Laplace(mu, b) discretised to integers (numerically stable)."""
    lo, hi = e - mu - 0.5, e - mu + 0.5
    log_bin = torch.log(-torch.expm1(-1.0 / b))
    # each branch only sees arguments of its own sign, so no inf/nan leaks through torch.where
    right = math.log(0.5) - torch.clamp(lo, min=0) / b + log_bin
    left = math.log(0.5) + torch.clamp(hi, max=0) / b + log_bin
    tails = 0.5 * torch.exp(-torch.clamp(hi, min=0) / b) + 0.5 * torch.exp(torch.clamp(lo, max=0) / b)
    mid = torch.log(torch.clamp(1 - tails, min=1e-12))
    logp = torch.where(lo >= 0, right, torch.where(hi <= 0, left, mid))
    return -logp / LN2


def batch_bits(model: QRowLSTM, feats, e, u) -> torch.Tensor:
    y = model(feats)
    dmu = y[..., 0] * u
    if model.quantized:
        dmu = dmu + (torch.round(dmu) - dmu).detach()
    scale = torch.clamp(u * torch.exp2(y[..., 1]), min=0.15)
    return laplace_bits(e, dmu, scale)


def _tensors(rs: RowSet, idx):
    return (torch.from_numpy(rs.feats[idx].astype(np.float32) / 128.0),
            torch.from_numpy(rs.e[idx].astype(np.float32)),
            torch.from_numpy(rs.u[idx].astype(np.float32)))


def evaluate(model: QRowLSTM, sets: list[RowSet], batch: int = 256) -> tuple[float, float]:
    """(model bits/voxel, LS-only baseline bits/voxel) on the given rows."""
    tot = base = n = 0.0
    with torch.no_grad():
        for rs in sets:
            for s in range(0, len(rs.e), batch):
                f, e, u = _tensors(rs, slice(s, s + batch))
                tot += float(batch_bits(model, f, e, u).sum())
                base += float(laplace_bits(e, torch.zeros_like(e), u).sum())
                n += e.numel()
    return tot / max(n, 1), base / max(n, 1)


def train(paths: list[Path], out: Path, *, name: str, hidden: int = 16, epochs: int = 6,
          qat_epochs: int = 3, rows_per_volume: int = 3000, batch: int = 32, lr: float = 3e-3,
          seed: int = 0, val: list[str] | None = None, val_fraction: float = 0.25,
          threads: int = 2, device: str | None = None, command: str = "",
          base: str = "ls") -> dict:
    """``base``: what the network corrects, "ls" (per-volume least squares: medzip-lstm, level
    4) or "blend" (medzip-blend's experts: the default levels); see data.BASES."""
    rows = BASES[base]
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    train_paths, val_paths = split_by_subject(sorted(paths), val, val_fraction)
    print(f"train: {[p.name for p in train_paths]}\nvalid: {[p.name for p in val_paths]}")
    t0 = time.time()
    load = lambda ps: [r for r in (rows(p.name, load_volume(p), rows_per_volume, rng)  # noqa: E731
                                   for p in tqdm(ps, desc="features")) if r is not None]
    train_sets, val_sets = load(train_paths), load(val_paths)
    print(f"features ready in {time.time() - t0:.0f}s: "
          f"{sum(r.e.size for r in train_sets)} training voxels")
    model = QRowLSTM(N_FEATURES, hidden).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total_epochs = epochs + qat_epochs
    history = []
    for epoch in range(total_epochs):
        model.quantized = epoch >= epochs
        if epoch == epochs:  # fine-tune at a lower rate once quantisation is simulated
            for g in opt.param_groups:
                g["lr"] = lr / 4
        jobs = [(i, s) for i, rs in enumerate(train_sets)
                for s in range(0, len(rs.e), batch)]
        order = rng.permutation(len(jobs))
        bar = tqdm(order, desc=f"epoch {epoch + 1}/{total_epochs}{' qat' if model.quantized else ''}")
        run = 0.0
        for k, j in enumerate(bar):
            i, s = jobs[j]
            rs = train_sets[i]
            perm = rng.permutation(len(rs.e))[:batch] if s == 0 else slice(s, s + batch)
            f, e, u = (t.to(dev) for t in _tensors(rs, perm))
            loss = batch_bits(model, f, e, u).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            lv = float(loss.detach())
            run = 0.98 * run + 0.02 * lv if k else lv
            bar.set_postfix(bits=f"{run:.3f}")
        model_cpu = model.to("cpu")
        vb, base_bits = evaluate(model_cpu, val_sets) if val_sets else (float("nan"),) * 2
        model.to(dev)
        history.append({"epoch": epoch + 1, "quantized": model.quantized, "val_bits": vb,
                        "val_ls_only_bits": base_bits})
        print(f"epoch {epoch + 1}: validation {vb:.4f} bits/voxel ({base}-only {base_bits:.4f})")
    model = model.to("cpu")
    meta = {"format": MODEL_FORMAT, "kind": "row-lstm", "name": name, "hidden": hidden,
            "features": N_FEATURES, "bias_cancel": True, "seed": seed, "base": base,
            "train": [p.name for p in train_paths], "valid": [p.name for p in val_paths],
            "history": history, "command": command, "seconds": round(time.time() - t0)}
    arrays = model.export_arrays()
    arrays["meta_json"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    out.write_bytes(buf.getvalue())
    print(f"wrote {out} ({len(buf.getvalue())} bytes, SHA-256 {hashlib.sha256(buf.getvalue()).hexdigest()})")
    return meta
