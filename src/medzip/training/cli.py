"""``medzip train``: registered into the main CLI; imports PyTorch only when run."""
from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a row-LSTM model (needs the 'train' extra)")
    p.add_argument("volumes", nargs="+", type=Path, help=".npy or NIfTI volumes")
    p.add_argument("--out", required=True, type=Path, help="model file to write (.npz)")
    p.add_argument("--name", default=None,
                   help="model name stored in streams (default medzip-lstm-custom; medzip-paper)")
    p.add_argument("--hidden", type=int, default=None, help="LSTM units (default 16; 128 --paper)")
    p.add_argument("--epochs", type=int, default=6, help="float epochs")
    p.add_argument("--qat-epochs", type=int, default=3, help="quantisation-aware epochs")
    p.add_argument("--rows-per-volume", type=int, default=3000)
    p.add_argument("--batch", type=int, default=None, help="default 32; 128 with --paper")
    p.add_argument("--lr", type=float, default=None, help="default 3e-3; 1e-4 with --paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", nargs="*", default=None, help="validation files (by subject)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--base", choices=("ls", "blend"), default="ls",
                   help="what the row LSTM corrects: per-volume least squares (level 4, "
                        "medzip-lstm) or medzip-blend's experts (levels 5-9, medzip-blend-lstm)")
    g = p.add_argument_group("--paper: the published MedZip configuration (Nagoor et al. 2020)")
    g.add_argument("--paper", action="store_true",
                   help="train the pyramid-neighbourhood LSTM of the paper (model kind 'paper')")
    g.add_argument("--steps", type=int, default=2500, help="float training batches")
    g.add_argument("--qat-steps", type=int, default=200, help="quantisation-aware batches")
    g.add_argument("--lr-start", type=float, default=1e-3,
                   help="float training decays from this rate to --lr (published 1e-4)")
    g.add_argument("--samples-per-volume", type=int, default=10000)
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
    command = "medzip train " + " ".join(sys.argv[2:])
    if args.paper:
        from .paper import train_paper
        train_paper(args.volumes, args.out, name=args.name or "medzip-paper",
                    hidden=args.hidden or 128, steps=args.steps, qat_steps=args.qat_steps,
                    batch=args.batch or 128, lr=args.lr or 1e-4, lr_start=args.lr_start,
                    samples_per_volume=args.samples_per_volume, seed=args.seed, val=args.val,
                    threads=args.threads, command=command)
        return 0
    train(args.volumes, args.out, name=args.name or "medzip-lstm-custom",
          hidden=args.hidden or 16, epochs=args.epochs, qat_epochs=args.qat_epochs,
          rows_per_volume=args.rows_per_volume, batch=args.batch or 32, lr=args.lr or 3e-3,
          seed=args.seed, val=args.val, threads=args.threads, device=args.device,
          command=command, base=args.base)
    return 0
