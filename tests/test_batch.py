"""``medzip batch``: real Dask clusters on 127.0.0.1, killed workers and a killed client.

Data: files shipped in the nibabel and pydicom wheels (a 2-slice Siemens DICOM series, NIfTI
volumes, a CT slice), so the tests run without ../shared. Every server is bound to 127.0.0.1,
every wait is bounded, and every process a test starts is stopped by its pid (process group).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from medzip.batch.executor import compress_tree, decompress_tree  # noqa: E402
from medzip.batch.planner import CODED, MANIFEST_NAME, SKIPPED, VERBATIM, plan  # noqa: E402
from medzip.cli import main  # noqa: E402

NIBABEL_DATA = Path(__import__("nibabel").__file__).parent / "tests" / "data"
PYDICOM_DATA = Path(__import__("pydicom").__file__).parent / "data" / "test_files"
BIN = Path(sys.executable).parent
DEADLINE = 120  # seconds any single wait in this file may take


def _tree_listing(root: Path) -> dict:
    """Every file under root: relative path -> (bytes, permission bits)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*")) if p.is_file()}


def _example4d_slabs(n: int) -> list[np.ndarray]:
    import nibabel

    vol = np.asanyarray(nibabel.load(str(NIBABEL_DATA / "example4d.nii.gz")).dataobj.get_unscaled()).T
    vol = np.ascontiguousarray(vol.reshape(-1, *vol.shape[-2:]))  # 48 real slices, 96 x 128
    step = len(vol) // n
    return [vol[i * step:(i + 1) * step] for i in range(n)]


@pytest.fixture()
def small_tree(tmp_path) -> Path:
    """A study tree: a DICOM series folder, a NIfTI, a .npy, text files with odd modes."""
    src = tmp_path / "src"
    series = src / "patient1" / "study1" / "series_t1"
    series.mkdir(parents=True)
    for name in ("0.dcm", "1.dcm"):
        shutil.copyfile(NIBABEL_DATA / name, series / name)
    shutil.copyfile(NIBABEL_DATA / "anatomical.nii", src / "patient1" / "anat.nii")
    import pydicom

    ct = pydicom.dcmread(PYDICOM_DATA / "CT_small.dcm")
    np.save(src / "patient1" / "ct_slice.npy", ct.pixel_array[None])
    (src / "README.txt").write_text("study export\n")
    (src / "README.txt").chmod(0o600)
    (src / "patient1" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "patient1" / "run.sh").chmod(0o755)
    return src


@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster on 127.0.0.1, no dashboard: one worker with two threads in this
    process, so tasks call medzip concurrently (the re-entrant core); the embedded default of
    worker processes is exercised by the client-kill test, separate processes by the worker-kill
    test."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  protocol="tcp", host="127.0.0.1", dashboard_address=None,
                                  silence_logs=40) as c:
        assert c.scheduler_address.startswith("tcp://127.0.0.1:")
        yield c.scheduler_address


def _rows(dst: Path) -> dict:
    with sqlite3.connect(dst / MANIFEST_NAME) as db:
        return {r[0]: r[1:] for r in db.execute(
            "SELECT path, status, archive, duration_s, error FROM inputs")}


def _done_count(dst: Path) -> int:
    try:
        with sqlite3.connect(f"file:{dst / MANIFEST_NAME}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM inputs WHERE status='done'").fetchone()[0]
    except sqlite3.Error:  # not created yet, or locked by the writer this instant
        return 0


def _stop_group(proc: subprocess.Popen) -> None:
    """Kill what a test started (its own process group) and reap it; bounded."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    _wait_group_gone(proc.pid)


def _wait_group_gone(pgid: int, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(pgid, signal.SIGKILL)  # children (nanny, workers) of a killed client: ours
    time.sleep(0.5)


def _wait_for(predicate, what: str, proc: subprocess.Popen | None = None, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ---- planner ------------------------------------------------------------------------------------

def test_plan_decides_jobs(small_tree):
    (small_tree / "patient1" / "anat.nii.mzp").write_bytes(b"not ours")  # collides with anat.nii
    os.symlink(small_tree / "README.txt", small_tree / "link.txt")
    jobs = {j.rel: j for j in plan(small_tree)}
    series = jobs["patient1/study1/series_t1"]
    assert (series.kind, series.fmt, series.is_dir, series.output) == (
        CODED, "dicom", True, "patient1/study1/series_t1.mzp")
    assert [f.rel for f in series.files] == ["patient1/study1/series_t1/0.dcm",
                                             "patient1/study1/series_t1/1.dcm"]
    assert (jobs["patient1/anat.nii"].fmt, jobs["patient1/ct_slice.npy"].fmt) == ("nifti", "npy")
    assert jobs["README.txt"].kind == VERBATIM and jobs["README.txt"].output == "README.txt"
    assert jobs["link.txt"].kind == SKIPPED
    # the verbatim file named like anat.nii's archive loses: one output path, one writer
    assert jobs["patient1/anat.nii.mzp"].kind == SKIPPED
    assert "taken by patient1/anat.nii" in jobs["patient1/anat.nii.mzp"].note


def test_plan_detached_nrrd_data_is_part_of_its_header_job(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "v.raw").write_bytes(np.arange(24, dtype="<i2").tobytes())
    (src / "v.nhdr").write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 2 3 4\n"
                                "encoding: raw\nendian: little\ndata file: v.raw\n\n")
    jobs = plan(src)
    assert [(j.rel, j.kind, [f.rel for f in j.files]) for j in jobs] == [
        ("v.nhdr", CODED, ["v.nhdr", "v.raw"])]


# ---- a real LocalCluster round trip ---------------------------------------------------------------

def test_round_trip_on_local_cluster(small_tree, tmp_path, cluster, capsys):
    dst, out = tmp_path / "dst", tmp_path / "out"
    assert main(["batch", "compress", str(small_tree), str(dst), "--scheduler", cluster,
                 "--verify", "--no-progress"]) == 0
    rows = _rows(dst)
    assert {p: r[0] for p, r in rows.items()} == {
        "README.txt": "done", "patient1/anat.nii": "done", "patient1/ct_slice.npy": "done",
        "patient1/run.sh": "done", "patient1/study1/series_t1": "done"}
    assert (dst / "patient1" / "study1" / "series_t1.mzp").is_file()
    assert main(["batch", "decompress", str(dst), str(out), "--scheduler", cluster,
                 "--no-progress"]) == 0
    assert _tree_listing(out) == _tree_listing(small_tree)  # bytes and modes

    capsys.readouterr()
    assert main(["batch", "status", str(dst), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["inputs"] == 5 and status["by_status"] == {"done": 5} and status["failures"] == []
    assert status["bytes_in"] == sum(p.stat().st_size for p in small_tree.rglob("*") if p.is_file())
    assert status["ratio"] > 1.0

    # A rerun on the finished DST recompresses nothing: archives keep inode and mtime.
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dst.rglob("*.mzp")}
    report = compress_tree(small_tree, dst, scheduler=cluster, verify=True)
    assert (report.ran, report.reused, report.failures) == (0, 5, [])
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dst.rglob("*.mzp")} == before

    # A damaged archive is not trusted: it is found by its CRCs and redone.
    damaged = dst / "patient1" / "anat.nii.mzp"
    blob = bytearray(damaged.read_bytes())
    blob[-10] ^= 0xFF
    damaged.write_bytes(bytes(blob))
    report = compress_tree(small_tree, dst, scheduler=cluster)
    assert (report.ran, report.reused, report.failures) == (1, 4, [])
    shutil.rmtree(out)
    assert decompress_tree(dst, out, scheduler=cluster).ok
    assert _tree_listing(out) == _tree_listing(small_tree)

    # A damaged stored copy is refused on restore (nothing written) and recopied on a rerun.
    (dst / "README.txt").write_text("study exporT\n")
    report = decompress_tree(dst, tmp_path / "out2", scheduler=cluster)
    assert [p for p, _ in report.failures] == ["README.txt"]
    assert "SHA-256 mismatch" in report.failures[0][1]
    assert not (tmp_path / "out2" / "README.txt").exists()
    assert compress_tree(small_tree, dst, scheduler=cluster).ran == 1
    assert (dst / "README.txt").read_bytes() == (small_tree / "README.txt").read_bytes()


def test_failing_inputs_do_not_stop_the_batch(tmp_path, cluster, capsys):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    np.save(src / "float.npy", np.linspace(0, 1, 64, dtype=np.float32).reshape(4, 4, 4))
    good = _example4d_slabs(8)[0]
    np.save(src / "good.npy", good)
    nii = (NIBABEL_DATA / "example4d.nii.gz").read_bytes()
    (src / "truncated.nii.gz").write_bytes(nii[: len(nii) // 2])
    capsys.readouterr()
    assert main(["batch", "compress", str(src), str(dst), "--scheduler", cluster,
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "FAILED float.npy" in err and "FAILED truncated.nii.gz" in err
    assert "good.npy" not in err.replace("FAILED", "")
    assert main(["batch", "status", str(dst), "--json"]) == 1
    status = json.loads(capsys.readouterr().out)
    assert [f["path"] for f in status["failures"]] == ["float.npy", "truncated.nii.gz"]
    assert status["by_status"] == {"done": 1, "failed": 2}
    assert np.array_equal(np.load(src / "good.npy"), good)
    out = tmp_path / "out"
    report = decompress_tree(dst, out, scheduler=cluster)
    assert sorted(p for p, _ in report.failures) == ["float.npy", "truncated.nii.gz"]
    assert (out / "good.npy").read_bytes() == (src / "good.npy").read_bytes()
    assert not (out / "float.npy").exists()


# ---- killed worker on a separately started cluster -------------------------------------------------

def _slab_tree(root: Path, n: int) -> Path:
    root.mkdir()
    for i, slab in enumerate(_example4d_slabs(n)):
        np.save(root / f"slab{i:02d}.npy", slab)
    return root


def _start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # own process group: stopped by its pid


def test_worker_killed_mid_run_on_external_cluster(tmp_path):
    src = _slab_tree(tmp_path / "src", 8)
    dst, out = tmp_path / "dst", tmp_path / "out"
    sched_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(_start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(sched_file)],
                            tmp_path / "scheduler.log"))
        _wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0,
                  "the scheduler file", procs[0])
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        workers = [_start([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny",
                           "--no-dashboard", "--host", "127.0.0.1"], tmp_path / f"worker{i}.log")
                   for i in range(2)]
        procs += workers
        # The scheduler comes from Dask's own setting this time, not --scheduler.
        client = _start([str(BIN / "medzip"), "batch", "compress", str(src), str(dst),
                         "--no-progress"], tmp_path / "client.log",
                        env={**os.environ, "DASK_SCHEDULER_ADDRESS": address})
        procs.append(client)
        _wait_for(lambda: _done_count(dst) >= 1, "a first finished input", client)
        assert _done_count(dst) < 8, "the batch finished before a worker could be killed"
        os.kill(workers[0].pid, signal.SIGKILL)  # mid-run: the other worker must finish it all
        client.wait(timeout=DEADLINE)
        log = (tmp_path / "client.log").read_text()
        assert client.returncode == 0, log
        assert f"on {address}" in log  # it ran on that cluster, not an embedded one
        assert workers[0].wait(timeout=10) == -signal.SIGKILL
        assert {r[0] for r in _rows(dst).values()} == {"done"}
        assert not list(dst.rglob("*.medzip-tmp"))
        assert main(["batch", "decompress", str(dst), str(out), "--scheduler", address,
                     "--no-progress", "-q"]) == 0
        assert _tree_listing(out) == _tree_listing(src)
    finally:
        for proc in reversed(procs):
            _stop_group(proc)


# ---- killed client, then resumed ------------------------------------------------------------------

def test_client_sigkill_then_resume_keeps_finished_archives(tmp_path, cluster):
    src = _slab_tree(tmp_path / "src", 8)
    dst, out = tmp_path / "dst", tmp_path / "out"
    # The default path: an embedded LocalCluster inside the client process (1 worker process).
    client = _start([str(BIN / "medzip"), "batch", "compress", str(src), str(dst), "-j", "1",
                     "--no-progress"], tmp_path / "client.log")
    try:
        _wait_for(lambda: _done_count(dst) >= 2, "two finished inputs", client)
        os.kill(client.pid, signal.SIGKILL)
        client.wait(timeout=30)
        _wait_group_gone(client.pid)  # its worker processes exit when their parent dies
    finally:
        _stop_group(client)
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in dst.glob("*.mzp")}
    assert 2 <= len(finished) < 8, (tmp_path / "client.log").read_text()

    # --verify: the archives finished before the kill were never decoded, so they get a
    # verification task (full decode) instead of being recompressed; the rest is compressed.
    report = compress_tree(src, dst, scheduler=cluster, verify=True)
    assert report.failures == [] and report.reused == 0 and report.ran == 8
    for name, ident in finished.items():  # not recompressed: same file, untouched
        assert ((dst / name).stat().st_ino, (dst / name).stat().st_mtime_ns) == ident
    assert not list(dst.rglob("*.medzip-tmp"))
    assert {r[0] for r in _rows(dst).values()} == {"done"}
    with sqlite3.connect(dst / MANIFEST_NAME) as db:
        assert db.execute("SELECT MIN(verified) FROM inputs").fetchone()[0] == 1
    report = compress_tree(src, dst, scheduler=cluster, verify=True)  # now all proven: no work
    assert (report.ran, report.reused) == (0, 8)
    assert decompress_tree(dst, out, scheduler=cluster).ok
    assert _tree_listing(out) == _tree_listing(src)


# ---- medzip compress -r / -d -r (in-process, no Dask) ---------------------------------------------

def test_recursive_compress_and_decompress_in_place(small_tree, tmp_path):
    original = _tree_listing(small_tree)
    assert main(["compress", "-r", str(small_tree), "-q", "-T", "1", "--model", "ls3d"]) == 0
    archives = sorted(p.relative_to(small_tree).as_posix() for p in small_tree.rglob("*.mzp"))
    assert archives == ["patient1/anat.nii.mzp", "patient1/ct_slice.npy.mzp",
                        "patient1/study1/series_t1.mzp"]
    shutil.rmtree(small_tree / "patient1" / "study1" / "series_t1")
    (small_tree / "patient1" / "anat.nii").unlink()
    (small_tree / "patient1" / "ct_slice.npy").unlink()
    assert main(["-d", "-r", str(small_tree), "-q", "-T", "1"]) == 0
    for name in archives:
        (small_tree / name).unlink()
    restored = _tree_listing(small_tree)
    assert {k: v[0] for k, v in restored.items()} == {k: v[0] for k, v in original.items()}
