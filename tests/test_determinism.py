"""Determinism is a correctness property: the decoder must rebuild the encoder's probabilities
exactly on another CPU, thread count, instruction set, batch size or worker count.

Encoding and decoding run in fresh subprocesses under what can really differ on the coding
path (which never imports torch, so ATen/MKL/OMP variables cannot reach it): numba's CPU
target and OpenBLAS's kernels (the host's, or generic x86-64 ones without the host's vector
extensions; the LSTM's gate sums are float32 matrix products, exact by construction), the worker
count, and how workers start (fork, or spawn as on macOS/Windows); bytes and voxels must be
identical to this process's single-worker result.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import medzip

from conftest import (EXAMPLE4D, deep_trio, demo_volume, example4d_head_series,
                      example4d_masked_corner, long_dwi, padded_ct, wide_heart, zero_padded_ct)


ENVIRONMENTS = {
    "default": ({}, (1, 3)),
    "generic_cpu": ({"NUMBA_CPU_NAME": "generic", "NUMBA_CPU_FEATURES": "",
                     "OPENBLAS_CORETYPE": "Prescott", "OPENBLAS_NUM_THREADS": "1"}, (1, 2)),
    "spawned_workers": ({"MEDZIP_START_METHOD": "spawn"}, (2,)),
}

# One fresh interpreter per (environment, worker count) codes every case: numba compiles its
# kernels once per environment (a fresh cache each, shared by that environment's runs) instead
# of once per case, which kept these tests a third of the suite's time.
_SCRIPT = r"""
import hashlib, json, sys
import numpy as np, medzip
args = json.loads(sys.argv[1])
results = {}
for name, job in args["cases"].items():
    arr = np.load(job["array"])
    blob = medzip.compress(arr, level=job["level"], fallback=job["fallback"],
                           workers=args["workers"])
    back = medzip.decompress(open(job["stream"], "rb").read(), workers=args["workers"])
    results[name] = {"encoded": hashlib.sha256(blob).hexdigest(),
                     "decoded": hashlib.sha256(back.tobytes()).hexdigest()}
print(json.dumps({"results": results, "torch_imported": "torch" in sys.modules}))
"""


def sample_array() -> np.ndarray:
    """A real MR volume (the bundled dipy b0 sample), cropped to keep subprocesses quick."""
    arr = np.ascontiguousarray(demo_volume()[:6, 20:84, 20:84])
    assert arr.shape == (6, 64, 64) and arr.std() > 0
    return arr


@pytest.fixture(scope="module")
def sample():
    return sample_array()


# name -> (array maker, level, fallback): a stream of every kind the default model writes
# (v1 at levels 1/5/9, v2 with a padding mask, v2 with the previous volume, v3 wide sets,
# v4 long sets, v4 deep sets, v5 field-of-view floor; v6 fixed-rule experts: the cine heart
# crop with wide sets and, where the fit finds the crop slice-poor, others)
CASES = {
    "dwi_b0_level1": (sample_array, 1, True),
    "dwi_b0_level5": (sample_array, 5, True),
    "dwi_b0_level9": (sample_array, 9, True),
    "masked_epi_level5": (example4d_masked_corner, 5, True),
    "fmri_series_level5": (example4d_head_series, 5, True),
    "wide_heart_level5": (wide_heart, 5, False),
    "long_dwi_level5": (long_dwi, 5, False),
    "deep_trio_level5": (deep_trio, 5, False),
    "padded_ct_level5": (padded_ct, 5, False),
    "zero_padded_ct_level5": (zero_padded_ct, 5, False),  # blend version 7
}
NEEDS_EXAMPLE4D = {"masked_epi_level5", "fmri_series_level5"}


@pytest.fixture(scope="session")
def environment_runs(tmp_path_factory):
    """``run(env_name)``: every case's reference stream (this process, one worker) and, per
    worker count of the environment, what a fresh interpreter there encoded and decoded."""
    folder = tmp_path_factory.mktemp("environments")
    cases, done = {}, {}
    for name, (make, level, fallback) in CASES.items():
        if name in NEEDS_EXAMPLE4D and EXAMPLE4D is None:
            continue
        arr = make()
        np.save(folder / f"{name}.npy", arr)
        blob = medzip.compress(arr, level=level, fallback=fallback, workers=1)
        (folder / f"{name}.mzp").write_bytes(blob)
        cases[name] = {"array": str(folder / f"{name}.npy"), "stream": str(folder / f"{name}.mzp"),
                       "level": level, "fallback": fallback,
                       "want_encoded": hashlib.sha256(blob).hexdigest(),
                       "want_decoded": hashlib.sha256(arr.tobytes()).hexdigest()}

    def run(env_name):
        if env_name not in done:
            variables, worker_counts = ENVIRONMENTS[env_name]
            env = {**os.environ, **variables, "NUMBA_CACHE_DIR": str(folder / f"numba-{env_name}")}
            done[env_name] = runs = []
            for workers in worker_counts:
                args = {"cases": cases, "workers": workers}
                out = subprocess.run([sys.executable, "-c", _SCRIPT, json.dumps(args)], env=env,
                                     capture_output=True, text=True, timeout=900)
                got = (json.loads(out.stdout.strip().splitlines()[-1])
                       if out.returncode == 0 else out.stderr[-2000:])
                runs.append((workers, got))
        return cases, done[env_name]

    return run


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("env_name", sorted(ENVIRONMENTS))
def test_same_bytes_and_voxels_under_environment(environment_runs, env_name, case):
    """Fresh processes under ``ENVIRONMENTS[env_name]`` encode to the bytes and decode to the
    voxels of this process's single-worker result, without importing torch."""
    if case in NEEDS_EXAMPLE4D and EXAMPLE4D is None:
        pytest.skip("nibabel's example4d.nii.gz is missing")
    cases, runs = environment_runs(env_name)
    want = cases[case]
    for workers, got in runs:
        assert isinstance(got, dict), f"{env_name}, {workers} workers: {got}"
        assert got["results"][case]["encoded"] == want["want_encoded"], \
            f"encoder differs ({env_name}, {workers} workers)"
        assert got["results"][case]["decoded"] == want["want_decoded"], \
            f"decoder differs ({env_name}, {workers} workers)"
        assert not got["torch_imported"], "compress/decompress must not import torch"


@pytest.mark.parametrize("level", [1, 4, 5, 9])
def test_chunking_and_workers_give_identical_voxels(sample, level):
    arr = sample
    ref = medzip.compress(arr, level=level, workers=1)
    assert medzip.compress(arr, level=level, workers=2) == ref
    for chunk_slices in (1, 2, 4):
        blob = medzip.compress(arr, level=level, chunk_slices=chunk_slices, workers=2)
        for workers in (1, 2):
            np.testing.assert_array_equal(medzip.decompress(blob, workers=workers), arr)


def _one_step_inputs(level):
    """A chunk model and one mid-volume wavefront step of the sample, ready to predict."""
    from medzip.predictors.registry import fit_candidates, model_for_level
    from medzip.scheduling import wavefront
    from medzip.training.data import mapped_volume
    from medzip.volume_codec import chunk_geometry

    vol4 = mapped_volume(sample_array()).astype(np.int32)
    cands = fit_candidates(model_for_level(level), vol4, level)
    pred = cands[min(1, len(cands) - 1)][0]  # level 9: the LSTM variant without bias canceller
    geom = chunk_geometry(pred, vol4.shape[1:])
    padded = np.zeros(geom.shape, np.int32).ravel()
    geom.embed(vol4[0], padded)
    return pred, geom, padded, int(vol4.max()), list(wavefront(geom, pred.lag, pred.slope))


@pytest.mark.parametrize("level", [1, 4, 5, 9])
def test_prediction_does_not_depend_on_batch_split(level):
    """Predicting a wavefront step in one call or in pieces gives identical integers.

    Both models start every step from identical state (copied after each step), so any
    difference could only come from how a batch is split across calls.
    """
    pred, geom, padded, vmax, steps = _one_step_inputs(level)
    whole = pred.start_chunk(geom, vmax)
    pieces = pred.start_chunk(geom, vmax)
    checked = 0
    for flat, zloc in steps:
        mu, bucket = whole.predict(padded, flat, zloc)
        cut = max(1, flat.size // 3)
        parts = [pieces.predict(padded, flat[s], zloc[s])
                 for s in (slice(0, cut), slice(cut, None))]
        np.testing.assert_array_equal(mu, np.concatenate([p[0] for p in parts]))
        np.testing.assert_array_equal(bucket, np.concatenate([p[1] for p in parts]))
        checked += flat.size
        r = padded[flat] - mu
        whole.update(padded, flat, zloc, r)
        for k, v in vars(whole).items():
            if isinstance(v, np.ndarray):
                setattr(pieces, k, v.copy())
    assert checked == 6 * 64 * 64  # every voxel of the crop went through both paths


def test_gate_sums_are_exact_integers():
    """The LSTM's gate sums (float32 BLAS products in blocks, or the numba loop where a BLAS
    is not exact) equal integer arithmetic, at full scale and for any row count."""
    from medzip import intlstm
    rng = np.random.default_rng(5)
    w = rng.integers(-127, 128, (41, 64))
    w[:, 0] = 127
    for n in (1, 95, 96, 97, 1000):
        x = rng.integers(-127, 128, (n, 41))
        x[0] = 127
        want = x @ w
        xf, wf = x.astype(np.float32), w.astype(np.float32)
        assert np.array_equal(intlstm.gate_sums(xf, wf).astype(np.int64), want)
        loop = np.empty(want.shape, np.float32)
        intlstm._gate_sums_loop(xf, wf, loop)
        assert np.array_equal(loop.astype(np.int64), want)
    assert intlstm._blas_is_exact()  # IEEE single precision here: the BLAS path is the one used


def test_clipped_floor_division_is_exact():
    """intmath.floor_div_clip (the network features' division by the local scale, clipped to
    int8, and the blend weights' ratios) equals clipped ``//`` for numerators just below, at
    and above every multiple of the divisor in range, random and extreme numerators, and
    divisors from 1 to beyond 2**40 (where it divides in integers)."""
    import numba

    from medzip.intmath import floor_div_clip

    @numba.njit
    def mismatches(xs, ds, lim):
        bad = 0
        for d in ds:
            for x in xs:
                bad += floor_div_clip(x, d, float(d), lim) != min(max(x // d, -lim), lim)
            for n in range(-lim - 2, lim + 3):  # the quotients that could round across
                for x in (n * d - 1, n * d, n * d + 1):
                    bad += floor_div_clip(x, d, float(d), lim) != min(max(x // d, -lim), lim)
        return bad

    rng = np.random.default_rng(0)
    xs = np.concatenate([np.arange(-3000, 3000), rng.integers(-2**40, 2**40, 3000),
                         rng.integers(-2**62, 2**62, 300),
                         [2**52 - 1, -(2**52) + 1, 2**52, -(2**52), 2**63 - 1, -(2**63)]])
    ds = np.concatenate([np.arange(1, 120), rng.integers(1, 2**33, 30),
                         [2**40 - 1, 2**40, 2**41 + 3]])
    for lim in (127, 1024):
        assert mismatches(xs.astype(np.int64), ds.astype(np.int64), lim) == 0


def _python_normal_equations(ata, atb, ridge=1e-6):
    """The least-squares solve as plain Python floats (what intmath had before its numba
    kernel): the reference the encoder's fits must keep matching bit for bit."""
    import math

    n = len(atb)
    scale = [math.sqrt(float(ata[i, i])) or 1.0 for i in range(n)]
    m = [[float(ata[i, j]) / (scale[i] * scale[j]) for j in range(n)] + [float(atb[i]) / scale[i]]
         for i in range(n)]
    for i in range(n):
        m[i][i] += ridge
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[piv] = m[piv], m[col]
        p = m[col][col]
        if abs(p) < 1e-12:
            continue
        for r in range(n):
            if r != col and m[r][col] != 0.0:
                f = m[r][col] / p
                for c in range(col, n + 1):
                    m[r][c] -= f * m[col][c]
    return [(m[i][n] / m[i][i] if abs(m[i][i]) >= 1e-12 else 0.0) / scale[i] for i in range(n)]


def test_least_squares_solve_matches_plain_python_bit_for_bit():
    """The fits' solver (numba, no fast-math) gives exactly the floats of the same elimination in
    Python, so coefficients do not depend on the CPU or on numba's vectorisation: 7 to 42 taps +
    bias, 16-bit data, rank-deficient systems (a repeated or an all-zero column) included."""
    from medzip.intmath import solve_normal_equations

    rng = np.random.default_rng(5)
    for n in (7, 16, 26, 42):
        for trial in range(6):
            a = rng.integers(0, 1 << 16, (300, n)).astype(np.int64)
            a[:, -1] = 1
            if trial == 1:
                a[:, 1] = a[:, 0]
            if trial == 2:
                a[:, 2] = 0
            b = a[:, :-1] @ rng.integers(-3, 4, n - 1) // 3 + rng.integers(-50, 50, 300)
            ata, atb = a.T @ a, a.T @ b
            assert solve_normal_equations(ata, atb) == _python_normal_equations(ata, atb)


def test_class_normal_equations_are_exact_integer_sums():
    """blend._accumulate sums products in float64 runs of ACC_FLUSH samples: equal to int64
    arithmetic at full scale (values up to 2**16 - 1), across a flush boundary."""
    import numba

    from medzip.predictors import blend
    from medzip.predictors.ls3d import OFFS_3D, flat_offsets
    from medzip.scheduling import PaddedGeometry

    @numba.njit
    def int64_sums(vol, flat, row, plane, off, edges, athr, ata, atb):
        k = off.size
        a = np.empty(k + 1, np.int64)
        for i in range(flat.size):
            f = flat[i]
            c = blend.voxel_class(vol, f, row, plane, edges, athr)
            for j in range(k):
                a[j] = vol[f + off[j]]
            a[k] = 1
            for p in range(k + 1):
                atb[c, p] += a[p] * vol[f]
                for q in range(p, k + 1):
                    ata[c, p, q] += a[p] * a[q]

    rng = np.random.default_rng(3)
    geom = PaddedGeometry(1, 40, 40, zpad=1)
    vol = np.zeros(geom.shape, np.int64)
    vol[:, 2:-2, 2:-2] = np.where(rng.random((2, 40, 40)) < 0.97, 65535,
                                  rng.integers(0, 65536, (2, 40, 40)))
    vol = vol.ravel()
    inner = ((geom.zpad * geom.shape[1] + np.arange(40)[:, None] + geom.pad) * geom.row
             + np.arange(40)[None, :] + geom.pad).ravel()
    flat = np.resize(inner, 4 * blend.ACC_FLUSH + 5000)  # repeats: totals pass 2**53
    off = flat_offsets(OFFS_3D, geom)
    edges = np.array([20000, 40000, 60000], np.int64)
    athr = np.array([30000, 90000], np.int64)
    shape = (blend.N_CLASSES, len(OFFS_3D) + 1)
    got_a, got_b = np.zeros(shape + shape[1:], np.int64), np.zeros(shape, np.int64)
    blend._accumulate(vol, flat, geom.row, geom.plane, off, edges, athr, 0, got_a, got_b)
    want_a, want_b = np.zeros_like(got_a), np.zeros_like(got_b)
    int64_sums(vol, flat, geom.row, geom.plane, off, edges, athr, want_a, want_b)
    assert want_a.max() > 2**53  # beyond float64's integers: the flushes are what keeps it exact
    np.testing.assert_array_equal(got_a, want_a)
    np.testing.assert_array_equal(got_b, want_b)
