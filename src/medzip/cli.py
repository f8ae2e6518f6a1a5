"""``medzip`` command line, in the style of zstd / xz.

Exit status: 0 success, 1 error (one ``medzip: <message>`` line on stderr, no partial output),
2 usage error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM, cleaned up like Ctrl-C).
Input is kept unless ``--rm``; outputs are never overwritten without ``-f``; ``-`` (or no file)
means stdin / stdout, and binary data is never written to or read from a terminal. Subcommands from other medzip modules are added through their
``register(subparsers)`` hook.
"""
from __future__ import annotations

import argparse
import gzip
import importlib
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import __version__, api, files
from .batch import recursive
from .cli_args import level_arg, threads_arg
from .errors import MedzipError

EXTENSION_MODULES = ("medzip.bench.cli", "medzip.training.cli", "medzip.orthanc.cli",
                     "medzip.batch.cli", "medzip.convert")
_ALIASES = {"-z": "compress", "--compress": "compress", "-d": "decompress",
            "--decompress": "decompress", "--uncompress": "decompress", "-t": "test",
            "--test": "test", "-l": "info", "--list": "info"}
_STDIO = "-"


class _UsageError(Exception):
    """Bad combination of arguments: exit status 2."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, so every cleanup (``finally``) runs as for
    Ctrl-C: staged outputs are removed and no partial file is left."""


_MAIN_PID = os.getpid()


def _raise_terminated(signum, frame):
    if os.getpid() != _MAIN_PID:  # a forked worker inherited the handler: die as by default
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise _Terminated()


# ---- small helpers ----------------------------------------------------------------------------

def _say(args, msg: str, level: int = 0) -> None:
    """Status to stderr: level 0 by default, 1 with -v; -q silences both."""
    if args.verbosity >= level:
        print(msg, file=sys.stderr)


def _error(msg) -> None:
    text = str(msg)
    if isinstance(msg, files.OutputExistsError):  # the API's wording names force=True
        text = text.replace(files.OutputExistsError.API_HINT, files.OutputExistsError.CLI_HINT)
    print("medzip: " + " ".join(text.splitlines()), file=sys.stderr)


def _progress(args) -> bool:
    if args.progress is not None:
        return args.progress
    return args.verbosity >= 0 and sys.stderr.isatty()


def _stdout_binary():
    if sys.stdout.isatty():
        raise MedzipError("refusing to write binary data to a terminal (use -o FILE or redirect stdout)")
    return sys.stdout.buffer


def _stdin_binary() -> bytes:
    if sys.stdin.isatty():
        raise MedzipError("refusing to read binary data from a terminal (give a file or pipe data in)")
    return sys.stdin.buffer.read()


def _size_line(src, n_in: int, info: dict, dst, seconds: float) -> str:
    ratio = n_in / info["compressed_bytes"] if info["compressed_bytes"] else 0.0
    coded = (f"{info['bits_per_voxel']:.3f} bits/voxel" if any(v["voxels"] for v in info["volumes"])
             else "stored whole, no voxels coded")
    return (f"{src}: {n_in:,} -> {info['compressed_bytes']:,} bytes ({ratio:.2f}x, "
            f"{coded}) -> {dst}  [{seconds:.1f} s]")


def _say_notes(args, name, notes: list) -> None:
    for line in files.note_lines(name, notes, transcode=args.transcode):
        _say(args, line)


def _written_line(label, written: list, seconds: float) -> str:
    """``x.mzp: -> a, b`` for a few outputs; a folder of many files is summarised."""
    if len(written) <= 3:
        outs = ", ".join(str(p) for p in written)
    else:
        top = os.path.commonpath([str(p) for p in written])
        outs = f"{len(written)} files in {top}{os.sep}"
    return f"{label}: -> {outs}  [{seconds:.1f} s]"


# ---- compress ---------------------------------------------------------------------------------

def _inputs(args) -> list[str]:
    """The input names (stdin when none), checked against -o / -c / --output-dir. ``-o DIR``
    with several inputs (or ``-o DIR/``) names an existing output folder, as in zstd."""
    inputs = args.inputs or [_STDIO]
    out = args.output
    if (out and out != _STDIO and Path(out).is_dir()
            and (len(inputs) > 1 or out.endswith(("/", os.sep)))):
        if args.output_dir:
            raise _UsageError("give the output folder once (-o DIR or --output-dir DIR)")
        args.output, args.output_dir = None, out
    if args.output_dir and (args.output or args.stdout):
        raise _UsageError("--output-dir cannot be combined with -o FILE / -c")
    if args.output_dir and not Path(args.output_dir).is_dir():
        raise MedzipError(f"{args.output_dir}: no such folder")
    if len(inputs) > 1 and (args.output or args.stdout):
        raise _UsageError("-o FILE / -c take a single input (use -o DIR or --output-dir DIR "
                          "for several)")
    if inputs.count(_STDIO) > 1:
        raise _UsageError("stdin ('-') can be read only once")
    if args.output_dir and _STDIO in inputs:
        raise _UsageError("stdin has no name to put in --output-dir; use -o FILE")
    return inputs


def _encode_raw(args, raw: bytes) -> bytes:
    return files.encode_bytes(raw, level=args.level, model=args.model, workers=args.threads,
                              progress=_progress(args), transcode=args.transcode)


def cmd_compress(args) -> int:
    if args.recursive:  # zstd -r: same planner as `medzip batch`, in this process
        return recursive.compress_recursive(args, _progress(args))
    inputs = _inputs(args)
    rc = 0
    for name in inputs:
        try:
            t0 = time.perf_counter()
            to_stdout = args.stdout or args.output == _STDIO or (name == _STDIO and not args.output)
            if to_stdout:
                out = _stdout_binary()
                if name == _STDIO:
                    data = _encode_raw(args, _stdin_binary())
                    n_in = None
                else:
                    data = files.encode_file(name, level=args.level, model=args.model,
                                             workers=args.threads, progress=_progress(args),
                                             transcode=args.transcode)
                    n_in = Path(name).stat().st_size
                out.write(data)
                out.flush()
                if args.rm:
                    _say(args, f"medzip: {name}: not removed (output went to stdout)")
                if n_in is not None:
                    _say(args, _size_line(name, n_in, api.inspect(data), "<stdout>",
                                          time.perf_counter() - t0), 1)
                continue
            if name == _STDIO:  # stdin to a named file
                raw = _stdin_binary()
                data = _encode_raw(args, raw)
                dst = files.write_output(data, args.output, force=args.force)
                _say(args, _size_line("<stdin>", len(raw), api.inspect(data), dst,
                                      time.perf_counter() - t0))
                continue
            report = files.compress_file_report(
                name, args.output, level=args.level, model=args.model, workers=args.threads,
                force=args.force, progress=_progress(args), verify=args.verify,
                remove_source=args.rm, transcode=args.transcode, output_dir=args.output_dir)
            _say(args, _size_line(name, report.input_bytes, report.info, report.output,
                                  time.perf_counter() - t0))
            _say_notes(args, name, report.notes)
        except (MedzipError, OSError) as exc:
            _error(exc if isinstance(exc, MedzipError) else f"{name}: {exc.strerror or exc}")
            rc = 1
    return rc


# ---- decompress -------------------------------------------------------------------------------

def cmd_decompress(args) -> int:
    if args.recursive:
        return recursive.decompress_recursive(args, _progress(args))
    inputs = _inputs(args)
    rc = 0
    for name in inputs:
        try:
            t0 = time.perf_counter()
            to_stdout = args.stdout or args.output == _STDIO or (name == _STDIO and not args.output)
            label = "<stdin>" if name == _STDIO else name
            if to_stdout:
                out = _stdout_binary()
                data = _stdin_binary() if name == _STDIO else files.read_input(name)
                n = files.decompress_to_stream(data, out, workers=args.threads,
                                               progress=_progress(args), name=label,
                                               model=args.model)
                _say(args, f"{label}: {n:,} bytes -> <stdout>  [{time.perf_counter() - t0:.1f} s]", 1)
                continue
            if name == _STDIO:
                written = files.decompress_bytes(_stdin_binary(), args.output, workers=args.threads,
                                                 force=args.force, progress=_progress(args),
                                                 model=args.model)
            else:
                written = files.decompress_file(name, args.output, workers=args.threads,
                                                force=args.force, progress=_progress(args),
                                                remove_source=args.rm, model=args.model,
                                                output_dir=args.output_dir)
            _say(args, _written_line(label, written, time.perf_counter() - t0))
        except (MedzipError, OSError) as exc:
            _error(exc if isinstance(exc, MedzipError) else f"{name}: {exc.strerror or exc}")
            rc = 1
    return rc


# ---- test / info ------------------------------------------------------------------------------

def cmd_test(args) -> int:
    rc = 0
    for name in args.files:
        try:
            t0 = time.perf_counter()
            if name == _STDIO:
                info = files.test_bytes(_stdin_binary(), workers=args.threads, progress=_progress(args),
                                        model=args.model)
            else:
                info = files.test_file(name, workers=args.threads, progress=_progress(args),
                                       model=args.model)
            voxels = sum(v["voxels"] for v in info["volumes"])
            _say(args, f"{info['path']}: OK ({voxels:,} voxels, {info['bits_per_voxel']:.3f} "
                       f"bits/voxel, {time.perf_counter() - t0:.1f} s)")
        except (MedzipError, OSError) as exc:
            _error(exc if isinstance(exc, MedzipError) else f"{name}: {exc.strerror or exc}")
            rc = 1
    return rc


def _human_info(info: dict) -> list[str]:
    # stored-file archives leave the writer out to save bytes
    writer = f", written by {info['writer']}" if info.get("writer") else ""
    lines = [str(info["path"]),
             f"  archive     {info['compressed_bytes']:,} bytes, format {info['format_version']}"
             f"{writer}",
             f"  original    {info['original_bytes']:,} bytes (voxels + kept members), "
             f"ratio {info['ratio']:.3f}, {info['bits_per_voxel']:.3f} bits/voxel"]
    for i, v in enumerate(info["volumes"]):
        shape = "x".join(str(s) for s in v["shape"])
        model = v.get("model") or "-"
        if v.get("model_version") is not None:
            model += f" v{v['model_version']}"
        if v.get("model_sha256"):
            model += f" (sha256 {v['model_sha256'][:12]})"
        if v.get("network"):
            model += f" + {v['network']['name']} (sha256 {v['network']['sha256'][:12]})"
        lines.append(f"  volume {i}    {shape} {v['dtype']}, codec {v.get('codec')}, model {model}, "
                     f"{v.get('chunks', 0)} chunk(s), {v['stored_bytes']:,} bytes, "
                     f"{v['bits_per_voxel']:.3f} bits/voxel")
    for m in info["members"]:
        lines.append(f"  member      {m['name']}: {m['size']:,} bytes (stored {m['stored']:,})")
    for d in info.get("details", []):
        lines.append(f"  source      {d}")
    if info.get("complete", True):
        lines.append(f"  integrity   header CRC ok, all {info.get('sections', 0)} sections inside "
                     "the file; data not verified (medzip test does)")
    else:
        lines.append(f"  integrity   TRUNCATED: {info['missing_sections']} of {info['sections']} "
                     f"sections lie past the end ({info['compressed_bytes']:,} bytes, "
                     f"{info['needed_bytes']:,} needed)")
    return lines


def _incomplete(info: dict) -> str | None:
    if info.get("complete", True):
        return None
    return (f"{info['path']}: truncated archive: {info['missing_sections']} of "
            f"{info['sections']} sections missing ({info['compressed_bytes']:,} of "
            f"{info['needed_bytes']:,} bytes); the ratio above is not meaningful")


def cmd_info(args) -> int:
    rc, infos = 0, []
    for name in args.files:
        try:
            info = (files.info_bytes(_stdin_binary()) if name == _STDIO else files.info_file(name))
        except (MedzipError, OSError) as exc:
            _error(exc if isinstance(exc, MedzipError) else f"{name}: {exc.strerror or exc}")
            rc = 1
            continue
        if args.json:
            infos.append(info)
        else:
            print("\n".join(_human_info(info)))
        if _incomplete(info):
            _error(_incomplete(info))
            rc = 1
    if args.json and infos:
        print(json.dumps(infos[0] if len(args.files) == 1 else infos, indent=2, default=str))
    return rc


# ---- demo -------------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    """Compress a real scan, verify the round trip, and compare with gzip -6 / zstd -19."""
    import zstandard

    path = Path(args.file) if args.file else files.demo_sample_path()
    workers = files.resolve_workers(args.threads)
    adapter, payload = files.load_file(path)
    raw = b"".join(np.ascontiguousarray(v).tobytes() for v in payload.volumes)
    voxels = sum(int(v.size) for v in payload.volumes)
    if not voxels:
        raise MedzipError(f"{path}: no voxels to compress")
    t0 = time.perf_counter()
    data = api.compress_payload(payload, level=args.level, model=args.model, workers=workers,
                                progress=_progress(args))
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:  # the same check as compress --verify: voxels, members, the original file's SHA-256
        files.verify_archive(data, payload, adapter, workers=workers, progress=_progress(args))
    except MedzipError as exc:
        raise MedzipError(f"{path}: demo round trip FAILED: {exc}") from None
    t_dec = time.perf_counter() - t0
    info = api.inspect(data)
    voxel_bytes = info["compressed_bytes"] - sum(m["stored"] or 0 for m in info["members"])
    t0 = time.perf_counter()
    n_gz = len(gzip.compress(raw, compresslevel=6, mtime=0))
    t_gz = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_zs = len(zstandard.ZstdCompressor(level=19).compress(raw))
    t_zs = time.perf_counter() - t0
    level = args.level if args.level is not None else "default"
    rows = [("medzip", f"level {level}", voxel_bytes, t_enc, t_dec),
            ("gzip -6", "raw voxels", n_gz, t_gz, None),
            ("zstd -19", "raw voxels", n_zs, t_zs, None)]
    shapes = ", ".join("x".join(map(str, v.shape)) + f" {v.dtype}" for v in payload.volumes)
    if args.json:
        print(json.dumps({"file": str(path), "voxels": voxels, "raw_bytes": len(raw),
                          "archive_bytes": info["compressed_bytes"], "verified": True,
                          "results": [{"method": r[0], "bytes": r[2], "bits_per_voxel": 8 * r[2] / voxels,
                                       "encode_s": r[3], "decode_s": r[4]} for r in rows]}, indent=2))
        return 0
    print(f"sample: {path.name} ({shapes}; {voxels:,} voxels, {len(raw):,} raw bytes)")
    print(f"{'method':<10}{'':<12}{'bytes':>10}{'bits/voxel':>12}{'encode':>10}{'decode':>10}")
    for name, note, n, te, td in rows:
        dec = f"{td:9.2f}s" if td is not None else f"{'':>10}"
        print(f"{name:<10}{note:<12}{n:>10,}{8 * n / voxels:>12.3f}{te:9.2f}s{dec}")
    print(f"round trip verified: voxels identical and the original file's SHA-256 matches "
          f"(archive {info['compressed_bytes']:,} bytes incl. file header, workers {workers})")
    return 0


# ---- parser -----------------------------------------------------------------------------------

def _common(p: argparse.ArgumentParser, *, threads: bool = True, progress: bool = True) -> None:
    p.add_argument("-q", "--quiet", action="count", default=0, help="less output")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output")
    if threads:
        p.add_argument("-T", "--threads", type=threads_arg, default=0, metavar="N",
                       help="worker processes (0 = all cores, the default)")
    if progress:
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar on stderr (default: when stderr is a terminal)")


def _io_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file ('-' = stdout); an existing folder with several inputs")
    p.add_argument("--output-dir", metavar="DIR", help="write every output into this folder")
    p.add_argument("-c", "--stdout", action="store_true", help="write to stdout")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing output")
    p.add_argument("-k", "--keep", dest="rm", action="store_false",
                   help="keep the input (default)")
    p.add_argument("--rm", dest="rm", action="store_true",
                   help="delete the input after the output is written and verified")
    p.set_defaults(rm=False)  # else -k's store_false default (True) would win
    p.add_argument("-r", "--recursive", action="store_true",
                   help="folders: every image / DICOM series folder in them, output beside each")


def _level_options(p: argparse.ArgumentParser) -> None:
    for i in range(1, 10):
        p.add_argument(f"-{i}", dest="level", action="store_const", const=i, help=argparse.SUPPRESS)
    p.add_argument("--level", type=level_arg, metavar="N",
                   help="compression level 1..9 or fast/default/strong (also -1 .. -9)")
    p.add_argument("--model", metavar="NAME|FILE", help="predictor model name or parameter file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medzip", description="Lossless compression of 3-D medical images: NIfTI (.nii, .nii.gz), .npy, "
                    "DICOM files or folders, NRRD and MetaImage.",
        epilog="zstd-style shortcuts: medzip FILE (compress), medzip -d FILE.mzp, medzip -t FILE.mzp, "
               "medzip -l FILE.mzp. Exit status: 0 ok, 1 error, 2 usage, 130 interrupted, 143 terminated.")
    parser.add_argument("--version", action="version", version=f"medzip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("compress", help="compress files to FILE.mzp")
    p.add_argument("inputs", nargs="*", metavar="IN", help="input files ('-' or none: stdin)")
    _io_options(p)
    _level_options(p)
    p.add_argument("--verify", action="store_true",
                   help="decode the written archive and check it before keeping it (implied by --rm)")
    p.add_argument("--transcode", action="store_true",
                   help="DICOM: decode lossless compressed transfer syntaxes (RLE, deflate, JPEG "
                        "lossless, JPEG-LS, JPEG 2000 lossless) and code the pixels; such files "
                        "restore as uncompressed Explicit VR Little Endian files, not identical "
                        "bytes. Lossy syntaxes stay as they are")
    _common(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="restore the original file(s)")
    p.add_argument("inputs", nargs="*", metavar="IN", help="archives ('-' or none: stdin)")
    _io_options(p)
    p.add_argument("--model", metavar="FILE", help="model file, for archives made with a user-trained model")
    _common(p)
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("test", help="verify archives completely without writing anything")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--model", metavar="FILE", help="model file, for archives made with a user-trained model")
    _common(p)
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("info", help="show an archive's header: sizes, ratio, bits/voxel, model, members")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p, threads=False, progress=False)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="compress the bundled real MR sample and compare with gzip/zstd")
    p.add_argument("file", nargs="?", metavar="FILE", help="use this .nii/.nii.gz/.npy instead")
    _level_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _common(p)
    p.set_defaults(func=cmd_demo)

    for name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part of medzip is not installed / not written yet
            _error(f"warning: commands from {name} unavailable: {exc}")
            continue
        module.register(sub)
    parser.commands = set(sub.choices)  # for the zstd-style shortcuts in _rewrite
    return parser


_BUNDLED = re.compile(r"-[dztlcfkqvr]{2,}")


def _rewrite(argv: list[str], commands) -> list[str]:
    """zstd-style shortcuts: ``-d``/``-t``/``-l``/``-z`` anywhere (also bundled, ``-dcf``),
    or a bare file -> compress."""
    if not argv or argv[0] in commands or argv[0] in ("-h", "--help", "--version"):
        return argv
    argv = [x for a in argv for x in ([f"-{c}" for c in a[1:]] if _BUNDLED.fullmatch(a) else [a])]
    for i, a in enumerate(argv):
        if a in _ALIASES:
            return [_ALIASES[a], *argv[:i], *argv[i + 1:]]
    return ["compress", *argv]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = _rewrite(list(sys.argv[1:] if argv is None else argv), parser.commands)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help / --version (0)
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 2
    if not getattr(args, "func", None):
        parser.print_usage(sys.stderr)
        return 2
    args.verbosity = getattr(args, "verbose", 0) - getattr(args, "quiet", 0)
    global _MAIN_PID
    previous = None
    if threading.current_thread() is threading.main_thread():
        _MAIN_PID = os.getpid()
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return int(args.func(args) or 0)
    except _Terminated:
        _error("terminated")
        return 143
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        _error(exc)
        return 2
    except MedzipError as exc:
        _error(exc)
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except BrokenPipeError:  # e.g. `medzip -dc x.mzp | head`: not our error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:  # e.g. disk full while writing to stdout
        _error(f"{exc.filename or 'I/O error'}: {exc.strerror or exc}")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
