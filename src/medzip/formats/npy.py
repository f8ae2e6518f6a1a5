"""NumPy ``.npy`` files: the array is the volume, the header bytes are kept verbatim.

The voxel codec sees the data in *storage order*: a C-ordered file as its logical shape, a
Fortran-ordered file as the reversed shape (``arr.T``), so no copy is needed and a Fortran
(x, y, z) array (as nibabel produces) reaches the codec as medzip's (z, y, x). Arrays are handed
over in native byte order; the file's byte order is kept in ``meta["dtype"]`` and restored.
The header (magic, version, dict, padding) and any bytes after the data are stored as members,
so the restored file is byte-identical, which ``write`` checks against the original SHA-256.
"""
from __future__ import annotations

import hashlib
import io
import math
import tokenize
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat

from ..errors import CorruptStreamError, UnsupportedInputError
from .base import Payload, strip_archive_suffix

MAGIC = b"\x93NUMPY"
_SUFFIX = ".npy"


# ---- helpers shared with nifti.py -------------------------------------------------------------

def read_input(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise UnsupportedInputError(f"{path}: is a folder, expected a file") from None
    except OSError as exc:
        raise UnsupportedInputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def check_int_dtype(dtype: np.dtype, path, label: str | None = None) -> None:
    """Refuse anything but 8-32 bit integers: that is what the voxel codec models."""
    if dtype.kind not in "iu" or dtype.itemsize not in (1, 2, 4):
        name = label or (dtype.name if dtype.kind != "V" else str(dtype))
        raise UnsupportedInputError(
            f"{path}: data type {name} is not supported (medzip compresses 8-32 bit integer voxels)")


def codec_view(storage: np.ndarray) -> np.ndarray:
    """Native-endian, C-contiguous 2-4-D view of storage-order data (what the codec accepts).

    0-D/1-D become one row; more than 4 axes fold the leading ones into the slowest axis.
    The true shape lives in meta, so the fold is undone on restore.
    """
    arr = storage.astype(storage.dtype.newbyteorder("="), copy=False)
    if arr.ndim < 2:
        arr = arr.reshape(1, -1)
    elif arr.ndim > 4:
        arr = arr.reshape(-1, *arr.shape[-3:])
    return np.ascontiguousarray(arr)


def storage_bytes(payload: Payload, dtype: np.dtype, count: int, what: str):
    """The decoded volume as file-order bytes in the file's byte order (a buffer, no copy if native)."""
    if count == 0:
        return b""
    if len(payload.volumes) != 1:
        raise CorruptStreamError(f"{what}: archive holds {len(payload.volumes)} volumes, expected 1")
    vol = np.asarray(payload.volumes[0])
    if vol.size != count or vol.dtype.kind != dtype.kind or vol.dtype.itemsize != dtype.itemsize:
        raise CorruptStreamError(f"{what}: decoded volume {vol.dtype}{list(vol.shape)} does not "
                                 f"match the recorded {dtype} with {count} voxels")
    return memoryview(np.ascontiguousarray(vol).astype(dtype, copy=False)).cast("B")


def file_pieces(payload: Payload, header_key: str, trailer_key: str, what: str) -> list:
    """[verbatim header, voxel bytes in the file's layout, verbatim trailer] of a restored file."""
    meta = payload.meta
    try:
        dtype = np.dtype(meta["dtype"])
        count = math.prod(int(s) for s in meta["shape"])
        header = payload.members[header_key]
    except (KeyError, TypeError, ValueError):
        raise CorruptStreamError(f"archive's {what} description is incomplete") from None
    body = storage_bytes(payload, dtype, count, f"restored {what}")
    return [header, body, payload.members.get(trailer_key, b"")]


def check_pieces(pieces, sha256: str, size: int, what: str) -> None:
    h = hashlib.sha256()
    total = 0
    for p in pieces:
        h.update(p)
        total += len(p)
    if total != size or h.hexdigest() != sha256:
        raise CorruptStreamError(f"{what} does not match the original (SHA-256 mismatch)")


def write_pieces(pieces, out: Path) -> None:
    with open(out, "wb") as f:
        for p in pieces:
            f.write(p)


def sniff(path: Path, n: int) -> bytes:
    """First ``n`` bytes of a regular file, or b"" when it cannot be read (can_read never raises)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


# ---- the adapter ------------------------------------------------------------------------------

class NpyAdapter:
    name = "npy"

    def can_read(self, path: Path) -> bool:
        path = Path(path)
        if path.name.lower().endswith(_SUFFIX) and not path.is_dir():
            return True
        return sniff(path, len(MAGIC)) == MAGIC  # content check: stdin and renamed files

    def read(self, path: Path) -> Payload:
        data = read_input(path)
        if not data.startswith(MAGIC):
            raise UnsupportedInputError(f"{path}: not a .npy file (bad magic number)")
        fp = io.BytesIO(data)
        try:
            version = npformat.read_magic(fp)
            # 3.0 differs from 2.0 only by UTF-8 text, which plain integer dtypes never need.
            reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
            shape, fortran, dtype = reader(fp)
        # numpy parses the header dict with tokenize / ast: an unbalanced bracket raises
        # tokenize.TokenError, which is none of the others
        except (ValueError, TypeError, SyntaxError, tokenize.TokenError) as exc:
            raise UnsupportedInputError(f"{path}: unreadable .npy header: {exc}") from None
        check_int_dtype(dtype, path)
        offset = fp.tell()
        count = math.prod(shape)
        end = offset + count * dtype.itemsize
        if len(data) < end:
            raise UnsupportedInputError(
                f"{path}: truncated .npy file ({len(data)} bytes, the header needs {end})")
        storage_shape = tuple(reversed(shape)) if fortran else tuple(shape)
        volumes = []
        if count:
            flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            volumes.append(codec_view(flat.reshape(storage_shape)))
        members = {"npy_header": data[:offset]}
        if len(data) > end:
            members["npy_trailer"] = data[end:]
        meta = {"format": self.name, "dtype": dtype.str, "shape": [int(s) for s in shape],
                "fortran_order": bool(fortran), "npy_version": list(version),
                "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return Payload(volumes, members, meta)

    def _pieces(self, payload: Payload) -> list:
        return file_pieces(payload, "npy_header", "npy_trailer", ".npy")

    def verify(self, payload: Payload) -> None:
        """Rebuild the file in memory and check it against the original SHA-256."""
        check_pieces(self._pieces(payload), payload.meta.get("sha256"), payload.meta.get("size"),
                     "restored .npy")

    def write(self, payload: Payload, out: Path) -> list[Path]:
        pieces = self._pieces(payload)
        check_pieces(pieces, payload.meta.get("sha256"), payload.meta.get("size"), f"{out}")
        write_pieces(pieces, Path(out))
        return [Path(out)]

    def default_output(self, payload: Payload, archive: Path) -> Path:
        name = strip_archive_suffix(archive)
        if not name.lower().endswith(_SUFFIX) or name == Path(archive).name:
            name += _SUFFIX
        return Path(archive).with_name(name)

    def describe(self, meta: dict) -> list[str]:
        dtype = np.dtype(meta.get("dtype", "|u1"))
        order = {"<": "little-endian", ">": "big-endian", "|": "single-byte"}[dtype.str[0]]
        shape = "x".join(str(s) for s in meta.get("shape", [])) or "scalar"
        layout = "Fortran" if meta.get("fortran_order") else "C"
        ver = ".".join(str(v) for v in meta.get("npy_version", []))
        return [f".npy v{ver}: shape {shape}, {dtype.name} {order}, {layout} order",
                f"original file {meta.get('size')} bytes, SHA-256 {meta.get('sha256')}"]


ADAPTER = NpyAdapter()
