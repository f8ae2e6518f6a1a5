"""medzip is called concurrently by integrations (Zarr's codec pipeline, Dask's threaded
workers, an Orthanc storage plugin): calls from many threads at once, each possibly with its
own process pool, must give exactly the bytes and arrays that single calls give."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import medzip
from medzip import parallel

from test_determinism import sample_array


def _volumes() -> list[np.ndarray]:
    """Different real crops (and dtypes), so a mix-up between calls cannot go unnoticed."""
    base = sample_array()  # (6, 64, 64) real MR
    return [np.ascontiguousarray(base[:, i * 8:i * 8 + 40, j * 8:j * 8 + 40]).astype(dt)
            for i, j, dt in [(0, 0, np.uint16), (1, 2, np.int16), (2, 1, np.int32),
                             (3, 3, np.uint16), (0, 3, np.int16), (3, 0, np.uint16),
                             (2, 2, np.int32), (1, 0, np.uint16)]]


@pytest.fixture(scope="module")
def references():
    vols = _volumes()
    levels = [1, 5, 9]
    cases = [(v, levels[k % 3]) for k, v in enumerate(vols)]
    return [(v, lvl, medzip.compress(v, level=lvl, chunk_slices=2)) for v, lvl in cases]


def _roundtrip(case):
    vol, level, ref = case
    blob = medzip.compress(vol, level=level, chunk_slices=2)
    back = medzip.decompress(ref)
    part = medzip.decompress(ref, slices=(1, 5))
    return blob, back, part


def test_threads_compress_and_decompress_at_once(references):
    cases = references * 2  # 16 calls on 8 threads: encoders and decoders overlap
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(_roundtrip, cases))
    for (vol, level, ref), (blob, back, part) in zip(cases, results):
        assert blob == ref, f"level {level}: concurrent encode gave different bytes"
        assert back.dtype == vol.dtype and np.array_equal(back, vol)
        assert np.array_equal(part, vol[1:5])


def test_process_pools_inside_a_thread_pool(references):
    def run(case):
        vol, level, ref = case
        blob = medzip.compress(vol, level=level, chunk_slices=2, workers=2)
        return blob, medzip.decompress(ref, workers=2)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, references[:4]))
    for (vol, _, ref), (blob, back) in zip(references[:4], results):
        assert blob == ref
        assert np.array_equal(back, vol)


_SPAWN = r"""
import hashlib, sys
import numpy as np, medzip
from medzip import parallel
assert parallel.start_method() == "spawn"
arr = np.load(sys.argv[1])
blob = medzip.compress(arr, level=5, chunk_slices=2, workers=2)
back = medzip.decompress(blob, workers=2)
part = medzip.decompress(blob, slices=(1, 4), workers=2)
assert np.array_equal(back, arr) and np.array_equal(part, arr[1:4])
print(hashlib.sha256(blob).hexdigest())
"""


def test_spawn_workers_give_the_same_bytes(tmp_path):
    arr = sample_array()
    np.save(tmp_path / "a.npy", arr)
    env = {**os.environ, parallel.START_METHOD_ENV: "spawn"}
    out = subprocess.run([sys.executable, "-c", _SPAWN, str(tmp_path / "a.npy")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    import hashlib
    ref = medzip.compress(arr, level=5, chunk_slices=2, workers=1)
    assert out.stdout.split()[-1] == hashlib.sha256(ref).hexdigest()


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _kill_and_check_workers(proc, workers) -> None:
    """SIGKILL ``proc``; every one of ``workers`` must be gone within 10 s."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "workers outlived their killed parent"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and prctl")
def test_workers_die_with_a_killed_parent(tmp_path):
    """kill -9 of the process that owns a pool must not leave its workers running."""
    script = textwrap.dedent("""
        import sys, time
        from medzip import parallel
        def slow(state, job):
            time.sleep(60)
        print("ready", flush=True)
        parallel.run_jobs(slow, None, [1, 2], workers=2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        workers = []
        deadline = time.monotonic() + 30
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = [c for c in _children(proc.pid) if _alive(c)]
            time.sleep(0.1)
        assert len(workers) >= 2, "the pool never started its workers"
        _kill_and_check_workers(proc, workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and prctl")
def test_kill_9_of_the_cli_leaves_no_worker_running(tmp_path):
    """`kill -9` of `medzip compress -T 2` while its workers code chunks: none survives."""
    vol = np.tile(sample_array(), (24, 4, 4))  # 144 x 256 x 256 real MR voxels, tiled
    np.save(tmp_path / "big.npy", vol)
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from medzip.cli import main; "
                             "sys.exit(main(sys.argv[1:]))", "compress", "-T", "2", "-q",
                             str(tmp_path / "big.npy")])
    try:
        workers = []
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
            workers = [c for c in _children(proc.pid) if _alive(c)]
            time.sleep(0.05)
        assert len(workers) >= 2, "the CLI never started its workers"
        _kill_and_check_workers(proc, workers)
        assert not (tmp_path / "big.npy.mzp").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
