"""What runs inside one Dask task (or in-process): compress, verify, restore one job.

Every task writes its own output atomically (temp file beside the target, then rename, as
``medzip.files`` does), so a worker or client killed at any moment leaves either nothing or a
complete file; a stale temp file is removed by the next run. Tasks return plain dicts (picklable,
cheap to ship back); a :class:`MedzipError` (bad input, damaged archive) is returned as a failed
result rather than raised, so Dask does not retry a failure that would only repeat. Other
exceptions (an NFS hiccup) propagate and Dask's ``retries`` redo the task.

Each task codes with ``workers=1``: parallelism comes from running many tasks at once.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path

from .. import api, files
from ..container import section_refs
from ..errors import CorruptStreamError, MedzipError
from .planner import CODED, TMP_SUFFIX, VERBATIM, Job, job_digest, source_digests


def _result(job: Job, status: str, t0: float, **extra) -> dict:
    return {"path": job.rel, "status": status, "archive": job.output, "duration_s":
            time.perf_counter() - t0, "worker_pid": os.getpid(), **extra}


def copy_atomic(src: Path, dst: Path, expect_sha256: str, what: str) -> None:
    """Copy ``src`` to ``dst`` through a temp file + rename, only if the copied bytes have the
    expected SHA-256 (else nothing is left at ``dst``: CorruptStreamError naming ``what``)."""
    tmp = dst.with_name(f".{dst.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    h = hashlib.sha256()
    try:
        with open(src, "rb") as fi, open(tmp, "xb") as fo:
            while chunk := fi.read(1 << 22):
                h.update(chunk)
                fo.write(chunk)
            fo.flush()
            os.fsync(fo.fileno())
        if h.hexdigest() != expect_sha256:
            raise CorruptStreamError(f"{what}: SHA-256 mismatch (changed or damaged)")
        os.replace(tmp, dst)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _recorded_hashes(node) -> set[str]:
    """Every SHA-256 the format adapter recorded for the original file(s) (``*sha256`` keys)."""
    out: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str) and key.endswith("sha256"):
                out.add(value)
            else:
                out |= _recorded_hashes(value)
    elif isinstance(node, list):
        for value in node:
            out |= _recorded_hashes(value)
    return out


def archive_matches(archive: Path, digests: dict[str, str]) -> dict | None:
    """Cheap check that ``archive`` is a complete, undamaged archive *of these source files*.

    Reads the archive once: header CRC, the CRC-32 of every section it references (all coded
    chunks, model parameters and members), and the SHA-256 that the format adapter recorded for
    each original file must include every source file's current SHA-256. No voxel is decoded
    (``medzip.api.verify`` / ``--verify`` does that). Returns ``files.info_bytes`` or None.
    """
    try:
        data = archive.read_bytes()
        parsed = api.Archive(data)  # magic, version, header CRC, header structure
        for i, ref in enumerate(section_refs(parsed.container.header)):
            parsed.container.section(ref, f"section {i}")
        recorded = _recorded_hashes(parsed.source)
        if not recorded or not set(digests.values()) <= recorded:
            return None
        return files.info_bytes(data, name=str(archive))
    except (OSError, MedzipError):  # missing, unreadable, damaged: not done
        return None


def compress_job(src_root: str, dst_root: str, job: Job, options: dict) -> dict:
    """Compress (or copy) one job into DST; never raises a MedzipError."""
    t0 = time.perf_counter()
    src, out = Path(src_root) / job.rel, Path(dst_root) / job.output
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        digests = source_digests(Path(src_root), job)
        if job.kind == VERBATIM:
            sha = job_digest(digests)
            copy_atomic(src, out, sha, f"{src} (copy)")
            return _result(job, "done", t0, source_sha256=sha, files=file_rows(job, digests),
                           archive_bytes=job.size, bits_per_voxel=None, verified=True)
        files.compress_file(src, out, level=options.get("level"), model=options.get("model"),
                            workers=1, force=True, verify=bool(options.get("verify")))
        info = files.info_file(out)
        if source_digests(Path(src_root), job) != digests:
            raise MedzipError(f"{job.rel}: changed while being compressed")
        return _result(job, "done", t0, source_sha256=job_digest(digests),
                       files=file_rows(job, digests), archive_bytes=info["compressed_bytes"],
                       bits_per_voxel=info["bits_per_voxel"], verified=bool(options.get("verify")))
    except MedzipError as exc:
        return _result(job, "failed", t0, error=" ".join(str(exc).splitlines()))


def verify_job(dst_root: str, job: Job) -> dict:
    """Decode an existing archive completely (``medzip test``: voxels, members and the restored
    files' SHA-256) so that an archive adopted on a rerun is recorded as verified."""
    t0 = time.perf_counter()
    try:
        files.test_file(Path(dst_root) / job.output, workers=1)
        return _result(job, "done", t0, verified=True)
    except MedzipError as exc:
        return _result(job, "failed", t0, error=" ".join(str(exc).splitlines()))


def file_rows(job: Job, digests: dict[str, str]) -> list[dict]:
    """The manifest's per-file restore plan: path, size, mode, mtime, SHA-256."""
    return [{"rel": f.rel, "size": f.size, "mode": f.mode, "mtime_ns": f.mtime_ns,
             "sha256": digests[f.rel]} for f in job.files]


def _restored_already(out_root: Path, rows: list[dict]) -> bool:
    return all((out_root / r["rel"]).is_file() and (out_root / r["rel"]).stat().st_size == r["size"]
               and files.file_sha256(out_root / r["rel"]) == r["sha256"] for r in rows)


def restore_job(dst_root: str, out_root: str, entry: dict, force: bool = False) -> dict:
    """Restore one manifest entry (``path``, ``kind``, ``archive``, ``files``) under OUT, then
    give every file its recorded mode and mtime. Files already restored identically are kept."""
    t0 = time.perf_counter()
    job = Job(entry["path"], entry["kind"], entry.get("format") or "", [])
    out_root, rows = Path(out_root), entry["files"]
    target = out_root / entry["path"]
    result = {"path": entry["path"], "status": "done", "archive": entry["archive"],
              "worker_pid": os.getpid()}
    try:
        if rows and _restored_already(out_root, rows):
            result["skipped"] = True
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            archive = Path(dst_root) / entry["archive"]
            if job.kind == VERBATIM:
                if os.path.lexists(target) and not force:
                    raise MedzipError(f"{target}: already exists (use --force to overwrite)")
                copy_atomic(archive, target, entry["source_sha256"], f"{archive} (stored copy)")
            elif job.kind == CODED:
                files.decompress_file(archive, target, workers=1, force=force)
            else:
                raise MedzipError(f"{entry['path']}: nothing to restore ({job.kind})")
        for r in rows:
            p = out_root / r["rel"]
            os.chmod(p, r["mode"])
            os.utime(p, ns=(r["mtime_ns"], r["mtime_ns"]))
    except MedzipError as exc:
        result.update(status="failed", error=" ".join(str(exc).splitlines()))
    except OSError as exc:
        result.update(status="failed", error=f"{exc.filename or target}: {exc.strerror or exc}")
    result["duration_s"] = time.perf_counter() - t0
    return result
