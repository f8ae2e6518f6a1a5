"""File-level compress / decompress / test / info, shared by the CLI and Python users.

Outputs are staged next to their destination and renamed into place only when complete, so a
failure (or Ctrl-C, or SIGTERM) never leaves a partial file, and an existing output is refused
unless ``force``; even then only a regular file is replaced, never a FIFO, device or link. Staging
names carry this machine and process (``.NAME.HOST-PID.RANDOM.medzip-tmp``), so a later run
removes the ones a killed run left behind. Every error is a :class:`MedzipError` whose one-line
message names the file.

Like gzip and zstd, an archive gets its input's permission bits and access/modification times,
and restored files get the archive's (a ``chmod 600`` scan stays 600 both ways; folders restored
from a DICOM folder archive get the matching search bits). An input that changes while it is
being compressed (size, times or inode, or content when its times are too recent to tell) is
refused: nothing is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import tempfile
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from . import api
from .container import MAGIC, Container, section_refs
from .errors import CorruptStreamError, MedzipError, UnsupportedInputError
from .formats.base import (ARCHIVE_SUFFIX, TEMP_SUFFIX, Payload, adapter_by_name,
                           adapter_for_path, adapters, strip_archive_suffix)
from .parallel import resolve_workers

DEMO_SAMPLE = "S0_10slices.nii.gz"

__all__ = ["compress_file", "compress_file_report", "CompressReport", "decompress_file",
           "test_file", "info_file", "encode_file", "load_file", "encode_bytes", "write_output",
           "read_input", "decompress_bytes", "decompress_to_stream", "test_bytes", "info_bytes",
           "verify_archive", "demo_sample_path", "resolve_workers", "archive_name",
           "OutputExistsError", "ARCHIVE_SUFFIX"]


class OutputExistsError(MedzipError):
    """The output exists and overwriting was not asked for.

    The message uses the Python wording; the CLI swaps ``API_HINT`` for ``CLI_HINT``."""

    API_HINT = "pass force=True to overwrite"
    CLI_HINT = "use -f to overwrite"


def demo_sample_path() -> Path:
    """The bundled real MR sample (dipy b0, BSD-3-Clause; see medzip/data/README.md)."""
    return Path(str(resources.files("medzip") / "data" / DEMO_SAMPLE))


def archive_name(src) -> str:
    """``scan.nii.gz`` -> ``scan.nii.gz.mzp``."""
    return Path(src).name + ARCHIVE_SUFFIX


@contextmanager
def _named(name, alias: str | None = None):
    """Re-raise errors as MedzipError with one line that names ``name``.

    ``alias`` replaces a temporary path in adapter messages (stdin is staged in a temp file).
    """
    label = str(name)
    try:
        yield
    except MedzipError as exc:
        msg = str(exc).replace(alias, label) if alias else str(exc)
        if label not in msg:
            msg = f"{label}: {msg}"
        raise type(exc)(msg) from None
    except OSError as exc:
        where = exc.filename or label
        if (alias and str(where) == alias) or TEMP_SUFFIX in str(where):
            where = label  # name the user's file, not our staging path
        raise MedzipError(f"{where}: {exc.strerror or exc}") from None
    except MemoryError:
        raise MedzipError(f"{label}: out of memory") from None


def read_input(path) -> bytes:
    """The bytes of a file, with a one-line MedzipError naming it on failure."""
    path = Path(path)
    with _named(path):
        if not os.path.lexists(path):
            raise MedzipError(f"{path}: no such file")
        if path.is_dir():
            raise MedzipError(f"{path}: is a folder, expected a file")
        return path.read_bytes()


# ---- outputs: checks, staging names, stale staging files --------------------------------------

def _check_output(dst: Path, force: bool, src: Path | None = None) -> None:
    """Fail early (before any slow coding) when the output may not be written."""
    if src is not None and dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise MedzipError(f"{dst}: output would overwrite the input")
    if dst.is_dir():
        raise MedzipError(f"{dst}: is a folder; not replacing it")
    if os.path.lexists(dst):
        if not stat.S_ISREG(os.lstat(dst).st_mode):  # rename would swap out a FIFO, device, link
            raise MedzipError(f"{dst}: exists and is not a regular file; not replacing it")
        if not force:
            raise OutputExistsError(f"{dst}: already exists ({OutputExistsError.API_HINT})")
    if not dst.parent.is_dir():
        raise MedzipError(f"{dst.parent}: no such folder")


def _check_outputs(paths: list[Path], force: bool, src: Path | None = None) -> None:
    """Check every output of one restore. The first is the one the user named (or the default
    for the archive's name); the others (a detached data file) have names from the archive, and
    ``force`` replaces one of those only when it is named after the first (``scan.nhdr`` ->
    ``scan.raw``), so an archive can never overwrite an unrelated file."""
    primary, *others = paths
    _check_output(primary, force, src)
    stem = primary.name.split(".")[0]
    for path in others:
        if force and os.path.lexists(path) and not (stem and path.name.split(".")[0] == stem):
            raise MedzipError(f"{path}: already exists and is not named after {primary.name}; "
                              "not replacing a file the archive names (move it away first)")
        _check_output(path, force, src)


_HOST = f"{zlib.crc32(socket.gethostname().encode('utf-8', 'replace')):08x}"
_OWNED = re.compile(r"(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})\.[0-9a-z_]+" + re.escape(TEMP_SUFFIX))


def _temp_prefix(dst: Path) -> str:
    return f".{dst.name}.{_HOST}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # Windows' os.kill(pid, 0) would signal it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # someone else's process, or not a pid at all
        return True
    return True


def _remove_stale_temps(dst: Path) -> None:
    """Remove staging files/folders for ``dst`` that a killed medzip run on this machine left
    (its pid is gone). Ones from other machines (shared folders) or live runs are left alone."""
    prefix = f".{dst.name}."
    try:
        entries = [e for e in os.scandir(dst.parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        m = _OWNED.fullmatch(entry.name[len(prefix):])
        if not m or m["host"] != _HOST or _pid_alive(int(m["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            pass  # not ours to fight over; the next run tries again


# ---- file attributes and change detection -----------------------------------------------------

_PERMISSIONS = 0o777  # never set-id or sticky bits from someone else's file


def _copy_times_and_mode(st: os.stat_result | None, path: Path, folder: bool = False) -> None:
    """Give ``path`` the permission bits and access/modification times of ``st``; a folder
    also gets search (x) permission wherever the file mode grants read."""
    if st is None:
        return
    mode = stat.S_IMODE(st.st_mode) & _PERMISSIONS
    if folder:
        mode |= (mode & 0o444) >> 2
    os.chmod(path, mode)  # paths we created ourselves: never links
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _archive_stat(st: os.stat_result, is_folder: bool) -> os.stat_result:
    """The attributes an archive of ``st`` gets: a folder's, without the search bits."""
    if not is_folder:
        return st
    fields = list(st)
    fields[stat.ST_MODE] = stat.S_IFREG | (stat.S_IMODE(st.st_mode) & 0o666)
    return os.stat_result(fields, {"st_atime_ns": st.st_atime_ns, "st_mtime_ns": st.st_mtime_ns})


_RACY_NS = 2_000_000_000  # times this close to now cannot prove a file unchanged (coarse clocks)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _stamp(path: Path, digest: bool | None = None) -> tuple:
    """What identifies a file's content cheaply: size, mtime, ctime, inode; plus its SHA-256
    when its times are too recent to be trusted (``digest=None``: decide from the times)."""
    st = os.stat(path)
    if digest is None:
        now = time.time_ns()
        digest = stat.S_ISREG(st.st_mode) and now - max(st.st_mtime_ns, st.st_ctime_ns) < _RACY_NS
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev,
            file_sha256(path) if digest else None)


def _input_files(src: Path) -> list[Path]:
    if not src.is_dir():
        return [src]
    out = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        out.extend(p for p in (Path(dirpath) / n for n in sorted(filenames)) if p.is_file())
    return out


@dataclass
class _Snapshot:
    """The input's files as they were before reading; ``unchanged`` re-checks them."""

    src: Path
    stamps: dict = field(default_factory=dict)

    @classmethod
    def take(cls, src: Path) -> "_Snapshot":
        snap = cls(src)
        snap.add(_input_files(src))
        return snap

    def add(self, paths) -> None:
        for p in paths:
            if p not in self.stamps:
                self.stamps[p] = _stamp(p)

    def check_unchanged(self) -> None:
        try:
            listed = set(_input_files(self.src)) if self.src.is_dir() else set()
            same = listed <= set(self.stamps) and all(
                _stamp(p, digest=s[-1] is not None) == s for p, s in self.stamps.items())
        except OSError:
            same = False
        if not same:
            raise MedzipError(f"{self.src}: changed while it was being compressed; nothing "
                              "written (compress it again once it is complete)")

    @property
    def size(self) -> int:
        return sum(s[0] for s in self.stamps.values())


# ---- writing ----------------------------------------------------------------------------------

def _write_atomic(data: bytes, dst: Path, force: bool, check=None,
                  attrs: os.stat_result | None = None) -> None:
    """Write ``data`` to a hidden temp file beside ``dst``; ``check(tmp)`` may veto; then rename.
    ``attrs``: permission bits and times for the output (the input's, for an archive)."""
    _remove_stale_temps(dst)
    tmp = dst.with_name(f"{_temp_prefix(dst)}{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        # Private until renamed when the final mode comes from the input; else umask applies.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if attrs else 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
        _copy_times_and_mode(attrs, tmp)
        _check_output(dst, force)  # re-check: another process may have created it meanwhile
        os.replace(tmp, dst)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _payload_equal(a: Payload, b: Payload) -> bool:
    if len(a.volumes) != len(b.volumes) or a.members != b.members:
        return False
    canon = lambda m: json.dumps(m, sort_keys=True)  # noqa: E731 (NaN-safe, unlike ==)
    if canon(a.meta) != canon(b.meta):
        return False
    return all(x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
               for x, y in zip(a.volumes, b.volumes))


def verify_archive(data, original: Payload, adapter, *, workers: int = 1, progress: bool = False,
                   model: str | None = None) -> None:
    """Decode ``data`` and check it restores ``original`` (volumes, members and, via the
    adapter, the original file's SHA-256); raises CorruptStreamError otherwise."""
    decoded = api.decompress_payload(data, workers=workers, progress=progress, model=model)
    if not _payload_equal(original, decoded):
        raise CorruptStreamError("verification failed: the archive does not decode to the input")
    adapter.verify(decoded)


def _verify_archive(path: Path, original: Payload, adapter, workers: int, progress: bool,
                    model: str | None = None) -> None:
    """:func:`verify_archive` on what was really written to disk."""
    verify_archive(Path(path).read_bytes(), original, adapter, workers=workers, progress=progress,
                   model=model)


# ---- compress ---------------------------------------------------------------------------------

def load_file(src, *, transcode: bool = False):
    """``(adapter, payload)`` for an input file: what would be compressed, before coding.

    ``transcode`` asks adapters that support it (DICOM) to decode lossless compressed transfer
    syntaxes and code the pixels; such files restore uncompressed. Other formats ignore it."""
    return _read_payload(Path(src), transcode)


def _read_payload(src: Path, transcode: bool = False):
    with _named(src):
        if not os.path.lexists(src):
            raise MedzipError(f"{src}: no such file")
        if src.is_file() and _starts_with_magic(src):
            raise UnsupportedInputError(f"{src}: already compressed (a medzip archive)")
        try:
            adapter = adapter_for_path(src)
        except UnsupportedInputError:
            if src.is_dir():
                raise UnsupportedInputError(_folder_without_dicom(src)) from None
            raise
        if transcode and getattr(adapter, "supports_transcode", False):
            return adapter, adapter.read(src, transcode=True)
        return adapter, adapter.read(src)


def _starts_with_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False  # the adapter reports unreadable files


_FOLDER_PROBE = 1000  # files looked at to say what a non-DICOM folder holds


def _folder_without_dicom(src: Path) -> str:
    """Why a folder cannot be compressed, naming the image files it does hold."""
    labels = {"nifti": "NIfTI", "npy": ".npy", "nrrd": "NRRD", "metaimage": "MetaImage"}
    found: dict[str, int] = {}
    for path in _input_files(src)[:_FOLDER_PROBE]:
        for adapter in adapters():
            if adapter.name != "dicom" and adapter.can_read(path):
                found[adapter.name] = found.get(adapter.name, 0) + 1
                break
    if not found:
        return f"{src}: folder holds no DICOM or other image files medzip reads"
    what = ", ".join(f"{n} {labels.get(k, k)} file{'s' if n > 1 else ''}" for k, n in found.items())
    return (f"{src}: folder holds no DICOM files (found {what}); medzip compresses a folder only "
            "as a DICOM study: compress those files one by one instead")


def encode_file(src, *, level: int | None = None, model: str | None = None, workers: int = 0,
                progress: bool = False, name: str | None = None, transcode: bool = False) -> bytes:
    """Compress one input file into ``.mzp`` bytes (nothing is written).

    ``name`` labels error messages instead of ``src`` (used for stdin staged in a temp file);
    ``transcode`` as in :func:`load_file`. An input that changes meanwhile is refused.
    """
    src = Path(src)
    with _named(name or src, str(src) if name else None):
        snapshot = _Snapshot.take(src) if os.path.lexists(src) else None
        adapter, payload = _read_payload(src, transcode)
        data = api.compress_smallest(payload, _whole_file(src, adapter, payload), level=level,
                                     model=model, workers=resolve_workers(workers),
                                     progress=progress)[0]
        if snapshot is not None:
            snapshot.add(_source_files(adapter, src, payload))
            snapshot.check_unchanged()
        return data


def encode_bytes(data: bytes, *, level: int | None = None, model: str | None = None,
                 workers: int = 0, progress: bool = False, name: str = "<stdin>",
                 transcode: bool = False) -> bytes:
    """Compress the bytes of an input file (e.g. stdin); the format is sniffed from content."""
    fd, tmp = tempfile.mkstemp(prefix="medzip-input-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return encode_file(tmp, level=level, model=model, workers=workers, progress=progress,
                           name=name, transcode=transcode)
    finally:
        os.unlink(tmp)


def _whole_file(src: Path, adapter, payload: Payload) -> bytes | None:
    """The input's bytes for the stored-file fallback, when the input is one self-contained
    file (folders and inputs with a detached data file have none: storing the named file
    alone would lose the rest)."""
    if not src.is_file() or [Path(p) for p in _source_files(adapter, src, payload)] != [src]:
        return None
    return src.read_bytes()  # callers name the file in errors (_named)


def write_output(data: bytes, dst, *, force: bool = False) -> Path:
    """Write bytes to ``dst`` atomically (temp file + rename), refusing to overwrite unless force."""
    dst = Path(dst)
    _check_output(dst, force)
    with _named(dst):
        _write_atomic(data, dst, force)
    return dst


def _source_files(adapter, src: Path, payload: Payload) -> list[Path]:
    """Every file the input consists of (an ``.mhd`` and its ``.raw``; a folder's files)."""
    if hasattr(adapter, "source_files"):
        return adapter.source_files(src, payload.meta)
    return _input_files(src)


class _InputChanged(Exception):
    """Carries the input-changed error past the archive-naming ``_named(dst)``."""

    def __init__(self, error: MedzipError):
        super().__init__(str(error))
        self.error = error


@dataclass
class CompressReport:
    """What :func:`compress_file_report` did: the archive, its header summary
    (:func:`medzip.api.inspect`), the input's size, and ``notes``: files stored whole rather
    than coded as voxels, ``{"count", "reason", "kind"}`` (see the DICOM adapter), or a file
    that restores with the same header and voxels but other compressed bytes (kind
    ``recompressed``; ``kept``: ``remove_source`` left the input in place)."""

    output: Path
    input_bytes: int
    info: dict
    notes: list = field(default_factory=list)


_NOTE_HINTS = {
    "compressed": "add --transcode to code the lossless ones as voxels (they then restore "
                  "uncompressed)",
    "colour": "medzip codes greyscale voxels only",
}


def note_lines(name, notes: list, *, transcode: bool = False) -> list[str]:
    """Status lines (the CLI's wording) for a :class:`CompressReport`'s notes: one per reason
    files were stored whole instead of coded, with what to do, and one for an input that will
    not come back byte for byte."""
    lines = []
    for note in notes:
        if note["kind"] == "recompressed":
            lines.append(f"medzip: {name}: {note['reason']}, so it restores with the same header "
                         "and voxels but re-compressed: the file bytes will differ"
                         + ("; input kept despite --rm" if note.get("kept") else ""))
            continue
        hint = None if note["kind"] == "compressed" and transcode else _NOTE_HINTS.get(note["kind"])
        n = note["count"]
        lines.append(f"medzip: {name}: {n} file{'s' if n > 1 else ''} stored whole, not coded "
                     f"({note['reason']})" + (f"; {hint}" if hint else ""))
    return lines


def compress_file(src, dst=None, *, level: int | None = None, model: str | None = None,
                  workers: int = 0, force: bool = False, progress: bool = False,
                  verify: bool = False, remove_source: bool = False,
                  transcode: bool = False, output_dir=None) -> Path:
    """Compress ``src`` to ``dst`` (default ``src + ".mzp"``, in ``output_dir`` if given, else
    beside ``src``) and return the output path.

    ``verify`` decodes the written archive and checks it restores the input before the output
    is renamed into place; ``remove_source`` implies it and deletes ``src`` afterwards (with a
    detached data file: both). ``transcode`` as in :func:`load_file` (transcoded DICOM files
    restore uncompressed, so verification checks against the uncompressed rewrite). The archive
    gets the input's permission bits and times; an input that changes meanwhile is refused.
    """
    return compress_file_report(src, dst, level=level, model=model, workers=workers, force=force,
                                progress=progress, verify=verify, remove_source=remove_source,
                                transcode=transcode, output_dir=output_dir).output


def compress_file_report(src, dst=None, *, level: int | None = None, model: str | None = None,
                         workers: int = 0, force: bool = False, progress: bool = False,
                         verify: bool = False, remove_source: bool = False,
                         transcode: bool = False, output_dir=None) -> CompressReport:
    """:func:`compress_file`, returning a :class:`CompressReport` (for status lines).

    ``remove_source`` keeps an input the archive cannot give back byte for byte (a gzip
    stream zlib did not write: a ``recompressed`` note, marked ``kept``)."""
    src = Path(src)
    if dst is None:
        dst = (Path(output_dir) if output_dir is not None else src.parent) / archive_name(src)
    dst = Path(dst)
    workers = resolve_workers(workers)
    if remove_source and src.is_dir():
        raise MedzipError(f"{src}: is a folder; only single input files are removed after compression")
    _check_output(dst, force, src)
    with _named(src):
        if not os.path.lexists(src):
            raise MedzipError(f"{src}: no such file")
        attrs = _archive_stat(os.stat(src), src.is_dir())
        snapshot = _Snapshot.take(src)
        adapter, payload = _read_payload(src, transcode)
        sources = _source_files(adapter, src, payload)
        snapshot.add(sources)
        data, payload = api.compress_smallest(payload, _whole_file(src, adapter, payload),
                                              level=level, model=model, workers=workers,
                                              progress=progress)
        adapter = _adapter_for(payload.meta)  # the stored-file adapter when that was smaller

    def check(tmp):
        if verify or remove_source:
            with _named(dst):
                _verify_archive(tmp, payload, adapter, workers, progress, model)
        try:
            snapshot.check_unchanged()  # last thing before the archive becomes visible
        except MedzipError as exc:
            raise _InputChanged(exc) from None  # names the input, not the archive

    try:
        with _named(dst):
            _write_atomic(data, dst, force, check, attrs)
    except _InputChanged as changed:
        raise changed.error from None
    notes = adapter.storage_notes(payload.meta) if hasattr(adapter, "storage_notes") else []
    inexact = [n for n in notes if n["kind"] == "recompressed"]
    if remove_source and inexact:  # the verified restore is not the same file: keep it
        for note in inexact:
            note["kept"] = True
    elif remove_source:
        for path in sources:
            with _named(path):
                path.unlink()
    return CompressReport(dst, snapshot.size, api.inspect(data), notes)


# ---- decompress -------------------------------------------------------------------------------

class _ArrayAdapter:
    """Archives made by ``medzip.compress(array)`` (no source file) restore as a ``.npy``."""

    name = "array"

    def write(self, payload: Payload, out: Path) -> list[Path]:
        if len(payload.volumes) != 1:
            raise MedzipError(f"archive holds {len(payload.volumes)} arrays; use medzip.decompress_payload")
        with open(out, "wb") as f:
            np.save(f, payload.volumes[0], allow_pickle=False)
        return [Path(out)]

    def verify(self, payload: Payload) -> None:
        """Nothing beyond the codec's own per-volume SHA-256, already checked on decode."""

    def default_output(self, payload: Payload, archive: Path) -> Path:
        stem = strip_archive_suffix(archive)
        if stem == Path(archive).name:
            stem = stem or "array"
        return Path(archive).with_name(stem + ".npy")

    def describe(self, meta: dict) -> list[str]:
        return ["array compressed with medzip.compress(); restores as .npy"]


def _adapter_for(meta: dict):
    fmt = (meta or {}).get("format", "array")
    return _ArrayAdapter() if fmt == "array" else adapter_by_name(fmt)


def _outputs(adapter, meta: dict, out: Path) -> list[Path]:
    """Every path a restore to ``out`` creates (the adapter lists extra ones, from the header)."""
    return adapter.outputs(meta, out) if hasattr(adapter, "outputs") else [out]


def _open(data, label) -> api.Archive:
    """The archive parsed once (header validated); every later step reuses it."""
    with _named(label):
        return api.Archive(data)


def _decode(archive: api.Archive, label, workers: int, progress: bool, model: str | None = None):
    with _named(label):
        payload = archive.payload(workers=resolve_workers(workers), progress=progress, model=model)
        return _adapter_for(payload.meta), payload


def _resolve_output(archive: api.Archive, path: Path, dst, output_dir, force: bool) -> Path:
    """The output, from the header alone, with every output of the restore checked before
    anything is decoded (``path``: the archive's file, for the default name)."""
    meta = archive.source
    with _named(path):
        adapter = _adapter_for(meta)
        if dst is None:
            out = adapter.default_output(Payload([], {}, meta), path)
            if output_dir is not None:
                out = Path(output_dir) / out.name
        else:
            out = Path(dst)
    with _named(out):
        _check_outputs(_outputs(adapter, meta, out), force, path)
    return out


def decompress_bytes(data, dst, *, workers: int = 0, force: bool = False,
                     progress: bool = False, name: str = "<stdin>",
                     model: str | None = None) -> list[Path]:
    """Restore an in-memory archive to ``dst``; returns the written paths."""
    archive = _open(data, name)
    dst = _resolve_output(archive, Path(name), Path(dst), None, force)
    adapter, payload = _decode(archive, name, workers, progress, model)
    return _restore(adapter, payload, dst, force)


def _restore(adapter, payload: Payload, dst: Path, force: bool, src: Path | None = None,
             attrs: os.stat_result | None = None) -> list[Path]:
    """Let the adapter write into a private folder beside ``dst``, then move the results into
    place. Every output is listed and checked first; the adapter may create nothing else.
    ``attrs``: permission bits and times for what is restored (the archive's)."""
    with _named(dst):
        planned = _outputs(adapter, payload.meta, dst)
        _check_outputs(planned, force, src)
        _remove_stale_temps(dst)
        stage = Path(tempfile.mkdtemp(prefix=_temp_prefix(dst), suffix=TEMP_SUFFIX, dir=dst.parent))
        try:
            written = [Path(p) for p in adapter.write(payload, stage / dst.name)]
            tops = sorted(stage.iterdir())
            expected = {p.name for p in planned}
            strays = [t.name for t in tops if t.name not in expected]
            if strays:
                raise CorruptStreamError(f"archive restores an unexpected file '{strays[0]}'")
            if attrs is not None:
                for path in written:
                    _copy_times_and_mode(attrs, path)
                for folder, _, _ in os.walk(stage, topdown=False):  # inner folders, deepest first
                    if Path(folder).parent != stage and Path(folder) != stage:
                        _copy_times_and_mode(attrs, Path(folder), folder=True)
            _check_outputs([dst.parent / t.name for t in tops], force, src)
            for top in tops:
                os.replace(top, dst.parent / top.name)
            for top in tops:  # a folder's own mode last: moving it may need write permission
                if attrs is not None and (dst.parent / top.name).is_dir():
                    _copy_times_and_mode(attrs, dst.parent / top.name, folder=True)
            return [dst.parent / p.relative_to(stage) for p in written]
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def decompress_file(src, dst=None, *, workers: int = 0, force: bool = False,
                    progress: bool = False, remove_source: bool = False,
                    model: str | None = None, output_dir=None) -> list[Path]:
    """Restore the original file(s) from ``src``; default output from the format adapter
    (``x.nii.gz.mzp`` -> ``x.nii.gz``), in ``output_dir`` if given, else beside ``src``.
    Restored files get the archive's permission bits and times. ``remove_source`` deletes
    the archive after a good write."""
    src = Path(src)
    with _named(src):
        attrs = os.stat(src) if os.path.lexists(src) else None
    archive = _open(read_input(src), src)
    out = _resolve_output(archive, src, dst, output_dir, force)
    adapter, payload = _decode(archive, src, workers, progress, model)
    written = _restore(adapter, payload, out, force, src, attrs)
    if remove_source:
        with _named(src):
            src.unlink()
    return written


def decompress_to_stream(data, stream, *, workers: int = 0, progress: bool = False,
                         name: str = "<stdin>", model: str | None = None) -> int:
    """Restore a single-file archive and copy its bytes to a binary ``stream``."""
    adapter, payload = _decode(_open(data, name), name, workers, progress, model)
    with tempfile.TemporaryDirectory(prefix="medzip-") as tmp, _named(name):
        base = Path("stdin.mzp") if name == "<stdin>" else Path(name)  # '<' is not portable
        target = Path(tmp) / adapter.default_output(payload, base).name
        written = adapter.write(payload, target)
        if len(written) != 1 or not Path(written[0]).is_file():
            raise MedzipError(f"{name}: archive restores {len(written)} files, which cannot go to "
                              "one stream; restore it to files instead")
        total = 0
        with open(written[0], "rb") as f:
            while chunk := f.read(1 << 20):
                stream.write(chunk)
                total += len(chunk)
        stream.flush()
        return total


# ---- test / info ------------------------------------------------------------------------------

def test_bytes(data, *, workers: int = 0, progress: bool = False, name: str = "<stdin>",
               model: str | None = None) -> dict:
    """Decode everything and check every checksum, including the restored file's SHA-256 and
    the names a restore would write, without writing anything."""
    archive = _open(data, name)
    adapter, payload = _decode(archive, name, workers, progress, model)
    with _named(name):
        adapter.verify(payload)
        _outputs(adapter, payload.meta, adapter.default_output(payload, Path(str(name))))
        return {"path": str(name), "ok": True, **archive.info()}


def test_file(path, workers: int = 0, progress: bool = False, model: str | None = None) -> dict:
    path = Path(path)
    return test_bytes(read_input(path), workers=workers, progress=progress, name=str(path),
                      model=model)


# Keep pytest from collecting the public ``test_*`` helpers when a test module imports them.
test_bytes.__test__ = False  # type: ignore[attr-defined]
test_file.__test__ = False  # type: ignore[attr-defined]


def _section_bounds(container: Container) -> tuple[int, int, int]:
    """(sections, sections that lie beyond the end of the data, bytes the header needs):
    what can be checked without reading any section."""
    total = missing = 0
    needed = container.body_start
    for ref in section_refs(container.header):
        total += 1
        try:
            end = container.body_start + int(ref["offset"]) + int(ref["length"])
        except (TypeError, ValueError, OverflowError):
            missing += 1
            continue
        needed = max(needed, end)
        missing += end > container.total_size
    return total, missing, needed


def info_bytes(data, *, name: str = "<stdin>") -> dict:
    """Header summary without decoding voxels; ``details`` are the adapter's describe() lines.

    Nothing is decoded, so the archive is not verified (``medzip test`` does that), but section
    bounds are checked: ``complete`` is False, with ``missing_sections`` and ``needed_bytes``,
    when the header lists data beyond the end of the file (a truncated archive)."""
    archive = _open(data, name)
    with _named(name):
        info = {"path": str(name), **archive.info()}
    sections, missing, needed = _section_bounds(archive.container)
    info.update(verified=False, complete=bool(info.get("complete", True)) and missing == 0,
                sections=sections, missing_sections=missing, needed_bytes=needed)
    meta = info.get("source") or {}
    try:
        adapter = _adapter_for(meta)
        info["details"] = list(adapter.describe(meta)) if hasattr(adapter, "describe") else []
    except MedzipError:
        info["details"] = [f"source format '{meta.get('format')}' (no adapter in this medzip)"]
    return info


def info_file(path) -> dict:
    path = Path(path)
    return info_bytes(read_input(path), name=str(path))
