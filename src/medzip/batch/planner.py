"""Walk a source tree and decide what becomes one archive (a *job*) and what is copied as is.

Rules (the format adapters decide what a file is; nothing here parses image data):

- a folder that directly holds DICOM files and has no sub-folders is one job: the DICOM adapter
  reads the whole folder and groups its series (a PACS export is PATIENT/STUDY/SERIES/files);
  DICOM files in a folder that also has sub-folders become one job each, so no file is coded twice;
- every NIfTI / .npy / NRRD / MetaImage file is one job; a detached data file (``.nhdr`` or
  ``.mhd`` + ``.raw``) belongs to its header's job and is not listed again;
- any other file is a ``verbatim`` job: copied byte for byte, so the restored tree is complete;
- symbolic links are never followed (listed as skipped).

Archives mirror the source: ``a/b.nii.gz`` -> ``a/b.nii.gz.mzp``, DICOM folder ``a/s1`` ->
``a/s1.mzp``, verbatim ``a/notes.txt`` -> ``a/notes.txt``. This module has no Dask dependency so
``medzip compress -r`` can use it in-process.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MedzipError
from ..files import ARCHIVE_SUFFIX, file_sha256
from ..formats.base import adapters

#: Manifest file kept at the top of DST (see manifest.py); a source file of that name is refused.
MANIFEST_NAME = "medzip-batch.sqlite"
#: Temp files/folders of interrupted atomic writes end with this (files._write_atomic, _restore).
TMP_SUFFIX = ".medzip-tmp"

CODED, VERBATIM, SKIPPED = "coded", "verbatim", "skipped"


@dataclass(frozen=True)
class SourceFile:
    """One file a job reads: path relative to SRC (POSIX), size, mode bits, mtime."""

    rel: str
    size: int
    mode: int
    mtime_ns: int


@dataclass
class Job:
    """One unit of work: ``rel`` is the input (a file or a DICOM folder) relative to SRC."""

    rel: str
    kind: str  # CODED | VERBATIM | SKIPPED
    fmt: str  # adapter name, "file" for verbatim, "link" for skipped
    files: list[SourceFile] = field(default_factory=list)
    is_dir: bool = False
    note: str = ""  # why a job is skipped / refused

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def output(self) -> str:
        """Output path relative to DST."""
        return self.rel + ARCHIVE_SUFFIX if self.kind == CODED else self.rel


def _source_file(root: Path, path: Path) -> SourceFile:
    st = path.stat()
    return SourceFile(path.relative_to(root).as_posix(), st.st_size, stat.S_IMODE(st.st_mode),
                      st.st_mtime_ns)


def _dicom_adapter():
    return next(a for a in adapters() if a.name == "dicom")


def _detached_data_file(adapter, path: Path) -> Path | None:
    """The data file a ``.nhdr`` / ``.mhd`` header points to, if any (the header is parsed by
    the adapter itself; only its first 64 KiB is read)."""
    parse = getattr(adapter, "parse_header", None)
    if parse is None:
        return None
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    try:
        layout = parse(head, path)
    except MedzipError:
        return None  # the job itself will report the damaged header
    name = getattr(layout, "data_file", None)
    return path.parent / name if name else None


def _image_adapter(path: Path):
    """The adapter that would code this file, or None (verbatim). DICOM first, as medzip does."""
    for adapter in adapters():
        try:
            if adapter.can_read(path):
                return adapter
        except OSError:
            return None
    return None


def plan(src, *, include_verbatim: bool = True) -> list[Job]:
    """Jobs for every file under ``src``, in a stable (sorted) order."""
    root = Path(src)
    if not root.is_dir():
        raise MedzipError(f"{root}: not a folder")
    dicom = _dicom_adapter()
    jobs: list[Job] = []
    claimed: set[str] = set()  # detached data files, listed by their header's job
    pending: list[tuple[Path, object]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        for d in list(dirnames):
            if (here / d).is_symlink():
                jobs.append(Job((here / d).relative_to(root).as_posix(), SKIPPED, "link",
                                note="symbolic link: not followed"))
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
        names = sorted(filenames)
        if here == root and MANIFEST_NAME in names:
            raise MedzipError(f"{root / MANIFEST_NAME}: source holds a batch manifest; "
                              "is SRC a medzip batch output?")
        regular = []
        for name in names:
            p = here / name
            if p.is_symlink() or not p.is_file():
                jobs.append(Job(p.relative_to(root).as_posix(), SKIPPED, "link",
                                note="symbolic link or special file: not archived"))
            elif not name.endswith(TMP_SUFFIX):
                regular.append(p)
        dicom_files = [p for p in regular if dicom.can_read(p)]
        if dicom_files and not dirnames and here != root:
            # A series folder: the adapter reads all of it (its other files become members).
            jobs.append(Job(here.relative_to(root).as_posix(), CODED, "dicom",
                            [_source_file(root, p) for p in regular], is_dir=True))
            continue
        for p in regular:
            adapter = dicom if p in dicom_files else _image_adapter(p)
            pending.append((p, adapter))
            if adapter is not None:
                data = _detached_data_file(adapter, p)
                if data is not None and data.is_file() and not data.is_symlink():
                    claimed.add(data.relative_to(root).as_posix())
    for p, adapter in pending:
        rel = p.relative_to(root).as_posix()
        if rel in claimed and adapter is None:
            continue  # read through its header's job
        files = [_source_file(root, p)]
        if adapter is None:
            if include_verbatim:
                jobs.append(Job(rel, VERBATIM, "file", files))
            continue
        data = _detached_data_file(adapter, p)
        if data is not None and data.is_file() and not data.is_symlink():
            files.append(_source_file(root, data))
        jobs.append(Job(rel, CODED, adapter.name, files))
    jobs.sort(key=lambda j: j.rel)
    _refuse_collisions(jobs)
    return jobs


def _refuse_collisions(jobs: list[Job]) -> None:
    """Two jobs may not write the same DST path (``a.nii`` + a file named ``a.nii.mzp``)."""
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.kind == SKIPPED:
            continue
        other = seen.get(job.output)
        if other is not None:
            job.kind, job.note = SKIPPED, f"its output name {job.output} is taken by {other.rel}"
        else:
            seen[job.output] = job


def source_digests(root: Path, job: Job) -> dict[str, str]:
    """SHA-256 of every file the job reads, by relative path."""
    return {f.rel: file_sha256(Path(root) / f.rel) for f in job.files}


def job_digest(digests: dict[str, str]) -> str:
    """One SHA-256 for a job: of the file itself for one file, else of the sorted listing."""
    if len(digests) == 1:
        return next(iter(digests.values()))
    listing = "".join(f"{rel}\0{sha}\n" for rel, sha in sorted(digests.items()))
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()
