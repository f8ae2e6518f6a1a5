"""``medzip convert``: a medical volume to an OME-Zarr image with the medzip codec, and back.

``medzip convert IN OUT.ome.zarr`` reads IN with medzip's file readers (NIfTI, DICOM file or
folder, NRRD, MetaImage, .npy), takes the voxel spacing from the source header, and writes an
OME-Zarr image (NGFF 0.5, Zarr v3) through ``ome_zarr.writer.write_image``: level 0 is the exact
stored integers, one medzip stream per chunk; ``--levels N`` adds N-1 nearest-neighbour
downsampled levels (in y, x). ``medzip convert IN.ome.zarr OUT.npy|.nii|.nii.gz`` writes level
0 back, with the spacing in the NIfTI header. Outputs appear only when complete; an existing one
is kept unless ``-f``.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import MedzipError, UnsupportedInputError

DEFAULT_CHUNKS = (32, 256, 256)
_ZARR_SUFFIXES = (".zarr",)
_UNIT = "millimeter"  # DICOM, NIfTI (xyzt_units mm in practice), NRRD and MetaImage all use mm


def _is_zarr(path: Path) -> bool:
    return path.name.lower().endswith(_ZARR_SUFFIXES)


# -- spacing from the source header ---------------------------------------------------------------
def _nifti_spacing(src: Path, ndim: int) -> list[float]:
    import nibabel

    zooms = [float(z) for z in nibabel.load(str(src)).header.get_zooms()]
    return zooms[::-1][-ndim:] if len(zooms) >= ndim else [1.0] * ndim  # array axes are reversed


def _dicom_spacing(src: Path) -> list[float] | None:
    import pydicom

    first = src if src.is_file() else next((p for p in sorted(src.rglob("*")) if p.is_file()), None)
    if first is None:
        return None
    ds = pydicom.dcmread(str(first), stop_before_pixels=True, force=True)
    holder = ds
    shared = ds.get("SharedFunctionalGroupsSequence")
    if "PixelSpacing" not in ds and shared:  # enhanced multi-frame objects
        measures = shared[0].get("PixelMeasuresSequence")
        holder = measures[0] if measures else ds
    if "PixelSpacing" not in holder:
        return None
    row, col = (float(v) for v in holder.PixelSpacing)
    between = holder.get("SpacingBetweenSlices") or holder.get("SliceThickness")
    return [float(between) if between else 1.0, row, col]


def _itk_spacing(src: Path) -> list[float] | None:
    try:
        import SimpleITK as sitk
    except ImportError:  # the 'formats' extra: spacing then defaults to 1
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(src))
    reader.ReadImageInformation()
    return [float(s) for s in reader.GetSpacing()][::-1]  # ITK gives x, y, z


def source_spacing(src: Path, fmt: str, ndim: int) -> list[float]:
    """Voxel size along each array axis (mm; 1.0 where the header has none or for time)."""
    spatial = min(ndim, 3)
    found = None
    try:
        if fmt == "nifti":
            return _nifti_spacing(src, ndim)
        if fmt == "dicom":
            found = _dicom_spacing(src)
        elif fmt in ("nrrd", "metaimage"):
            found = _itk_spacing(src)
    except Exception:  # a header the spacing readers dislike still converts, at spacing 1
        found = None
    found = (found or [])[-spatial:]
    if len(found) < spatial:
        found = [1.0] * (spatial - len(found)) + list(found)
    return [1.0] * (ndim - spatial) + [float(s) if s and s > 0 else 1.0 for s in found]


# -- to OME-Zarr ----------------------------------------------------------------------------------
def _axes(ndim: int) -> list[str]:
    return ["t", "z", "y", "x"][4 - ndim:]


def _chunks(shape: tuple[int, ...], chunks: tuple[int, ...] | None) -> tuple[int, ...]:
    want = tuple(chunks) if chunks else (1,) * max(0, len(shape) - 3) + DEFAULT_CHUNKS[-min(len(shape), 3):]
    if len(want) != len(shape):
        raise UnsupportedInputError(f"--chunks needs {len(shape)} sizes for a {len(shape)}-D volume")
    return tuple(max(1, min(c, s)) for c, s in zip(want, shape))


def write_ome_zarr(volume: np.ndarray, dst: Path, spacing: list[float], *, level: int = 5,
                   chunks: tuple[int, ...] | None = None, levels: int = 1) -> None:
    """Write ``volume`` to a new OME-Zarr image at ``dst`` (which must not exist)."""
    import zarr
    from ome_zarr.scale import Methods
    from ome_zarr.writer import write_image

    from .zarr import MedZipCodec

    if not 2 <= volume.ndim <= 4:
        raise UnsupportedInputError(f"OME-Zarr output takes 2-D to 4-D volumes, not {volume.ndim}-D")
    axes = _axes(volume.ndim)
    codec = MedZipCodec(level=level)  # validates the level before anything is written
    group = zarr.open_group(str(dst), mode="w-")
    write_image(volume, group, scale_factors=[2 ** i for i in range(1, levels)],
                method=Methods.NEAREST, axes=axes,
                scale=dict(zip(axes, spacing)),
                axes_units={a: _UNIT for a in axes if a != "t"},
                storage_options={"chunks": _chunks(volume.shape, chunks), "serializer": codec,
                                 "compressors": None})


def _check_codec(image: Path) -> None:
    """ome-zarr hands the serializer to Zarr only with dask >= 2026.3 (older ones drop it and
    the image would be written with Zarr's default codec): check what was written."""
    import zarr

    codecs = zarr.open_array(str(image / "s0"), mode="r").metadata.to_dict().get("codecs", [])
    if not any(c.get("name") == "medzip" for c in codecs):
        raise MedzipError("ome-zarr wrote the image without the medzip codec "
                          "(needs dask >= 2026.3 and ome-zarr >= 0.18)")


def read_ome_zarr(src: Path) -> tuple[np.ndarray, list[float], list[str]]:
    """Level 0 of an OME-Zarr image: ``(array, spacing per axis, axis names)``."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    location = parse_url(str(src))
    if location is None:
        raise MedzipError(f"{src}: not a readable OME-Zarr image")
    node = next((n for n in Reader(location)() if n.load(Multiscales)), None)
    if node is None:
        raise MedzipError(f"{src}: no OME-Zarr multiscale image in it")
    axes = [a["name"] if isinstance(a, dict) else a for a in node.metadata.get("axes", [])]
    spacing = [1.0] * len(axes)
    for transform in (node.metadata.get("coordinateTransformations") or [[]])[0] or []:
        if transform.get("type") == "scale":
            spacing = [float(s) for s in transform["scale"]]
    return np.asarray(node.data[0].compute(scheduler="threads")), spacing, axes


# -- file outputs ---------------------------------------------------------------------------------
def _claim(dst: Path, force: bool) -> None:
    if dst.exists() and not force:
        raise MedzipError(f"{dst}: already exists (use -f to replace it)")


def _publish(tmp: Path, dst: Path) -> None:
    """Move a finished output into place; a replaced one goes only after that succeeded."""
    if dst.exists():
        old = dst.with_name(dst.name + ".medzip-old")
        os.replace(dst, old)
        os.replace(tmp, dst)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        os.replace(tmp, dst)


_FILE_SUFFIXES = (".npy", ".nii.gz", ".nii")


def _write_volume_file(arr: np.ndarray, spacing: list[float], dst: Path) -> None:
    ext = next((e for e in _FILE_SUFFIXES if dst.name.lower().endswith(e)), None)
    if ext is None:
        raise UnsupportedInputError(f"{dst}: output must be .npy, .nii, .nii.gz or .ome.zarr")
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=ext)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the temporary name only
    try:
        if ext == ".npy":
            np.save(tmp, arr)
        else:
            import nibabel

            zooms = spacing[::-1]  # NIfTI axes are the array's reversed
            affine = np.diag((zooms + [1.0, 1.0, 1.0])[:3] + [1.0])
            img = nibabel.Nifti1Image(np.ascontiguousarray(arr.T), affine)
            img.header.set_zooms(zooms)
            img.header.set_xyzt_units("mm")
            nibabel.save(img, str(tmp))
        _publish(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()


def convert(src, dst, *, level: int = 5, chunks: tuple[int, ...] | None = None, levels: int = 1,
            force: bool = False) -> dict:
    """Convert ``src`` -> ``dst``; one side is an OME-Zarr image. Returns a summary."""
    try:
        import ome_zarr  # noqa: F401
        import zarr  # noqa: F401
    except ImportError:
        raise MedzipError("medzip convert needs the zarr extra: pip install 'medzip[zarr]'") from None
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise MedzipError(f"{dst}: is the input")
    _claim(dst, force)
    if _is_zarr(src):
        if _is_zarr(dst):
            raise UnsupportedInputError("convert writes OME-Zarr from a volume file, or back")
        arr, spacing, axes = read_ome_zarr(src)
        _write_volume_file(arr, spacing, dst)
        return {"shape": arr.shape, "dtype": str(arr.dtype), "spacing": spacing, "axes": axes}
    if not _is_zarr(dst):
        raise UnsupportedInputError(f"{dst}: one side of convert must be an .ome.zarr image")
    from .files import load_file

    adapter, payload = load_file(src)
    if len(payload.volumes) != 1:
        raise UnsupportedInputError(f"{src}: holds {len(payload.volumes)} volumes; convert one series")
    volume = np.asarray(payload.volumes[0])
    spacing = source_spacing(src, adapter.name, volume.ndim)
    if levels < 1:
        raise UnsupportedInputError("--levels must be at least 1")
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}."))
    try:
        shutil.rmtree(tmp)  # write_image creates the group itself ("w-": must not exist)
        write_ome_zarr(volume, tmp, spacing, level=level, chunks=chunks, levels=levels)
        _check_codec(tmp)
        back, _, _ = read_ome_zarr(tmp)
        if back.dtype != volume.dtype.newbyteorder("=") or not np.array_equal(back, volume):
            raise MedzipError(f"{dst}: written image does not read back exactly; nothing kept")
        _publish(tmp, dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return {"shape": volume.shape, "dtype": str(volume.dtype), "spacing": spacing,
            "axes": _axes(volume.ndim)}


# -- command line ---------------------------------------------------------------------------------
def _chunk_arg(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated chunk sizes, got '{text}'")
    return sizes


def _run(args) -> int:
    import sys

    info = convert(args.input, args.output, level=args.level, chunks=args.chunks,
                   levels=args.levels, force=args.force)
    if args.verbosity >= 0:
        spacing = " x ".join(f"{s:g}" for s in info["spacing"])
        print(f"{args.input} -> {args.output}: {'x'.join(map(str, info['shape']))} {info['dtype']}, "
              f"spacing {spacing} ({','.join(info['axes'])})", file=sys.stderr)
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("convert", help="volume file <-> OME-Zarr image with the medzip codec",
                              description=__doc__.split("\n\n")[0].strip("`"))
    p.add_argument("input", metavar="IN", help="volume file/folder, or an .ome.zarr image")
    p.add_argument("output", metavar="OUT", help="OUT.ome.zarr, or .npy / .nii / .nii.gz")
    p.add_argument("-l", "--level", type=int, default=5, help="medzip level 1..9 (default 5)")
    p.add_argument("--chunks", type=_chunk_arg, default=None, metavar="Z,Y,X",
                   help="chunk shape (default 32,256,256, clipped to the volume)")
    p.add_argument("--levels", type=int, default=1, metavar="N",
                   help="multiscale levels, the extra ones nearest-neighbour in y, x (default 1)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=_run)
    return p
