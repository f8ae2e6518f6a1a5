"""Recompress an existing Orthanc storage folder in place (``medzip orthanc migrate``).

Orthanc's default storage keeps each attachment as a plain file ``STORAGE/ab/cd/<uuid>``. Each
such file is turned into the envelope the medzip plugin reads (:mod:`.storage`), decoded again
and compared with the original before it replaces it by an atomic rename, so an interruption
(Ctrl-C, power loss) leaves every file either old or new and complete: running the command again
resumes, skipping files that are already envelopes. Stale temp files of an interrupted run are
removed first. Orthanc must be stopped while it runs (it would otherwise read half-migrated
state through a configuration that does not expect envelopes).

Files of a storage written with ``StorageCompression: true`` are Orthanc-zlib data, not DICOM:
they are wrapped (zstd or raw) and Orthanc keeps decompressing them itself, so they stay
readable but gain little.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MedzipError
from . import storage


@dataclass
class MigrationReport:
    converted: int = 0
    skipped: int = 0  # already envelopes (an earlier run)
    bytes_before: int = 0
    bytes_after: int = 0
    stale_removed: int = 0
    failed: list = field(default_factory=list)  # (path, reason): left untouched


def attachments(root: Path) -> list[Path]:
    """Files at Orthanc's ``ab/cd/<uuid>`` places; the index and anything else are ignored."""
    out = []
    for first in sorted(root.iterdir()):
        if not (first.is_dir() and len(first.name) == 2):
            continue
        for second in sorted(first.iterdir()):
            if not (second.is_dir() and len(second.name) == 2):
                continue
            for f in sorted(second.iterdir()):
                if (f.is_file() and not f.is_symlink() and storage.valid_uuid(f.name)
                        and f.name[:2] == first.name and f.name[2:4] == second.name):
                    out.append(f)
    return out


def migrate(root, *, level: int | None = None, dry_run: bool = False,
            progress=None) -> MigrationReport:
    """Convert every plain attachment under ``root``; ``progress(done, total)`` if given."""
    root = Path(root)
    if not root.is_dir():
        raise MedzipError(f"{root}: no such folder")
    report = MigrationReport()
    for stale in root.glob("*/*/.*" + storage.TMP_SUFFIX):
        if not dry_run:
            stale.unlink()
        report.stale_removed += 1
    todo = attachments(root)
    for i, path in enumerate(todo):
        with open(path, "rb") as fh:
            head = fh.read(len(storage.MAGIC))
        if storage.is_envelope(head):
            report.skipped += 1
        else:
            _convert(path, level, dry_run, report)
        if progress is not None:
            progress(i + 1, len(todo))
    return report


def _convert(path: Path, level: int | None, dry_run: bool, report: MigrationReport) -> None:
    data = path.read_bytes()
    try:
        blob = storage.encode(data, level=level, name=f"{path.name}.dcm", verify=True)
        if storage.decode(blob, path.name) != data:  # encode verifies medzip; this covers all
            raise MedzipError("envelope does not restore the file")
    except MedzipError as exc:
        report.failed.append((str(path), str(exc)))
        return
    if not dry_run:
        mode = os.stat(path).st_mode & 0o777
        storage.write_atomic(path, blob)
        os.chmod(path, mode)
    report.converted += 1
    report.bytes_before += len(data)
    report.bytes_after += len(blob)
