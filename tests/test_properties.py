"""Property tests: any integer array of 8..32 bits, any shape from 1-D to 4-D, round-trips exactly.

Arrays are built from a drawn (shape, dtype, content kind, seed) so that every example is a
realistic or adversarial volume rather than raw random bytes: noise, smooth gradients,
constant, full-range extremes, sparse histograms (the value-table path), and tiny shapes.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import medzip
from medzip.container import Container
from medzip.errors import UnsupportedInputError

from conftest import CORE_MODEL

DTYPES = ["i1", "u1", "<i2", "<u2", "<i4", "<u4", ">i2", ">u2", ">i4", ">u4"]
KINDS = ["noise", "gradient", "constant", "extremes", "sparse", "small_noise"]
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def make_array(shape, dtype, kind, seed) -> np.ndarray:
    dt = np.dtype(dtype)
    info = np.iinfo(dt)
    lo, hi = int(info.min), int(info.max)
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    if kind == "noise":
        flat = rng.integers(lo, hi, n, endpoint=True, dtype=np.int64)
    elif kind == "small_noise":  # 12-bit-like data inside a wide dtype, with an offset
        base = int(rng.integers(max(lo, -2048), min(hi, 4096) - 64, endpoint=True))
        flat = base + rng.integers(0, min(64, hi - base), n, endpoint=True)
    elif kind == "gradient":
        grids = np.indices(shape).reshape(len(shape), -1) if n else np.zeros((len(shape), 0))
        steps = rng.integers(1, 7, len(shape))
        flat = (grids * steps[:, None]).sum(axis=0) + rng.integers(-1, 2, n)
        flat = np.clip(flat + max(lo, 0), lo, hi)
    elif kind == "constant":
        flat = np.full(n, int(rng.integers(lo, hi, endpoint=True)))
    elif kind == "extremes":  # the dtype's min and max side by side, plus zeros
        flat = rng.choice(np.array([lo, hi, 0, lo, hi], np.int64), n)
    elif kind == "sparse":  # few distinct values far apart -> value table
        k = int(rng.integers(2, 9))
        values = np.unique(rng.integers(lo, hi, k, endpoint=True, dtype=np.int64))
        flat = rng.choice(values, n)
    else:
        raise AssertionError(kind)
    return np.asarray(flat, np.int64).reshape(shape).astype(dt)


shapes = st.lists(st.integers(1, 9), min_size=1, max_size=4).map(tuple)
arrays = st.builds(make_array, shapes, st.sampled_from(DTYPES), st.sampled_from(KINDS),
                   st.integers(0, 2**32 - 1))


def roundtrip(arr, **kwargs) -> bytes:
    data = medzip.compress(arr, model=CORE_MODEL, **kwargs)
    out = medzip.decompress(data)
    assert out.dtype.str == arr.dtype.str, (out.dtype, arr.dtype)
    assert out.shape == arr.shape
    assert np.array_equal(out, arr)
    return data


@SETTINGS
@given(arr=arrays, chunk_slices=st.sampled_from([None, 1, 2, 3]))
@example(arr=make_array((1, 1, 1), "<u2", "noise", 0), chunk_slices=None)
@example(arr=make_array((1, 9, 7), "<i2", "noise", 1), chunk_slices=None)
@example(arr=make_array((3, 5, 7), "<u2", "gradient", 2), chunk_slices=1)
@example(arr=make_array((7,), "u1", "noise", 3), chunk_slices=2)
@example(arr=make_array((5, 1, 1), "<i2", "noise", 4), chunk_slices=None)
@example(arr=make_array((2, 3, 4, 5), ">u2", "noise", 5), chunk_slices=3)
@example(arr=make_array((4, 6), "<i4", "extremes", 6), chunk_slices=None)
def test_roundtrip_any_array(arr, chunk_slices):
    roundtrip(arr, chunk_slices=chunk_slices)


@pytest.mark.parametrize("values, dtype", [
    ([0, 65535], "<u2"), ([0, 65535], ">u2"), ([-32768, 32767], "<i2"), ([-32768, 32767], ">i2"),
    ([-128, 127], "i1"), ([0, 255], "u1"), ([-2**31, 2**31 - 1], "<i4"),
    ([0, 2**32 - 1], "<u4"), ([-2**31, 0, 2**31 - 1], ">i4"),
])
@pytest.mark.parametrize("shape", [(2, 6, 5), (1, 1, 2), (3, 1, 1), (2, 1, 4, 4)])
def test_full_range_extremes_side_by_side(values, dtype, shape):
    arr = np.resize(np.array(values, np.int64), shape).astype(dtype)
    roundtrip(arr)
    roundtrip(arr, chunk_slices=1)


@pytest.mark.parametrize("dtype", ["u1", "<i2", "<u2", ">u2", "<i4", "<u4", ">i4"])
def test_sparse_histogram_uses_value_table(dtype):
    info = np.iinfo(dtype)
    lo = int(info.min)
    hi = min(int(info.max), lo + (1 << 24) - 1)  # the table is used for spans up to 2**24
    rng = np.random.default_rng(11)
    values = np.array([lo, lo + 37, (lo + hi) // 2, hi], np.int64)
    arr = rng.choice(values, (4, 9, 11)).astype(dtype)
    data = roundtrip(arr, fallback=False)  # the predictive path (xz would win on 4 values)
    (vh,) = Container.parse(data).header["volumes"]
    assert vh["codec"] == "predictive" and vh["value_table"]["count"] == 4
    assert vh["min"] == lo and vh["vmax"] == 3


def test_sparse_histogram_wider_than_table_limit():
    arr = np.resize(np.array([-2**31, 5, 2**31 - 1], np.int64), (3, 4, 5)).astype("<i4")
    (vh,) = Container.parse(roundtrip(arr, fallback=False)).header["volumes"]
    assert "value_table" not in vh and vh["vmax"] == 2**32 - 1


def test_dense_histogram_has_no_value_table():
    arr = np.arange(4 * 9 * 11, dtype=np.uint16).reshape(4, 9, 11)
    (vh,) = Container.parse(roundtrip(arr)).header["volumes"]
    assert "value_table" not in vh


@SETTINGS
@given(shape=shapes, dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_constant_volume_is_header_only(shape, dtype, seed):
    arr = make_array(shape, dtype, "constant", seed)
    data = roundtrip(arr)
    (vh,) = Container.parse(data).header["volumes"]
    assert vh["codec"] == "constant" and vh["chunks"] == []


@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0, 5), (2, 3, 0, 1)])
def test_empty_array(shape):
    data = roundtrip(np.zeros(shape, ">i2"))
    assert Container.parse(data).header["volumes"][0]["codec"] == "empty"


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arr=st.builds(make_array, st.tuples(st.integers(2, 6), st.integers(1, 12),
                                           st.integers(1, 12)),
                     st.sampled_from(DTYPES), st.sampled_from(KINDS), st.integers(0, 2**32 - 1)),
       chunk_slices=st.sampled_from([None, 1, 2, 3]))
def test_workers_give_identical_bytes(arr, chunk_slices):
    one = medzip.compress(arr, model=CORE_MODEL, chunk_slices=chunk_slices, workers=1)
    two = medzip.compress(arr, model=CORE_MODEL, chunk_slices=chunk_slices, workers=2)
    assert one == two
    assert np.array_equal(medzip.decompress(one, workers=2), arr)


@pytest.mark.parametrize("chunk_slices, expected", [
    (1, [(i, 1) for i in range(7)]),
    (2, [(0, 1), (1, 2), (3, 2), (5, 2)]),
    (3, [(0, 2), (2, 2), (4, 3)]),
    (None, [(0, 7)]),
])
def test_chunking_rule(chunk_slices, expected):
    arr = make_array((7, 5, 6), "<u2", "noise", 9)
    data = roundtrip(arr, chunk_slices=chunk_slices, fallback=False)  # chunks are predictive
    (vh,) = Container.parse(data).header["volumes"]
    assert [(c["z0"], c["nz"]) for c in vh["chunks"]] == expected


def test_non_contiguous_inputs():
    base = make_array((6, 10, 12), "<i2", "gradient", 3)
    for view in (base[::2], base[:, ::-1], base.transpose(2, 1, 0), np.asfortranarray(base)):
        roundtrip(view)


@pytest.mark.parametrize("arr", [
    np.zeros((2, 3, 4), np.float32), np.zeros((2, 3), np.float64), np.zeros(3, np.float16),
    np.zeros((2, 2), bool), np.zeros((2, 2), np.complex64), np.array([1, "a"], dtype=object),
    np.zeros((2, 3), np.int64), np.zeros((2, 3), np.uint64), np.zeros(4, "<M8[s]"),
    np.zeros(3, "U2"),
], ids=lambda a: a.dtype.str)
def test_unsupported_dtypes_raise_clear_error(arr):
    with pytest.raises(UnsupportedInputError) as exc:
        medzip.compress(arr, model=CORE_MODEL)
    msg = str(exc.value)
    assert msg and "\n" not in msg and str(arr.dtype) in msg


@pytest.mark.parametrize("shape", [(), (1, 1, 1, 1, 1), (2, 1, 3, 1, 2)])
def test_unsupported_dimensions_raise_clear_error(shape):
    with pytest.raises(UnsupportedInputError) as exc:
        medzip.compress(np.zeros(shape, np.uint8), model=CORE_MODEL)
    assert "\n" not in str(exc.value)
