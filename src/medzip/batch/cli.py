"""``medzip batch compress|decompress|status``: the command line of the batch module.

Registered into ``medzip`` through :func:`register` (``add_parser``); Dask is imported only when
a command runs, so ``medzip`` starts (and says how to install it) without ``distributed``.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..cli_args import level_arg, threads_arg


def _progress(args) -> bool:
    if args.progress is not None:
        return args.progress
    return not args.quiet and sys.stderr.isatty()


def _log(args):
    return (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))


def _finish(args, report, verb: str) -> int:
    if not args.quiet:
        ratio = ""
        if report.bytes_in and report.bytes_out:
            big, small = max(report.bytes_in, report.bytes_out), min(report.bytes_in, report.bytes_out)
            ratio = f", ratio {big / small:.3f}"
        print(f"medzip batch {verb}: {report.planned} inputs, {report.ran} run, {report.reused} "
              f"already done, {len(report.failures)} failed, {len(report.skipped)} skipped; "
              f"{report.bytes_in:,} -> {report.bytes_out:,} bytes{ratio} "
              f"[{report.seconds:.1f} s]", file=sys.stderr)
        for path, reason in report.skipped:
            print(f"medzip: skipped {path}: {reason}", file=sys.stderr)
    for path, error in report.failures:
        print(f"medzip: FAILED {path}: {error}", file=sys.stderr)
    return 1 if report.failures else 0


def cmd_batch_compress(args) -> int:
    from .executor import compress_tree

    report = compress_tree(args.src, args.dst, scheduler=args.scheduler, workers=args.workers,
                           level=args.level, model=args.model, verify=args.verify,
                           retries=args.retries, progress=_progress(args), log=_log(args))
    return _finish(args, report, "compress")


def cmd_batch_decompress(args) -> int:
    from .executor import decompress_tree

    report = decompress_tree(args.dst, args.out, scheduler=args.scheduler, workers=args.workers,
                             force=args.force, retries=args.retries, progress=_progress(args),
                             log=_log(args))
    return _finish(args, report, "decompress")


def cmd_batch_status(args) -> int:
    from .manifest import Manifest

    with Manifest(args.dst) as manifest:
        summary = manifest.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(summary["by_status"].items()))
        print(f"{summary['manifest']}: {summary['inputs']} inputs ({counts or 'none'})")
        print(f"  done: {summary['bytes_in']:,} -> {summary['bytes_out']:,} bytes, ratio "
              f"{summary['ratio']:.3f} (coded inputs only {summary['coded_ratio']:.3f}), "
              f"{summary['task_seconds']:.1f} task-seconds")
        for f in summary["failures"]:
            print(f"  FAILED {f['path']}: {f['error']}")
        for f in summary["skipped"]:
            print(f"  skipped {f['path']}: {f['reason']}")
    return 1 if summary["failures"] else 0


def _cluster_options(p: argparse.ArgumentParser, count) -> None:
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run on this existing Dask scheduler (default: $DASK_SCHEDULER_ADDRESS, "
                        "else an embedded cluster on 127.0.0.1)")
    p.add_argument("-j", "--workers", type=count, default=0, metavar="N",
                   help="embedded cluster: worker processes (0 = one per core, the default)")
    p.add_argument("--retries", type=count, default=2, metavar="N",
                   help="re-run a task that raised an unexpected error up to N times (default 2)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    p.add_argument("-q", "--quiet", action="store_true", help="only errors")


def add_parser(subparsers) -> None:
    """Add ``medzip batch ...`` to the top-level parser's sub-commands."""
    batch = subparsers.add_parser("batch", help="archive whole trees (resumable; Dask)",
                                  description="Archive whole folder trees of studies on this "
                                              "machine or a Dask cluster; see docs/BATCH.md.")
    sub = batch.add_subparsers(dest="batch_command", metavar="COMMAND", required=True)

    p = sub.add_parser("compress", help="mirror SRC into DST: one archive per series / image file")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--level", type=level_arg, metavar="N", help="compression level 1..9")
    p.add_argument("--model", metavar="NAME|FILE", help="predictor model name or parameter file")
    p.add_argument("--verify", action="store_true",
                   help="decode every archive and check it before it is recorded as done")
    _cluster_options(p, threads_arg)
    p.set_defaults(func=cmd_batch_compress)

    p = sub.add_parser("decompress", help="restore the tree recorded in DST under OUT")
    p.add_argument("dst", metavar="DST")
    p.add_argument("out", metavar="OUT")
    p.add_argument("-f", "--force", action="store_true", help="overwrite differing files in OUT")
    _cluster_options(p, threads_arg)
    p.set_defaults(func=cmd_batch_decompress)

    p = sub.add_parser("status", help="totals and failures of a batch output")
    p.add_argument("dst", metavar="DST")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_batch_status)


register = add_parser  # the hook name medzip.cli calls for its EXTENSION_MODULES

__all__ = ["add_parser", "register"]
