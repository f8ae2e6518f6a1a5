"""Run batch jobs on ``dask.distributed``: an embedded LocalCluster or an existing scheduler.

Dask does the scheduling, worker failure handling and retries; this module only plans, skips
what is already finished, submits one task per job and records each result in the manifest as
it arrives. A task whose worker dies is re-run by the scheduler on another worker (up to
``distributed.scheduler.allowed-failures`` times, then reported as failed); a task that raises
is retried ``retries`` times. Outputs are written by the tasks themselves, atomically.

The embedded cluster is safe by default: scheduler and workers listen on 127.0.0.1 only and the
dashboard is off. One single-threaded worker process per core (``--workers`` to change).
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MedzipError
from ..files import file_sha256, resolve_workers
from . import tasks
from .manifest import Manifest
from .planner import CODED, MANIFEST_NAME, SKIPPED, TMP_SUFFIX, VERBATIM, Job, plan, \
    job_digest, source_digests

LOCK_NAME = ".medzip-batch.lock"


@dataclass
class BatchReport:
    planned: int = 0
    reused: int = 0  # finished outputs found intact and kept
    ran: int = 0
    failures: list = field(default_factory=list)  # [(path, error)]
    skipped: list = field(default_factory=list)  # [(path, reason)]
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    cluster: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures


# ---- cluster ----------------------------------------------------------------------------------

def _distributed():
    try:
        import distributed
    except ImportError:
        raise MedzipError("medzip batch needs Dask: pip install 'medzip[batch]' (distributed)") from None
    return distributed


@contextmanager
def dask_client(scheduler: str | None = None, workers: int = 0, n_jobs: int = 1):
    """A Client on ``scheduler`` (or ``DASK_SCHEDULER_ADDRESS`` / dask config), else on an
    embedded loopback-only LocalCluster of single-threaded worker processes."""
    distributed = _distributed()
    import dask

    address = scheduler or dask.config.get("scheduler-address", None)
    if address:
        try:
            client = distributed.Client(address, timeout="30s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise MedzipError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        with client:
            yield client
        return
    n = max(1, min(resolve_workers(workers), n_jobs))
    # Processes, one thread each: a task codes with workers=1, so cores = worker processes.
    # memory_limit=0: a large series must not get its worker killed by the nanny's estimate.
    with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  memory_limit=0, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        yield client


def _describe(client) -> str:
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(w.get("nthreads", 1) for w in workers.values())
    return f"{info.get('address')} ({len(workers)} workers, {threads} threads)"


# ---- progress ---------------------------------------------------------------------------------

class _Progress:
    """Files, bytes, ETA and the running ratio on stderr (rich); silent when disabled."""

    def __init__(self, enabled: bool, total_files: int, total_bytes: int, label: str):
        self.files, self.total_files = 0, total_files
        self.bytes_in = self.bytes_out = 0
        self.bar = None
        if enabled and total_files:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                       TimeRemainingColumn, TransferSpeedColumn)

            self.bar = Progress(TextColumn(label), TextColumn("{task.fields[files]}"), BarColumn(),
                                DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                TextColumn("ratio {task.fields[ratio]}"),
                                console=Console(stderr=True), transient=False)
            self.task = self.bar.add_task(label, total=max(total_bytes, 1), files=self._files(),
                                          ratio="-")
            self.bar.start()

    def _files(self) -> str:
        return f"{self.files}/{self.total_files} files"

    def advance(self, size: int, out_bytes: int | None) -> None:
        self.files += 1
        if out_bytes:
            self.bytes_in += size
            self.bytes_out += out_bytes
        if self.bar is not None:
            ratio = f"{self.bytes_in / self.bytes_out:.2f}x" if self.bytes_out else "-"
            self.bar.update(self.task, advance=size, files=self._files(), ratio=ratio)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---- shared plumbing --------------------------------------------------------------------------

@contextmanager
def _locked(folder: Path):
    """One batch at a time per DST / OUT: stale temp files may then be removed safely."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MedzipError(f"{folder}: another medzip batch is running on this folder") from None
        yield
    finally:
        os.close(fd)


def remove_stale_temps(folder: Path) -> int:
    """Delete leftovers of interrupted atomic writes (``.NAME.XXXX.medzip-tmp``)."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*filenames, *dirnames]:
            if name.startswith(".") and name.endswith(TMP_SUFFIX):
                p = Path(dirpath) / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                    dirnames.remove(name)
                else:
                    p.unlink(missing_ok=True)
                n += 1
    return n


def _run_tasks(client, submit_args: list, retries: int, on_result) -> None:
    """Submit every task, then record results as they complete (in any order)."""
    distributed = _distributed()
    futures = {}
    for job, fn, args in submit_args:
        fut = client.submit(fn, *args, key=f"medzip-{fn.__name__}-{os.urandom(6).hex()}",
                            pure=False, retries=retries)
        futures[fut] = job
    try:
        for fut in distributed.as_completed(list(futures), loop=client.loop):
            job = futures.pop(fut)
            try:
                res = fut.result()
            except Exception as exc:  # KilledWorker after repeated worker deaths, or retries spent
                res = {"path": job.rel, "status": "failed", "archive": job.output,
                       "error": f"{type(exc).__name__}: {' '.join(str(exc).splitlines())}"}
            on_result(job, res)
    finally:
        if futures:
            client.cancel(list(futures))


def _check_trees(src: Path, dst: Path) -> None:
    if not src.is_dir():
        raise MedzipError(f"{src}: not a folder")
    s, d = src.resolve(), dst.resolve()
    if s == d or s in d.parents or d in s.parents:
        raise MedzipError(f"{dst}: output and input folders must not contain each other")


# ---- compress ---------------------------------------------------------------------------------

def _existing(src: Path, dst: Path, job: Job):
    """Details of a job's output when it already exists, is intact and is the output of the
    current source files (sources re-hashed, archive checked by tasks.archive_matches); else
    None (the job runs again and overwrites it)."""
    out = dst / job.output
    if not out.is_file():
        return None
    digests = source_digests(src, job)
    if job.kind == VERBATIM:
        if file_sha256(out) != job_digest(digests):
            return None
        return {"digests": digests, "archive_bytes": out.stat().st_size}
    info = tasks.archive_matches(out, digests)
    if info is None:
        return None
    return {"digests": digests, "archive_bytes": info["compressed_bytes"],
            "bits_per_voxel": info["bits_per_voxel"]}


def compress_tree(src, dst, *, scheduler: str | None = None, workers: int = 0,
                  level: int | None = None, model: str | None = None, verify: bool = False,
                  retries: int = 2, progress: bool = False, log=None) -> BatchReport:
    """Mirror SRC into DST (module docstring of planner.py); resumable, see docs/BATCH.md."""
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    _check_trees(src, dst)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    dst.mkdir(parents=True, exist_ok=True)
    report = BatchReport()
    with ExitStack() as stack:
        stack.enter_context(_locked(dst))
        remove_stale_temps(dst)
        jobs = plan(src)
        report.planned = len(jobs)
        manifest = stack.enter_context(Manifest(dst, create=True))
        manifest.set_info(source=str(src.resolve()), started=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                            time.gmtime()))
        planned_rows = []  # recorded in one transaction below
        for job in jobs:
            if job.kind == SKIPPED:
                planned_rows.append({"path": job.rel, "kind": job.kind, "format": job.fmt,
                                     "status": "skipped", "error": job.note, "archive": None})
                report.skipped.append((job.rel, job.note))
        work = [j for j in jobs if j.kind != SKIPPED]
        # Reruns: every existing output is checked (sources re-hashed, archive CRCs read) in
        # threads here, so a finished DST costs no cluster start-up at all.
        with ThreadPoolExecutor(max_workers=4) as pool:
            found = list(pool.map(lambda j: _existing(src, dst, j), work))
        rows = {r["path"]: r for r in manifest.rows()}
        todo: list[tuple[Job, object, tuple]] = []
        options = {"level": level, "model": model, "verify": verify}
        for job, details in zip(work, found):
            prev = rows.get(job.rel) or {}
            state = "redo" if details is None else "done"
            same = bool(details) and prev.get("source_sha256") == job_digest(details["digests"])
            if state == "done" and verify and job.kind == CODED and not (same and prev.get("verified")):
                state = "verify"  # intact, but never decoded: --verify wants proof
            if state == "done":
                planned_rows.append({
                    "path": job.rel, "kind": job.kind, "format": job.fmt, "size": job.size,
                    "source_sha256": job_digest(details["digests"]), "status": "done",
                    "archive": job.output, "archive_bytes": details["archive_bytes"],
                    "bits_per_voxel": details.get("bits_per_voxel"),
                    "duration_s": (prev.get("duration_s") or 0.0) if same else 0.0,
                    "verified": 1 if job.kind == VERBATIM else int(same and bool(prev.get("verified"))),
                    "error": None, "files": tasks.file_rows(job, details["digests"])})
                report.reused += 1
                report.bytes_in += job.size
                report.bytes_out += details["archive_bytes"]
            elif state == "verify":
                planned_rows.append({"path": job.rel, "kind": job.kind, "format": job.fmt,
                                 "size": job.size, "status": "pending", "archive": job.output,
                                 "files": tasks.file_rows(job, details["digests"]),
                                 "source_sha256": job_digest(details["digests"]),
                                 "archive_bytes": details["archive_bytes"],
                                 "bits_per_voxel": details.get("bits_per_voxel")})
                todo.append((job, tasks.verify_job, (str(dst), job)))
            else:
                planned_rows.append({"path": job.rel, "kind": job.kind, "format": job.fmt,
                                 "size": job.size, "status": "pending", "archive": job.output,
                                 "verified": 0, "error": None})
                todo.append((job, tasks.compress_job, (str(src), str(dst), job, options)))
        manifest.upsert_many(planned_rows)
        if report.reused:
            log(f"{report.reused} of {len(work)} inputs already done in {dst} (checked, kept)")
        if todo:
            # Big inputs first: the last task to finish is then a small one.
            todo.sort(key=lambda t: -t[0].size)
            client = stack.enter_context(dask_client(scheduler, workers, len(todo)))
            report.cluster = _describe(client)
            log(f"medzip batch: {len(todo)} inputs on {report.cluster}")
            bar = _Progress(progress, len(todo), sum(t[0].size for t in todo), "compress")
            stack.callback(bar.close)

            def record(job: Job, res: dict) -> None:
                row = {"path": job.rel, "kind": job.kind, "format": job.fmt, "size": job.size,
                       "status": res["status"], "archive": job.output,
                       "duration_s": res.get("duration_s"), "error": res.get("error")}
                for key in ("source_sha256", "archive_bytes", "bits_per_voxel", "files"):
                    if key in res:
                        row[key] = res[key]
                if "verified" in res:
                    row["verified"] = int(bool(res["verified"]))
                manifest.upsert(row)
                report.ran += 1
                if res["status"] == "done":
                    out_bytes = res.get("archive_bytes") or (manifest.row(job.rel) or {}).get(
                        "archive_bytes") or 0
                    report.bytes_in += job.size
                    report.bytes_out += out_bytes
                    bar.advance(job.size, out_bytes)
                else:
                    report.failures.append((job.rel, res.get("error") or "failed"))
                    bar.advance(job.size, None)

            _run_tasks(client, todo, retries, record)
        remove_stale_temps(dst)
        manifest.set_info(finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    report.seconds = time.perf_counter() - t0
    return report


# ---- decompress -------------------------------------------------------------------------------

def decompress_tree(dst, out, *, scheduler: str | None = None, workers: int = 0,
                    force: bool = False, retries: int = 2, progress: bool = False,
                    log=None) -> BatchReport:
    """Restore every finished input recorded in DST's manifest under OUT, with file modes."""
    t0 = time.perf_counter()
    dst, out = Path(dst), Path(out)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if not (dst / MANIFEST_NAME).is_file():
        raise MedzipError(f"{dst}: no {MANIFEST_NAME}; not a medzip batch output")
    _check_trees(dst, out)
    out.mkdir(parents=True, exist_ok=True)
    report = BatchReport()
    with ExitStack() as stack:
        manifest = stack.enter_context(Manifest(dst))
        stack.enter_context(_locked(out))
        remove_stale_temps(out)
        rows = [r for r in manifest.rows("done") if r["kind"] in (CODED, VERBATIM)]
        report.planned = len(rows)
        for r in manifest.rows():
            if r["status"] != "done" and r["kind"] != SKIPPED:
                report.failures.append((r["path"], f"not restored: compress status {r['status']}"
                                        + (f" ({r['error']})" if r["error"] else "")))
        todo = [(Job(r["path"], r["kind"], r["format"] or ""), tasks.restore_job,
                 (str(dst), str(out), r, force)) for r in rows]
        sizes = {r["path"]: r["size"] or 0 for r in rows}
        stored = {r["path"]: r["archive_bytes"] or 0 for r in rows}
        if todo:
            todo.sort(key=lambda t: -sizes[t[0].rel])
            client = stack.enter_context(dask_client(scheduler, workers, len(todo)))
            report.cluster = _describe(client)
            bar = _Progress(progress, len(todo), sum(sizes.values()), "restore")
            stack.callback(bar.close)

            def record(job: Job, res: dict) -> None:
                if res["status"] == "done":
                    report.reused += bool(res.get("skipped"))
                    report.ran += not res.get("skipped")
                    report.bytes_in += stored[job.rel]  # archives read -> original bytes written
                    report.bytes_out += sizes[job.rel]
                    bar.advance(sizes[job.rel], stored[job.rel])
                else:
                    report.ran += 1
                    report.failures.append((job.rel, res.get("error") or "failed"))
                    bar.advance(sizes[job.rel], None)

            _run_tasks(client, todo, retries, record)
        remove_stale_temps(out)
    try:
        (out / LOCK_NAME).unlink()
    except OSError:
        pass
    report.seconds = time.perf_counter() - t0
    return report
