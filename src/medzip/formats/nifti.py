"""NIfTI-1 / NIfTI-2 single files (``.nii``, ``.nii.gz``) via nibabel.

The voxel data is read as the **stored integers** (``get_unscaled``; scl_slope/scl_inter are
never applied) and handed to the codec with its axes reversed: nibabel's (x, y, z[, t, ...]) in
Fortran order is, byte for byte, a C-ordered (..., t, z, y, x) array, which is medzip's axis
convention (slices along the slowest axis). Everything else in the file -- the header,
extensions and padding before ``vox_offset``, and any bytes after the data -- is kept verbatim,
so a ``.nii`` is restored byte-identical (checked against its SHA-256). For ``.nii.gz`` the
guarantee is on the *decompressed* bytes; in addition the gzip header is kept and the zlib level
that reproduces the original deflate stream is searched at compression time, so files written
by zlib (nibabel, Python, most tools) come back byte-identical as ``.nii.gz`` too.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.arrayproxy import ArrayProxy

from ..errors import UnsupportedInputError
from .base import Payload, strip_archive_suffix
from .deflate import find_deflate_level, gzip_header_length, recompressed_note
from .npy import check_int_dtype, check_pieces, codec_view, file_pieces, read_input, sniff

_GZ_MAGIC = b"\x1f\x8b"
_LEVELS = (6, 1, 9, 5, 4, 3, 2, 7, 8)  # zlib levels tried, most common first
_DEFAULT_LEVEL = 6


def _nifti_version(head: bytes) -> int | None:
    """1 or 2 for a single-file NIfTI header (either byte order), else None."""
    if len(head) >= 348 and head[344:348] == b"n+1\0":
        if 348 in (struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]):
            return 1
    if len(head) >= 540 and head[4:8] == b"n+2\0":
        if 540 in (struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]):
            return 2
    return None


def _head_of(path: Path) -> bytes:
    """Up to 540 decompressed leading bytes of a file, b"" when unreadable."""
    head = sniff(path, 1 << 16)
    if head.startswith(_GZ_MAGIC):
        try:
            return zlib.decompressobj(wbits=31).decompress(head, 540)
        except zlib.error:
            return b""
    return head[:540]


def _deflate(pieces, level: int):
    comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8)
    for p in pieces:
        out = comp.compress(p)
        if out:
            yield out
    yield comp.flush()


def _gunzip(gz: bytes, path) -> bytes:
    try:
        return gzip.decompress(gz)
    except (OSError, EOFError, zlib.error) as exc:
        raise UnsupportedInputError(f"{path}: damaged gzip stream: {exc}") from None


def _json_float(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


class NiftiAdapter:
    name = "nifti"

    def can_read(self, path: Path) -> bool:
        path = Path(path)
        low = path.name.lower()
        if (low.endswith(".nii") or low.endswith(".nii.gz")) and not path.is_dir():
            return True
        return _nifti_version(_head_of(path)) is not None  # content check: stdin, odd names

    def read(self, path: Path) -> Payload:
        blob = read_input(path)
        gz = blob.startswith(_GZ_MAGIC)
        raw = _gunzip(blob, path) if gz else blob
        version = _nifti_version(raw[:540])
        if version is None:
            if raw[344:348] == b"ni1\0" or raw[4:8] == b"ni2\0":
                raise UnsupportedInputError(
                    f"{path}: NIfTI header/image pairs (.hdr/.img) are not supported, only single .nii files")
            raise UnsupportedInputError(f"{path}: not a NIfTI-1/NIfTI-2 file (bad header)")
        hklass = nib.Nifti1Header if version == 1 else nib.Nifti2Header
        try:
            # check=False: odd but readable headers are kept verbatim anyway.
            hdr = hklass.from_fileobj(io.BytesIO(raw), check=False)
            label = hdr.get_value_label("datatype")
            dtype = hdr.get_data_dtype()
        except Exception as exc:  # nibabel raises assorted types on malformed headers
            raise UnsupportedInputError(f"{path}: unreadable NIfTI header: {exc}") from None
        check_int_dtype(dtype, path, f"{label} ({dtype.str})" if dtype.kind != "V" else label)
        shape = tuple(int(s) for s in hdr.get_data_shape())
        if any(s < 0 for s in shape):  # two negative axes would pass the size check below
            raise UnsupportedInputError(f"{path}: NIfTI header has a negative dimension {shape}")
        offset = int(hdr.get_data_offset())
        count = math.prod(shape)
        end = offset + count * dtype.itemsize
        if offset < 0 or len(raw) < end:
            raise UnsupportedInputError(
                f"{path}: truncated NIfTI file ({len(raw)} bytes, voxel data should end at byte {end})")
        volumes = []
        if count:
            # Stored integers; the proxy's array is (x, y, z, ...) Fortran order, so .T is the
            # C-ordered (..., z, y, x) view of the same bytes.
            stored = ArrayProxy(io.BytesIO(raw), hdr, mmap=False).get_unscaled()
            volumes.append(codec_view(np.asarray(stored).T))
        members = {"nifti_header": raw[:offset]}
        if len(raw) > end:
            members["nifti_trailer"] = raw[end:]
        slope, inter = hdr["scl_slope"], hdr["scl_inter"]
        meta = {
            "format": self.name, "nifti_version": version, "dtype": dtype.str, "datatype": label,
            "shape": list(shape), "vox_offset": offset,
            "nii_size": len(raw), "nii_sha256": hashlib.sha256(raw).hexdigest(),
            "zooms": [_json_float(z) for z in hdr.get_zooms()],
            "scl_slope": _json_float(slope), "scl_inter": _json_float(inter),
            "descrip": bytes(hdr["descrip"]).split(b"\0")[0].decode("latin-1"),
            "gzip": gz,
        }
        if gz:
            hlen = gzip_header_length(blob)
            meta.update(gz_size=len(blob), gz_sha256=hashlib.sha256(blob).hexdigest(),
                        gz_level=find_deflate_level(raw, memoryview(blob)[hlen:len(blob) - 8],
                                                       _LEVELS) if hlen else None)
            if hlen:
                members["gzip_header"] = blob[:hlen]
        return Payload(volumes, members, meta)

    def _pieces(self, payload: Payload) -> list:
        return file_pieces(payload, "nifti_header", "nifti_trailer", "NIfTI")

    def verify(self, payload: Payload) -> None:
        """Rebuild the .nii in memory and check it against the original SHA-256."""
        check_pieces(self._pieces(payload), payload.meta.get("nii_sha256"),
                     payload.meta.get("nii_size"), "restored NIfTI")

    def write(self, payload: Payload, out: Path) -> list[Path]:
        """Write ``.nii``, or gzip when ``out`` ends in ``.gz`` (or, with another suffix, if the
        original was gzipped). The .nii bytes are checked before anything is written."""
        out = Path(out)
        meta = payload.meta
        pieces = self._pieces(payload)
        check_pieces(pieces, meta.get("nii_sha256"), meta.get("nii_size"), f"{out}")
        low = out.name.lower()
        gz = True if low.endswith(".gz") else False if low.endswith(".nii") else bool(meta.get("gzip"))
        with open(out, "wb") as f:
            if not gz:
                for p in pieces:
                    f.write(p)
                return [out]
            # Original gzip header (name, mtime, flags) + deflate at the original zlib level.
            level = meta.get("gz_level") or _DEFAULT_LEVEL
            head = payload.members.get("gzip_header") or gzip.compress(b"", mtime=0)[:10]
            f.write(head)
            crc = 0
            for p in pieces:
                crc = zlib.crc32(p, crc)
            for chunk in _deflate(pieces, int(level)):
                f.write(chunk)
            f.write(struct.pack("<II", crc & 0xFFFFFFFF, int(meta["nii_size"]) & 0xFFFFFFFF))
        return [out]

    def default_output(self, payload: Payload, archive: Path) -> Path:
        name = strip_archive_suffix(archive)
        low = name.lower()
        if name == Path(archive).name or not (low.endswith(".nii") or low.endswith(".nii.gz")):
            name += ".nii.gz" if payload.meta.get("gzip") else ".nii"
        return Path(archive).with_name(name)

    def storage_notes(self, meta: dict) -> list[dict]:
        """A ``.nii.gz`` whose deflate stream no zlib level reproduces comes back with the same
        ``.nii`` bytes, re-compressed (``kind`` ``recompressed``; files.CompressReport)."""
        if not meta.get("gzip") or meta.get("gz_level"):
            return []
        return [recompressed_note("gzip")]

    def describe(self, meta: dict) -> list[str]:
        shape = "x".join(str(s) for s in meta.get("shape", []))
        order = {"<": "little-endian", ">": "big-endian", "|": "single-byte"}.get(
            meta.get("dtype", "|")[:1], "")
        zooms = ", ".join("?" if z is None else f"{z:g}" for z in meta.get("zooms", []))
        lines = [f"NIfTI-{meta.get('nifti_version')}: shape {shape} (x, y, z, ...), "
                 f"{meta.get('datatype')} {order}, voxel size {zooms}",
                 f"vox_offset {meta.get('vox_offset')}, scl_slope {meta.get('scl_slope')}, "
                 f"scl_inter {meta.get('scl_inter')}"]
        if meta.get("descrip"):
            lines.append(f"descrip: {meta['descrip']}")
        lines.append(f".nii {meta.get('nii_size')} bytes, SHA-256 {meta.get('nii_sha256')}")
        if meta.get("gzip"):
            exact = ("restored byte-identical (zlib level %s)" % meta["gz_level"]
                     if meta.get("gz_level") else "decompressed bytes restored exactly")
            lines.append(f".nii.gz {meta.get('gz_size')} bytes: {exact}")
        return lines


ADAPTER = NiftiAdapter()
