"""``medzip compress -r DIR`` / ``medzip -d -r DIR``: zstd-style recursion, in this process.

Each archive goes next to its input, as for single files (``scan.nii.gz`` -> ``scan.nii.gz.mzp``,
DICOM series folder ``s1/`` -> ``s1.mzp``). What is an input comes from the same planner as
``medzip batch``; files no adapter reads (and existing ``.mzp`` archives) are left alone. For
trees too large for one process, resumability and a manifest, use ``medzip batch``.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .. import files
from ..errors import MedzipError
from .planner import CODED, plan


def _say(args, msg: str) -> None:
    if getattr(args, "verbosity", 0) >= 0:
        print(msg, file=sys.stderr)


def _error(msg) -> None:
    print("medzip: " + " ".join(str(msg).splitlines()), file=sys.stderr)


def _refuse_single_output(args) -> None:
    if args.output or args.stdout:
        raise MedzipError("-r writes each output next to its input; -o / -c cannot be used with it")
    if not args.inputs:
        raise MedzipError("-r needs at least one folder or file")


def compress_inputs(args) -> list[Path]:
    """The inputs ``-r`` compresses: planned jobs of each folder, plain files as given."""
    out = []
    for name in args.inputs:
        p = Path(name)
        if p.is_dir():
            out += [p / job.rel for job in plan(p, include_verbatim=False) if job.kind == CODED]
        else:
            out.append(p)
    return out


def compress_recursive(args, progress: bool = False) -> int:
    _refuse_single_output(args)
    rc = 0
    for src in compress_inputs(args):
        t0 = time.perf_counter()
        try:
            remove = args.rm and not src.is_dir()  # compress_file removes single files only
            # the report summarises the archive it wrote, without reading it back
            report = files.compress_file_report(src, None, level=args.level, model=args.model,
                                                workers=args.threads, force=args.force,
                                                progress=progress, verify=args.verify,
                                                remove_source=remove, transcode=args.transcode)
            dst, info = report.output, report.info
            _say(args, f"{src}: -> {dst} ({info['ratio']:.2f}x, {info['bits_per_voxel']:.3f} "
                       f"bits/voxel)  [{time.perf_counter() - t0:.1f} s]")
            for line in files.note_lines(src, report.notes, transcode=args.transcode):
                _say(args, line)
        except MedzipError as exc:
            _error(exc)
            rc = 1
    return rc


def archives_under(names) -> list[Path]:
    out = []
    for name in names:
        p = Path(name)
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                out += [Path(dirpath) / f for f in sorted(filenames)
                        if f.endswith(files.ARCHIVE_SUFFIX) and not Path(dirpath, f).is_symlink()]
        else:
            out.append(p)
    return out


def decompress_recursive(args, progress: bool = False) -> int:
    _refuse_single_output(args)
    rc = 0
    for archive in archives_under(args.inputs):
        t0 = time.perf_counter()
        try:
            written = files.decompress_file(archive, None, workers=args.threads, force=args.force,
                                            progress=progress, remove_source=args.rm,
                                            model=args.model)
            _say(args, f"{archive}: -> {', '.join(str(p) for p in written[:3])}"
                       f"{' ...' if len(written) > 3 else ''}  [{time.perf_counter() - t0:.1f} s]")
        except MedzipError as exc:
            _error(exc)
            rc = 1
    return rc
