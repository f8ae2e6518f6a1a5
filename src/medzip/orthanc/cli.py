"""``medzip orthanc config`` and ``medzip orthanc migrate`` (registered by medzip.cli)."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import MedzipError


def _level(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 9:
        raise argparse.ArgumentTypeError("level must be 1..9")
    return value


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("orthanc", help="run Orthanc (DICOM server) on medzip-compressed storage",
                              description="Orthanc storage area that keeps every DICOM instance "
                                          "medzip-compressed; see docs/ORTHANC.md.")
    sub = p.add_subparsers(dest="orthanc_command", metavar="ACTION", required=True)

    c = sub.add_parser("config", help="print a complete Orthanc configuration (JSON)",
                       description="Print the Orthanc configuration for a medzip storage folder; "
                                   "then run: Orthanc config.json. REST and DICOM accept loopback "
                                   "clients only (docs/ORTHANC.md: opening them deliberately).")
    c.add_argument("storage_dir", metavar="STORAGE_DIR", help="folder for the attachments and index")
    c.add_argument("--http-port", type=int, default=8042, metavar="P", help="REST port (default 8042)")
    c.add_argument("--dicom-port", type=int, default=4242, metavar="Q", help="DICOM port (default 4242)")
    c.add_argument("--level", type=_level, metavar="N", help="medzip level 1..9 (default: medzip's)")
    c.add_argument("--aet", default="MEDZIP", help="Orthanc's DICOM AE title (default MEDZIP)")
    c.add_argument("--no-verify", action="store_true",
                   help="skip decoding each new archive before it is stored (faster uploads)")
    c.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    c.set_defaults(func=cmd_config)

    m = sub.add_parser("migrate", help="recompress an existing Orthanc storage folder in place",
                       description="Turn every plain attachment of a stopped Orthanc's storage "
                                   "folder into a verified medzip envelope; interrupted runs resume.")
    m.add_argument("storage_dir", metavar="STORAGE_DIR")
    m.add_argument("--level", type=_level, metavar="N", help="medzip level 1..9 (default: medzip's)")
    m.add_argument("--dry-run", action="store_true", help="measure only, change nothing")
    m.add_argument("-q", "--quiet", action="store_true")
    m.set_defaults(func=cmd_migrate)
    return p


add_parser = register  # the name integration modules were asked to expose


def cmd_config(args) -> int:
    from .config import build_config

    text = json.dumps(build_config(args.storage_dir, http_port=args.http_port,
                                   dicom_port=args.dicom_port, level=args.level, aet=args.aet,
                                   verify=not args.no_verify), indent=2) + "\n"
    if args.output:
        from ..files import write_output

        write_output(text.encode(), args.output)
    else:
        sys.stdout.write(text)
    return 0


def cmd_migrate(args) -> int:
    from .migrate import migrate

    def progress(done, total):
        if not args.quiet and sys.stderr.isatty():
            print(f"\r{done}/{total}", end="", file=sys.stderr, flush=True)

    report = migrate(args.storage_dir, level=args.level, dry_run=args.dry_run, progress=progress)
    if not args.quiet:
        if sys.stderr.isatty():
            print(file=sys.stderr)
        saved = report.bytes_before and report.bytes_after / report.bytes_before
        print(f"{'would convert' if args.dry_run else 'converted'} {report.converted} file(s): "
              f"{report.bytes_before} -> {report.bytes_after} bytes"
              + (f" ({saved:.3f}x)" if saved else "")
              + f"; {report.skipped} already medzip; {report.stale_removed} stale temp file(s) removed")
        for path, reason in report.failed:
            print(f"left as it was: {path}: {reason}", file=sys.stderr)
    if report.failed:
        raise MedzipError(f"{len(report.failed)} file(s) could not be converted (left as they were)")
    return 0
