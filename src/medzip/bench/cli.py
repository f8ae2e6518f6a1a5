"""medzip bench: medzip side by side with the codecs people use instead.

Registered into the main CLI by ``register(subparsers)``; also runnable on its own as
``python -m medzip.bench.cli FILES...``.
"""
from __future__ import annotations

import argparse
import sys

EPILOG = """\
codecs: 'default' (medzip default/fast/strong and every standard codec), 'all' (adds
medzip-paper and ppmd-h6-oneshot), or names, comma separated; --list-codecs shows them.
Every result is checked to decode to the exact input; a codec that fails is reported as
failed and not counted. Field meanings: docs/BENCHMARKS.md.
exit status: 0 done; 1 an input could not be read or a medzip codec failed its round trip;
2 usage error.
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILES",
                   help="inputs medzip reads (.npy, NIfTI, DICOM file or folder, ...); "
                   "every volume in each is measured")
    p.add_argument("--codecs", default="default",
                   help="comma-separated codec names, or 'default' / 'all' (default: default)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="runs per codec and volume; the best time is kept (default 1)")
    p.add_argument("--json", metavar="OUT", help="write every result and the summary as JSON")
    p.add_argument("--csv", metavar="OUT", help="write one row per volume and codec as CSV")
    p.add_argument("--plot", metavar="OUT.png",
                   help="PNG: bits/voxel against decode speed, one point per codec")
    p.add_argument("--memory", default="auto", choices=["auto", "rss-hwm", "tracemalloc", "none"],
                   help="peak-memory method (default auto: rss-hwm on Linux, else tracemalloc)")
    p.add_argument("--details", action="store_true", help="also print one row per volume and codec")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-codecs", action="store_true", help="list codecs and whether they can run")


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="compare medzip with standard lossless codecs",
                              description=__doc__.splitlines()[0], epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def _list_codecs(console) -> int:
    from rich.table import Table

    from .codecs import all_codecs

    t = Table(title="codecs")
    for col in ("name", "in default", "family", "what", "available"):
        t.add_column(col, overflow="fold")
    for c in all_codecs().values():
        reason = c.unavailable()
        t.add_row(c.name, "yes" if c.default else "no", c.family, c.label,
                  "yes" if reason is None else f"no: {reason}")
    console.print(t)
    return 0


def run(args) -> int:
    from rich.console import Console

    from medzip.errors import MedzipError

    from . import report
    from .codecs import select
    from .runner import load_volumes, memory_method, run_bench

    console = Console(width=None if sys.stdout.isatty() else 160)
    err = Console(stderr=True)
    if args.list_codecs:
        return _list_codecs(console)
    if not args.files:
        err.print("medzip bench: no input files (see --help)")
        return 2
    try:
        codecs = select(args.codecs)
    except KeyError as exc:
        err.print(f"medzip bench: {exc.args[0]}")
        return 2
    if not codecs or args.repeat < 1:
        err.print("medzip bench: need at least one codec and --repeat >= 1")
        return 2
    if args.plot:
        report.require_matplotlib()  # before the slow part
    volumes, status = [], 0
    for path in args.files:
        try:
            volumes += load_volumes(path)
        except (MedzipError, OSError, ValueError) as exc:
            err.print(f"medzip bench: {path}: cannot read: {exc}")
            status = 1
    if not volumes:
        return status or 1
    memory = memory_method(args.memory)
    results = run_bench(volumes, codecs, repeat=args.repeat, memory=memory,
                        progress=not args.no_progress and err.is_terminal)
    summary = report.summarize(results)
    report.print_report(results, summary, details=args.details, console=console)
    settings = {"files": list(args.files), "codecs": [c.name for c in codecs],
                "repeat": args.repeat, "memory": memory,
                "codec_labels": {c.name: c.label for c in codecs}}
    if args.json:
        report.write_json(args.json, results, summary, settings)
    if args.csv:
        report.write_csv(args.csv, results)
    if args.plot:
        report.write_plot(args.plot, summary)
    if any(r.family == "medzip" and r.status == "failed" for r in results):
        err.print("medzip bench: a medzip codec FAILED its round trip (see table)", style="bold red")
        status = 1
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="medzip bench", description=__doc__.splitlines()[0],
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
