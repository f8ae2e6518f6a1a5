"""``medzip train``: registered into the main CLI; imports PyTorch only when run."""
from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a row-LSTM model (needs the 'train' extra)")
    p.add_argument("volumes", nargs="+", type=Path, help=".npy or NIfTI volumes")
    p.add_argument("--out", required=True, type=Path, help="model file to write (.npz)")
    p.add_argument("--name", default="medzip-lstm-custom", help="model name stored in streams")
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--epochs", type=int, default=6, help="float epochs")
    p.add_argument("--qat-epochs", type=int, default=3, help="quantisation-aware epochs")
    p.add_argument("--rows-per-volume", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", nargs="*", default=None, help="validation files (by subject)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.set_defaults(func=run)


def run(args) -> int:
    try:
        from .train import train
    except ImportError as exc:
        print(f"medzip: training needs PyTorch (pip install 'medzip[train]'): {exc}", file=sys.stderr)
        return 1
    missing = [str(p) for p in args.volumes if not p.exists()]
    if missing:
        print(f"medzip: no such file: {missing[0]}", file=sys.stderr)
        return 1
    train(args.volumes, args.out, name=args.name, hidden=args.hidden, epochs=args.epochs,
          qat_epochs=args.qat_epochs, rows_per_volume=args.rows_per_volume, batch=args.batch,
          lr=args.lr, seed=args.seed, val=args.val, threads=args.threads, device=args.device,
          command="medzip train " + " ".join(sys.argv[2:]))
    return 0
