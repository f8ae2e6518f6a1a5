"""medzip inside Zarr: the v3 codec, the numcodecs codec, and reads through Dask.

Real data only: a crop of the shared CT (or, without ../shared, pydicom's/nibabel's test
volumes). Crops are small and use chunk shapes that do not divide the array, so every test
also covers edge chunks; a fresh interpreter that never imports medzip reads the store
through the entry points alone.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import dask.array as da
import numcodecs
import numpy as np
import pytest
import zarr

from conftest import PIP_ARRAYS, SHARED_SLICES, SHARED_VOLUMES, RealArray
from medzip.errors import CorruptStreamError, ModelMismatchError, UnsupportedInputError
from medzip.numcodecs import MedZip
from medzip.zarr import MedZipCodec

LEVEL = 1  # the classical predictor: fast, and the chunk plumbing is what is tested here


def _pick(arrays: list[RealArray], *names: str) -> RealArray | None:
    by_id = {a.id: a for a in arrays}
    return next((by_id[n] for n in names if n in by_id), None)


def _ct3d() -> np.ndarray:
    """A real 3-D CT (int16), cropped so that a few small chunks cover it."""
    item = _pick(SHARED_VOLUMES, "ct_head_invesalius_cranium")
    if item is not None:
        return np.ascontiguousarray(item.load()[30:50, 60:160, 70:170])
    # pip-shipped fallback: the first time point of nibabel's 4-D fMRI example (24x96x128 int16)
    item = _pick(PIP_ARRAYS, "nibabel-example4d")
    if item is None:
        pytest.skip("no real 3-D data available")
    return np.ascontiguousarray(item.load()[0])


def _slice2d() -> np.ndarray:
    item = _pick(SHARED_SLICES, "ct2d_693_uncr_pydicomdata") or _pick(PIP_ARRAYS, "pydicom-CT_small")
    if item is None:
        pytest.skip("no real 2-D data available")
    img = item.load()
    return np.ascontiguousarray(img.reshape(img.shape[-2:])[:150, :130])


def _series4d() -> np.ndarray:
    item = (_pick(SHARED_VOLUMES, "mr_fmri_example4d_nibabel")
            or _pick(PIP_ARRAYS, "nibabel-example4d"))
    if item is None:
        pytest.skip("no real 4-D data available")
    return np.ascontiguousarray(item.load()[:, :10, :40, :50])


def _create(path, arr, chunks, **kw):
    z = zarr.create_array(store=str(path), shape=arr.shape, chunks=chunks, dtype=arr.dtype,
                          serializer=MedZipCodec(level=LEVEL, **kw), compressors=None)
    z[...] = arr
    return z


def _chunk_files(path: Path) -> list[Path]:
    return sorted(p for p in (path / "c").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def ct_store(tmp_path_factory):
    arr = _ct3d()
    path = tmp_path_factory.mktemp("zarr") / "ct.zarr"
    _create(path, arr, (8, 48, 48))
    return path, arr


@pytest.fixture(scope="module")
def v2_store(tmp_path_factory):
    """A Zarr v2 array with the numcodecs codec as its compressor."""
    arr = _ct3d()
    path = tmp_path_factory.mktemp("zarr") / "v2.zarr"
    z = zarr.create_array(store=str(path), shape=arr.shape, chunks=(8, 48, 48), dtype=arr.dtype,
                          zarr_format=2, compressors=MedZip(level=LEVEL), filters=None)
    z[...] = arr
    return path, arr


# -- Zarr v3 --------------------------------------------------------------------------------------
def test_metadata_names_the_codec_with_json_config(ct_store):
    path, _ = ct_store
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["codecs"] == [{"name": "medzip", "configuration": {"level": LEVEL}}]
    assert MedZipCodec.from_dict(meta["codecs"][0]) == MedZipCodec(level=LEVEL)


def test_fresh_interpreter_reads_from_metadata_alone(ct_store, v2_store, tmp_path):
    """Plain zarr.open_array (v3 and v2) and Dask in a process that never imports medzip."""
    (path, arr), (v2_path, _) = ct_store, v2_store
    out, v2_out = tmp_path / "read.npy", tmp_path / "v2.npy"
    script = textwrap.dedent(f"""
        import sys
        import dask.array as da
        import numpy as np
        import zarr
        assert "medzip" not in sys.modules
        np.save({str(out)!r}, zarr.open_array({str(path)!r}, mode="r")[...])
        np.save({str(v2_out)!r}, zarr.open_array({str(v2_path)!r}, mode="r")[...])
        total = int(da.from_zarr({str(path)!r}).sum(dtype="int64").compute(scheduler="threads"))
        print(total)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(np.load(out), arr)
    np.testing.assert_array_equal(np.load(v2_out), arr)
    assert int(run.stdout.strip()) == int(arr.sum(dtype=np.int64))


@pytest.mark.parametrize("sel", [
    (slice(5, 13), slice(40, 60), slice(30, 97)),  # crosses chunk borders on every axis
    (slice(None), slice(90, None), slice(90, None)),  # the corner edge chunks
    (7, slice(None), slice(None)),  # one slice: integer index drops an axis
    (slice(1, None, 3), slice(None, None, 7), 50),  # strides
])
def test_region_reads_cross_chunk_borders(ct_store, sel):
    path, arr = ct_store
    z = zarr.open_array(str(path), mode="r")
    np.testing.assert_array_equal(z[sel], arr[sel])


def test_dask_threads_read_chunks_concurrently(ct_store):
    path, arr = ct_store
    lazy = da.from_zarr(str(path))
    assert lazy.npartitions > 4
    with dask.config.set(scheduler="threads", num_workers=4):
        assert int(lazy.sum(dtype="int64").compute()) == int(arr.sum(dtype=np.int64))
        np.testing.assert_array_equal(lazy.compute(), arr)


def test_each_chunk_is_a_self_contained_medzip_stream(ct_store):
    import medzip

    path, arr = ct_store
    first = medzip.decompress(((path / "c" / "0" / "0" / "0")).read_bytes())
    np.testing.assert_array_equal(first, arr[:8, :48, :48])


def test_2d_and_4d_chunks(tmp_path):
    img, series = _slice2d(), _series4d()
    _create(tmp_path / "2d.zarr", img, (64, 64))
    _create(tmp_path / "4d.zarr", series, (1, 4, 32, 32))
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "2d.zarr"))[...], img)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "4d.zarr"))[...], series)


def _as_dtype(arr: np.ndarray, dtype: str) -> np.ndarray:
    """Real CT values moved into each integer type's range: shifted, shifted down (8-bit) or
    spread far beyond 16 bits (32-bit); never clipped."""
    base = arr.astype(np.int64) - int(arr.min())  # 0..span
    info = np.iinfo(dtype)
    if info.bits == 8:
        while base.max() > 127:
            base >>= 1
    elif info.bits == 32:
        base = base * 65537 + 12345
    out = base + info.min // 2 if info.min < 0 else base  # signed types get negative values
    assert info.min <= out.min() and out.max() <= info.max
    return out.astype(dtype)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32"])
def test_all_integer_dtypes(tmp_path, dtype):
    arr = _as_dtype(_ct3d()[:9, :50, :50], dtype)
    assert arr.dtype == np.dtype(dtype) and np.unique(arr).size > 16
    _create(tmp_path / "a.zarr", arr, (4, 32, 32))
    back = zarr.open_array(str(tmp_path / "a.zarr"))[...]
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_unsupported_dtype_refused_at_creation(tmp_path, dtype):
    with pytest.raises(UnsupportedInputError, match=np.dtype(dtype).name):
        zarr.create_array(store=str(tmp_path / "f.zarr"), shape=(4, 8, 8), chunks=(2, 8, 8),
                          dtype=dtype, serializer=MedZipCodec(), compressors=None)
    assert not (tmp_path / "f.zarr" / "zarr.json").exists()


def test_five_dimensional_array_refused_at_creation(tmp_path):
    with pytest.raises(UnsupportedInputError, match="5-D"):
        zarr.create_array(store=str(tmp_path / "f.zarr"), shape=(2, 2, 2, 8, 8),
                          chunks=(1, 1, 2, 8, 8), dtype="int16", serializer=MedZipCodec(),
                          compressors=None)


def test_bad_level_refused():
    with pytest.raises(UnsupportedInputError, match="1..9"):
        MedZipCodec(level=12)


def test_corrupted_chunk_is_named(ct_store, tmp_path):
    path, arr = ct_store
    copy = tmp_path / "ct.zarr"
    shutil.copytree(path, copy)
    victim = copy / "c" / "1" / "1" / "0"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x10
    victim.write_bytes(bytes(data))
    z = zarr.open_array(str(copy), mode="r")
    with pytest.raises(CorruptStreamError, match=r"c/1/1/0"):
        z[...]
    # chunks around it still read
    np.testing.assert_array_equal(z[:8], arr[:8])


def test_chunk_of_wrong_shape_is_rejected(ct_store, tmp_path):
    """A valid medzip stream that holds another shape (a foreign chunk) is damage, not data."""
    import medzip

    path, arr = ct_store
    copy = tmp_path / "ct.zarr"
    shutil.copytree(path, copy)
    (copy / "c" / "0" / "0" / "1").write_bytes(medzip.compress(arr[:8, :48, :40], level=LEVEL))
    with pytest.raises(CorruptStreamError, match=r"c/0/0/1.*\(8, 48, 40\)"):
        zarr.open_array(str(copy), mode="r")[...]


def test_model_file_sha256_recorded_and_checked(tmp_path):
    import medzip

    model = Path(medzip.__file__).parent / "models" / "medzip-lstm.npz"
    own = tmp_path / "my-model.npz"
    shutil.copyfile(model, own)
    arr = _ct3d()[:6, :40, :40]
    store = tmp_path / "m.zarr"
    _create(store, arr, (6, 40, 40), model=str(own))
    config = json.loads((store / "zarr.json").read_text())["codecs"][0]["configuration"]
    assert config["model"] == str(own)
    assert config["model_sha256"] == hashlib.sha256(own.read_bytes()).hexdigest()
    np.testing.assert_array_equal(zarr.open_array(str(store))[...], arr)
    own.write_bytes(own.read_bytes() + b"\0")  # a different file at the recorded path
    with pytest.raises(ModelMismatchError, match="SHA-256"):
        zarr.open_array(str(store))[...]


# -- numcodecs ------------------------------------------------------------------------------------
def test_numcodecs_registry_round_trip():
    codec = numcodecs.get_codec({"id": "medzip", "level": LEVEL})
    assert isinstance(codec, MedZip) and codec.get_config() == {"id": "medzip", "level": LEVEL}
    arr = _ct3d()[:5]
    enc = codec.encode(arr)
    back = codec.decode(enc)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)
    out = np.empty_like(arr)
    codec.decode(enc, out=out)
    np.testing.assert_array_equal(out, arr)
    assert numcodecs.get_codec(codec.get_config()) == codec


def test_numcodecs_fails_clearly_on_bytes():
    codec = MedZip()
    for raw in (b"\x01\x02\x03\x04", bytearray(8), memoryview(b"abcd")):
        with pytest.raises(UnsupportedInputError, match="numpy array"):
            codec.encode(raw)


def test_numcodecs_refuses_float_chunk():
    with pytest.raises(UnsupportedInputError, match="float32"):
        MedZip().encode(np.zeros((2, 4, 4), np.float32))


def test_zarr_v2_array_with_numcodecs_compressor(v2_store):
    path, arr = v2_store
    assert json.loads((path / ".zarray").read_text())["compressor"] == {"id": "medzip",
                                                                      "level": LEVEL}
    z = zarr.open_array(str(path), mode="r")
    np.testing.assert_array_equal(z[3:17, 40:100, 5], arr[3:17, 40:100, 5])
    np.testing.assert_array_equal(z[...], arr)


def test_docs_example_runs(tmp_path, monkeypatch):
    """The Python blocks of docs/ZARR.md, run as written (they write into the cwd)."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "ZARR.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    exec(compile("\n".join(blocks), "docs/ZARR.md", "exec"), {})
    assert (tmp_path / "mr.zarr" / "zarr.json").exists() and (tmp_path / "mr-v2.zarr").is_dir()


# -- medzip convert: volume file <-> OME-Zarr -----------------------------------------------------
def _nifti_source() -> Path:
    from conftest import SHARED, _nibabel_test_file

    shared = SHARED / "originals" / "aniso_vox.nii.gz"  # anisotropic voxels: spacing matters
    path = shared if shared.exists() else _nibabel_test_file("anatomical.nii")
    if path is None:
        pytest.skip("no NIfTI test file available")
    return path


def test_convert_nifti_to_ome_zarr_and_back(tmp_path):
    import nibabel
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from conftest import nifti_stored
    from medzip.cli import main

    src = _nifti_source()
    stored = nifti_stored(src)
    zooms = [float(z) for z in nibabel.load(str(src)).header.get_zooms()][::-1]
    image = tmp_path / "img.ome.zarr"
    assert main(["convert", str(src), str(image), "-l", str(LEVEL), "--chunks", "8,32,32"]) == 0
    # a reader that knows nothing of medzip: ome-zarr's own, and the level-0 array via zarr
    node = next(iter(Reader(parse_url(str(image)))()))
    scale = next(t["scale"] for t in node.metadata["coordinateTransformations"][0]
                 if t["type"] == "scale")
    assert scale == pytest.approx(zooms[-stored.ndim:])
    level0 = zarr.open_array(str(image / "s0"), mode="r")
    assert level0.metadata.codecs[0].to_dict()["name"] == "medzip"
    np.testing.assert_array_equal(level0[...], stored)
    # and back, spacing included
    back = tmp_path / "back.nii.gz"
    assert main(["convert", str(image), str(back)]) == 0
    img = nibabel.load(str(back))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).T, stored)
    assert [float(z) for z in img.header.get_zooms()] == pytest.approx(zooms[::-1])
    assert main(["convert", str(image), str(tmp_path / "back.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), stored)


def test_convert_dicom_spacing_and_no_overwrite(tmp_path, capsys):
    from conftest import _pydicom_test_file, dicom_words
    from medzip.cli import main

    src = _pydicom_test_file("CT_small.dcm")
    if src is None:
        pytest.skip("pydicom's CT_small.dcm not available")
    image = tmp_path / "ct.ome.zarr"
    assert main(["convert", str(src), str(image), "-l", str(LEVEL)]) == 0
    attrs = zarr.open_group(str(image), mode="r").attrs.asdict()
    dataset = attrs["ome"]["multiscales"][0]["datasets"][0]
    assert dataset["coordinateTransformations"][0]["scale"] == pytest.approx([5.0, 0.661468, 0.661468])
    np.testing.assert_array_equal(zarr.open_array(str(image / "s0"))[...], dicom_words(src))
    before = sorted(p.relative_to(image) for p in image.rglob("*"))
    capsys.readouterr()
    assert main(["convert", str(src), str(image)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.relative_to(image) for p in image.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.ome.zarr"]  # no temporaries left
