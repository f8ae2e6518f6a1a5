"""File-level compress / decompress / test / info, shared by the CLI and Python users.

Outputs are staged next to their destination and renamed into place only when complete, so a
failure (or Ctrl-C) never leaves a partial file, and an existing output is refused unless
``force``. Every error is a :class:`MedzipError` whose one-line message names the file.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import numpy as np

from . import api
from .errors import CorruptStreamError, MedzipError
from .formats.base import Payload, adapter_by_name, adapter_for_path
from .parallel import resolve_workers

ARCHIVE_SUFFIX = ".mzp"
DEMO_SAMPLE = "S0_10slices.nii.gz"

__all__ = ["compress_file", "decompress_file", "test_file", "info_file", "encode_file", "load_file",
           "encode_bytes", "write_output", "read_input",
           "decompress_bytes", "decompress_to_stream", "test_bytes", "info_bytes",
           "demo_sample_path", "resolve_workers", "ARCHIVE_SUFFIX"]


def demo_sample_path() -> Path:
    """The bundled real MR sample (dipy b0, BSD-3-Clause; see medzip/data/README.md)."""
    return Path(str(resources.files("medzip") / "data" / DEMO_SAMPLE))


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
        if (alias and str(where) == alias) or "medzip-tmp" in str(where):
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


def _check_output(dst: Path, force: bool, src: Path | None = None) -> None:
    """Fail early (before any slow coding) when the output may not be written."""
    if src is not None and dst.exists() and src.exists() and os.path.samefile(src, dst):
        raise MedzipError(f"{dst}: output would overwrite the input")
    if dst.is_dir():
        raise MedzipError(f"{dst}: is a folder; not replacing it")
    if os.path.lexists(dst) and not force:
        raise MedzipError(f"{dst}: already exists (use -f / force=True to overwrite)")
    if not dst.parent.is_dir():
        raise MedzipError(f"{dst.parent}: no such folder")


def _write_atomic(data: bytes, dst: Path, force: bool, check=None) -> None:
    """Write ``data`` to a hidden temp file beside ``dst``; ``check(tmp)`` may veto; then rename."""
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}.medzip-tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(tmp)
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


def _verify_archive(path: Path, original: Payload, adapter, workers: int, progress: bool,
                    model: str | None = None) -> None:
    """Decode the written archive from disk and check it restores the original (volumes,
    members and, via the adapter, the original file's SHA-256)."""
    decoded = api.decompress_payload(path.read_bytes(), workers=workers, progress=progress,
                                     model=model)
    if not _payload_equal(original, decoded):
        raise CorruptStreamError("verification failed: the archive does not decode to the input")
    if hasattr(adapter, "verify"):
        adapter.verify(decoded)


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
        adapter = adapter_for_path(src)
        if transcode and getattr(adapter, "supports_transcode", False):
            return adapter, adapter.read(src, transcode=True)
        return adapter, adapter.read(src)


def encode_file(src, *, level: int | None = None, model: str | None = None, workers: int = 0,
                progress: bool = False, name: str | None = None, transcode: bool = False) -> bytes:
    """Compress one input file into ``.mzp`` bytes (nothing is written).

    ``name`` labels error messages instead of ``src`` (used for stdin staged in a temp file);
    ``transcode`` as in :func:`load_file`.
    """
    src = Path(src)
    with _named(name or src, str(src) if name else None):
        adapter, payload = _read_payload(src, transcode)
        return api.compress_smallest(payload, _whole_file(src), level=level, model=model,
                                     workers=resolve_workers(workers), progress=progress)[0]


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


def _whole_file(src: Path) -> bytes | None:
    """A single input file's bytes, for the stored-file fallback (folders have none)."""
    return read_input(src) if src.is_file() else None


def write_output(data: bytes, dst, *, force: bool = False) -> Path:
    """Write bytes to ``dst`` atomically (temp file + rename), refusing to overwrite unless force."""
    dst = Path(dst)
    _check_output(dst, force)
    with _named(dst):
        _write_atomic(data, dst, force)
    return dst


def compress_file(src, dst=None, *, level: int | None = None, model: str | None = None,
                  workers: int = 0, force: bool = False, progress: bool = False,
                  verify: bool = False, remove_source: bool = False,
                  transcode: bool = False) -> Path:
    """Compress ``src`` to ``dst`` (default ``src + ".mzp"``) and return the output path.

    ``verify`` decodes the written archive and checks it restores the input before the output
    is renamed into place; ``remove_source`` implies it and deletes ``src`` afterwards.
    ``transcode`` as in :func:`load_file` (transcoded DICOM files restore uncompressed, so
    verification checks against the uncompressed rewrite).
    """
    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_name(src.name + ARCHIVE_SUFFIX)
    workers = resolve_workers(workers)
    if remove_source and src.is_dir():
        raise MedzipError(f"{src}: is a folder; --rm / remove_source deletes single files only")
    _check_output(dst, force, src)
    with _named(src):
        adapter, payload = _read_payload(src, transcode)
        data, payload = api.compress_smallest(payload, _whole_file(src), level=level,
                                              model=model, workers=workers, progress=progress)
        adapter = _adapter_for(payload.meta)
    check = None
    if verify or remove_source:
        def check(tmp):
            with _named(dst):
                _verify_archive(tmp, payload, adapter, workers, progress, model)
    with _named(dst):
        _write_atomic(data, dst, force, check)
    if remove_source:
        with _named(src):
            src.unlink()
    return dst


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
        name = Path(archive).name
        stem = name[:-len(ARCHIVE_SUFFIX)] if name.lower().endswith(ARCHIVE_SUFFIX) else name
        return Path(archive).with_name((stem or "array") + ".npy")

    def describe(self, meta: dict) -> list[str]:
        return ["array compressed with medzip.compress(); restores as .npy"]


def _adapter_for(meta: dict):
    fmt = (meta or {}).get("format", "array")
    return _ArrayAdapter() if fmt == "array" else adapter_by_name(fmt)


def _decode(data, label, workers: int, progress: bool, model: str | None = None):
    with _named(label):
        payload = api.decompress_payload(data, workers=resolve_workers(workers), progress=progress,
                                         model=model)
        return _adapter_for(payload.meta), payload


def _planned_output(data, archive: Path) -> Path | None:
    """Default output from the header alone, so an existing output is refused before decoding.

    Adapters derive ``default_output`` from ``payload.meta`` (no voxels needed).
    """
    try:
        meta = api.inspect(data).get("source") or {}
        return _adapter_for(meta).default_output(Payload([], {}, meta), archive)
    except Exception:  # a damaged header is reported properly by the full decode
        return None


def decompress_bytes(data, dst, *, workers: int = 0, force: bool = False,
                     progress: bool = False, name: str = "<stdin>",
                     model: str | None = None) -> list[Path]:
    """Restore an in-memory archive to ``dst``; returns the written paths."""
    dst = Path(dst)
    with _named(dst):
        _check_output(dst, force)
    adapter, payload = _decode(data, name, workers, progress, model)
    return _restore(adapter, payload, dst, force)


def _restore(adapter, payload: Payload, dst: Path, force: bool) -> list[Path]:
    """Let the adapter write into a private folder beside ``dst``, then move the results into
    place; adapters may write several files (or a folder) and always check their hashes."""
    with _named(dst):
        _check_output(dst, force)
        stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".medzip-tmp", dir=dst.parent))
        try:
            written = [Path(p) for p in adapter.write(payload, stage / dst.name)]
            tops = sorted(stage.iterdir())
            for top in tops:
                _check_output(dst.parent / top.name, force)
            for top in tops:
                os.replace(top, dst.parent / top.name)
            return [dst.parent / p.relative_to(stage) for p in written]
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def decompress_file(src, dst=None, *, workers: int = 0, force: bool = False,
                    progress: bool = False, remove_source: bool = False,
                    model: str | None = None) -> list[Path]:
    """Restore the original file(s) from ``src``; default output from the format adapter
    (``x.nii.gz.mzp`` -> ``x.nii.gz``). ``remove_source`` deletes the archive after a good write."""
    src = Path(src)
    data = read_input(src)
    if dst is None:
        planned = _planned_output(data, src)
        if planned is not None:
            with _named(planned):
                _check_output(planned, force, src)
    adapter, payload = _decode(data, src, workers, progress, model)
    out = Path(dst) if dst is not None else adapter.default_output(payload, src)
    with _named(out):
        _check_output(out, force, src)
    written = _restore(adapter, payload, out, force)
    if remove_source:
        with _named(src):
            src.unlink()
    return written


def decompress_to_stream(data, stream, *, workers: int = 0, progress: bool = False,
                         name: str = "<stdin>", model: str | None = None) -> int:
    """Restore a single-file archive and copy its bytes to a binary ``stream``."""
    adapter, payload = _decode(data, name, workers, progress, model)
    with tempfile.TemporaryDirectory(prefix="medzip-") as tmp, _named(name):
        base = Path("stdin.mzp") if name == "<stdin>" else Path(name)  # '<' is not portable
        target = Path(tmp) / adapter.default_output(payload, base).name
        written = adapter.write(payload, target)
        if len(written) != 1 or not Path(written[0]).is_file():
            raise MedzipError(f"{name}: archive restores {len(written)} files; "
                              "use -o FOLDER instead of stdout")
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
    """Decode everything and check every checksum, including the restored file's SHA-256,
    without writing anything (adapters without ``verify`` restore into a temp folder)."""
    adapter, payload = _decode(data, name, workers, progress, model)
    with _named(name):
        if hasattr(adapter, "verify"):
            adapter.verify(payload)
        else:
            with tempfile.TemporaryDirectory(prefix="medzip-test-") as tmp:
                adapter.write(payload, adapter.default_output(payload, Path(tmp) / "restored.mzp"))
        return {"path": str(name), "ok": True, **api.inspect(data)}


def test_file(path, workers: int = 0, progress: bool = False, model: str | None = None) -> dict:
    path = Path(path)
    return test_bytes(read_input(path), workers=workers, progress=progress, name=str(path),
                      model=model)


# Keep pytest from collecting the public ``test_*`` helpers when a test module imports them.
test_bytes.__test__ = False  # type: ignore[attr-defined]
test_file.__test__ = False  # type: ignore[attr-defined]


def info_bytes(data, *, name: str = "<stdin>") -> dict:
    """Header summary without decoding voxels; ``details`` are the adapter's describe() lines."""
    with _named(name):
        info = {"path": str(name), **api.inspect(data)}
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
