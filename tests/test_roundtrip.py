"""Bit-exact round trips on real data: every shared volume and slice, and pip-shipped files.

The core codec is pinned to the classical ``ls3d`` predictor here (fast, no model file);
``test_default_level_roundtrip`` runs whatever the default level selects on small crops.
"""
from __future__ import annotations

import numpy as np
import pytest

import medzip
from medzip.container import Container

from conftest import CORE_MODEL, PIP_ARRAYS, SHARED_VOLUMES

WORKERS = 2
# Huge *derived* volumes (templates/averages, 7-12 M voxels) run on a centred crop of at most
# this many voxels so the suite stays fast on 2 cores; genuine scans always run whole.
MAX_DERIVED_VOXELS = 4_000_000


def _fit(name: str, arr: np.ndarray) -> np.ndarray:
    if not name.startswith("derived_") or arr.size <= MAX_DERIVED_VOXELS:
        return arr
    keep = list(arr.shape)
    while int(np.prod(keep)) > MAX_DERIVED_VOXELS:
        i = int(np.argmax(keep))
        keep[i] = (keep[i] + 1) // 2
    return arr[tuple(slice((n - k) // 2, (n - k) // 2 + k) for n, k in zip(arr.shape, keep))]


def assert_roundtrip(arr: np.ndarray, **kwargs) -> bytes:
    data = medzip.compress(arr, workers=WORKERS, **kwargs)
    out = medzip.decompress(data, workers=WORKERS)
    assert out.dtype == arr.dtype and out.dtype.str == arr.dtype.str
    assert out.shape == arr.shape
    assert np.array_equal(out, arr)
    assert out.flags.c_contiguous
    return data


def test_real_volume_roundtrip(shared_volumes):
    name, arr = shared_volumes
    arr = _fit(name, arr)
    data = assert_roundtrip(arr, model=CORE_MODEL)
    info = medzip.inspect(data)
    assert info["volumes"][0]["shape"] == list(arr.shape)
    # real scans must actually compress (guards against a silent raw fallback)
    assert len(data) < arr.nbytes, name


def test_real_slice_roundtrip(shared_slices):
    name, arr = shared_slices
    assert arr.ndim == 3 and arr.shape[0] == 1, name
    assert_roundtrip(arr, model=CORE_MODEL)
    if arr.size <= 300_000:
        assert_roundtrip(arr[0], model=CORE_MODEL)  # the same slice as a plain 2-D array


def test_pip_shipped_roundtrip(pip_volumes):
    """nibabel/pydicom test files: adds big-endian '>i2' and uint32 real data."""
    name, arr = pip_volumes
    assert_roundtrip(arr, model=CORE_MODEL)


def test_real_volume_chunking_and_workers_give_identical_bytes():
    """A real multi-chunk volume: byte-identical whatever the worker count."""
    source = SHARED_VOLUMES or PIP_ARRAYS
    arr = next(a for a in source if "example4d" in a.id or "emri" in a.id).load()
    one = medzip.compress(arr, model=CORE_MODEL, chunk_slices=3, workers=1)
    two = medzip.compress(arr, model=CORE_MODEL, chunk_slices=3, workers=2)
    assert one == two
    (vh,) = Container.parse(one).header["volumes"]
    assert len(vh["chunks"]) > 2
    assert np.array_equal(medzip.decompress(one, workers=2), arr)


@pytest.mark.parametrize("level", [1, 4, 5, 9])
def test_level_roundtrip(level):
    """Every predictor (classical, row LSTM, default medzip-blend, strong) on small real crops."""
    for item in PIP_ARRAYS[:3]:
        a = item.load()
        arr = a[..., :3, :24, :24] if a.ndim >= 3 else a
        blob = medzip.compress(arr, level=level)
        out = medzip.decompress(blob)
        assert out.dtype.str == arr.dtype.str and np.array_equal(out, arr)
        model = medzip.inspect(blob)["volumes"][0]["model"]
        assert model in ("ls3d", "medzip-lstm", "medzip-blend", None)  # None: constant crop


@pytest.mark.parametrize("level", [1, 5])
def test_slice_range_decodes_only_its_chunks(level):
    """A slice range comes back exact while the chunks outside it are never read."""
    vol = PIP_ARRAYS[0].load()
    arr = np.ascontiguousarray(vol.reshape((-1,) + vol.shape[-2:])[:9, :32, :32])
    blob = medzip.compress(arr, level=level, chunk_slices=3, fallback=False)  # chunked
    np.testing.assert_array_equal(medzip.decompress(blob, slices=(4, 7)), arr[4:7])
    np.testing.assert_array_equal(medzip.decompress(blob, slices=(0, 9), workers=2), arr)
    # damage the first chunk: a range inside the last chunk still decodes, the full volume fails
    header = Container.parse(blob).header["volumes"][0]
    first = header["chunks"][0]
    damaged = bytearray(blob)
    damaged[Container.parse(blob).body_start + first["offset"] + first["length"] // 2] ^= 0x10
    np.testing.assert_array_equal(medzip.decompress(bytes(damaged), slices=(6, 9)), arr[6:9])
    with pytest.raises(medzip.CorruptStreamError):
        medzip.decompress(bytes(damaged))
    with pytest.raises(medzip.MedzipError, match="outside"):
        medzip.decompress(blob, slices=(5, 12))


def test_worker_count_is_respected():
    from medzip.volume_codec import CodecSettings

    assert CodecSettings.make(workers=1).workers == 1
    assert CodecSettings.make(workers=3).workers == 3
    assert CodecSettings.make(workers=0).workers >= 1  # 0: all cores
