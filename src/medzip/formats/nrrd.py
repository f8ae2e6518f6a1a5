"""NRRD (``.nrrd`` attached, ``.nhdr`` + detached data file), restored byte for byte.

The text header is parsed directly rather than through pynrrd: medzip needs the exact byte
offset where the voxels start (after the blank line, ``line skip`` lines and ``byte skip``
bytes), which pynrrd does not expose, and this way reading NRRD needs no optional package.
Everything that is not voxel data -- the header, skipped bytes, trailing bytes -- is kept
verbatim, so the restored file is byte-identical (checked against its SHA-256).

Encodings: ``raw`` voxels are handed to the codec as they are. ``gzip`` data is decompressed and
its voxels coded; at compression time the zlib level that reproduces the original deflate stream
is searched (pynrrd and teem use zlib) and the gzip header and trailer are kept, so the file is
restored byte-identical as well. A stream no zlib level reproduces (ITK >= 5.4 writes with
zlib-ng) is restored re-deflated at the hinted level: same header, same voxels (checked against
the SHA-256 of the decoded data), different compressed bytes; ``describe`` says which case a file
is. ``ascii``, ``hex`` and ``bzip2`` files are stored whole (zstd). Float, 64-bit and block types
are refused: the codec models 8-32 bit integers.

A fastest-varying non-spatial axis (``kinds`` vector/list/colour..., or ``space directions``
``none``; DWI gradients, RGB) is moved first for the codec, so 3-D context runs over space.

The machinery here (:class:`HeaderedImageAdapter`) is shared with MetaImage (metaimage.py):
a format supplies ``parse_header`` and the rest -- locating, decoding, re-encoding and checking
the voxel bytes, attached or detached -- is common.
"""
from __future__ import annotations

import hashlib
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptStreamError, MedzipError, UnsupportedInputError
from .base import Payload, plain_file_name, strip_archive_suffix
from .deflate import find_deflate_level, gzip_header_length, recompressed_note
from .npy import check_int_dtype, codec_view, read_input, sniff

_MAX_HEADER = 1 << 20


@dataclass
class Layout:
    """What a header says about its voxels."""

    dtype: np.dtype  # with the file's byte order
    shape: tuple[int, ...]  # C order, slowest axis first
    encoding: str  # "raw", "gzip", "zlib", or another name (kept verbatim)
    header_len: int  # bytes of the header file before attached data
    data_file: str | None = None  # detached data file, relative to the header's folder
    line_skip: int = 0
    byte_skip: int = 0  # after decoding; -1: the voxels are the last (decoded) bytes
    channels_last: bool = False  # fastest axis is non-spatial: coded as the slowest one
    summary: str = ""  # one line for describe()


def header_lines(blob: bytes, limit: int = _MAX_HEADER):
    """(line, offset after it) for each text line, "\\r" stripped, up to ``limit`` bytes."""
    pos = 0
    while pos < min(len(blob), limit):
        nl = blob.find(b"\n", pos, limit)
        end = len(blob) if nl < 0 else nl + 1
        yield blob[pos:end].rstrip(b"\r\n").decode("latin-1"), end
        pos = end


def _skip_lines(region: bytes, n: int, what) -> int:
    pos = 0
    for _ in range(n):
        nl = region.find(b"\n", pos)
        if nl < 0:
            raise UnsupportedInputError(f"{what}: data is shorter than its 'line skip'")
        pos = nl + 1
    return pos


def _wrapper_length(stream: bytes, kind: str) -> int:
    if kind == "gzip":
        return gzip_header_length(stream)
    ok = len(stream) >= 6 and stream[0] & 0x0F == 8 and ((stream[0] << 8) | stream[1]) % 31 == 0
    return 2 if ok and not stream[1] & 0x20 else 0  # FDICT streams need a dictionary: not ours


def _level_order(stream: bytes, kind: str) -> list[int]:
    """Levels to try, most likely first, from the gzip XFL / zlib FLEVEL hint."""
    if kind == "gzip":
        first = {2: [9], 4: [1]}.get(stream[8], [6, 5, 4, 3, 2, 7, 8])
    else:
        first = [[1], [2, 3, 4, 5], [6], [9, 7, 8]][stream[1] >> 6]
    return first + [lv for lv in (6, 9, 1, 5, 4, 3, 2, 7, 8) if lv not in first]


def _inflate(stream: bytes, hlen: int, what) -> tuple[bytes, int]:
    """Decompressed data and the length of the raw-deflate part of ``stream``."""
    d = zlib.decompressobj(-15)
    try:
        raw = d.decompress(stream[hlen:])
    except zlib.error as exc:
        raise UnsupportedInputError(f"{what}: damaged compressed data: {exc}") from None
    if not d.eof:
        raise UnsupportedInputError(f"{what}: compressed data is truncated")
    return raw, len(stream) - hlen - len(d.unused_data)


def detached_name(name: str, what) -> str:
    """The detached data file's name, which must sit in the header's own folder: the restore
    writes it from the archive, and an archive may only write beside its output (see
    formats.base.plain_file_name)."""
    try:
        return plain_file_name(name, "data file")
    except CorruptStreamError:
        raise UnsupportedInputError(
            f"{what}: data file '{name}' is not a plain file name in the header's folder; medzip "
            "restores detached data only next to its header (move it there and edit the header)"
        ) from None


class HeaderedImageAdapter:
    """Shared read/write for text-header image formats (NRRD, MetaImage)."""

    name = ""
    label = ""
    suffixes: tuple[str, ...] = ()
    magic: tuple[bytes, ...] = ()

    def parse_header(self, blob: bytes, path) -> Layout:
        raise NotImplementedError

    def can_read(self, path: Path) -> bool:
        path = Path(path)
        if path.is_dir():
            return False
        if path.name.lower().endswith(self.suffixes):
            return True
        head = sniff(path, 64)
        return any(head.startswith(m) for m in self.magic)

    # -- compress ----------------------------------------------------------------------------
    def read(self, path: Path) -> Payload:
        path = Path(path)
        blob = read_input(path)
        layout = self.parse_header(blob, path)
        check_int_dtype(layout.dtype, path)
        meta = {"format": self.name, "name": path.name, "size": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(), "dtype": layout.dtype.str,
                "shape": list(layout.shape), "encoding": layout.encoding,
                "channels_last": layout.channels_last, "summary": layout.summary}
        members = {"header": blob[:layout.header_len]}
        if layout.data_file:
            data_path = path.parent / layout.data_file
            region = read_input(data_path)
            meta["data_file"] = {"name": layout.data_file, "size": len(region),
                                 "sha256": hashlib.sha256(region).hexdigest()}
            if layout.header_len != len(blob):
                members["header_tail"] = blob[layout.header_len:]
        else:
            region = blob[layout.header_len:]
        try:
            volume = self._split(region, layout, meta, members, path)
        except _KeepVerbatim as why:
            meta["verbatim"] = str(why)
            members = {"header": blob}
            if layout.data_file:
                members["data_file"] = region
            return Payload([], members, meta)
        return Payload([volume], {k: v for k, v in members.items() if v}, meta)

    def _split(self, region: bytes, layout: Layout, meta: dict, members: dict, path) -> np.ndarray:
        """Cut the data region into verbatim pieces and the voxel array."""
        nbytes = math.prod(layout.shape) * layout.dtype.itemsize
        start = _skip_lines(region, layout.line_skip, path)
        if layout.encoding == "raw":
            decoded, prefix_end = region, start
        elif layout.encoding in ("gzip", "zlib"):
            stream = region[start:]
            hlen = _wrapper_length(stream, layout.encoding)
            if not hlen:
                raise _KeepVerbatim(f"{layout.encoding} data without a standard header")
            decoded, dlen = _inflate(stream, hlen, path)
            levels = _level_order(stream, layout.encoding)
            level = find_deflate_level(decoded, memoryview(stream)[hlen:hlen + dlen], levels)
            # Not reproducible (e.g. ITK >= 5.4 writes with zlib-ng): still code the voxels and
            # re-deflate at the hinted level on restore; header and voxels stay identical.
            meta["exact"] = level is not None
            meta["deflate_level"] = levels[0] if level is None else level
            meta["deflate_size"] = dlen
            meta["decoded_size"] = len(decoded)
            meta["decoded_sha256"] = hashlib.sha256(decoded).hexdigest()
            members["data_prefix"] = region[:start + hlen]
            members["data_suffix"] = stream[hlen + dlen:]  # trailer (CRC/Adler of the data) and beyond
            prefix_end = 0
        else:
            raise _KeepVerbatim(f"'{layout.encoding}' encoding")
        if layout.byte_skip < -1:
            raise UnsupportedInputError(
                f"{path}: invalid 'byte skip: {layout.byte_skip}' (NRRD allows -1 or more)")
        if layout.byte_skip == -1:  # the voxels are the last bytes (of the decoded data if gzip)
            offset = len(decoded) - nbytes
        else:
            offset = prefix_end + layout.byte_skip
        if offset < prefix_end or offset + nbytes > len(decoded):
            raise UnsupportedInputError(
                f"{path}: truncated {self.label} data ({len(decoded) - prefix_end} bytes after "
                f"the header, {nbytes} needed)")
        key = "data_prefix" if layout.encoding == "raw" else "decoded_prefix"
        members[key] = decoded[:offset]
        members["data_suffix" if layout.encoding == "raw" else "decoded_suffix"] = decoded[offset + nbytes:]
        meta["voxel_offset"] = offset
        arr = np.frombuffer(decoded, layout.dtype, math.prod(layout.shape), offset).reshape(layout.shape)
        if layout.channels_last:
            arr = np.moveaxis(arr, -1, 0)
        return codec_view(arr)

    # -- restore -----------------------------------------------------------------------------
    def _voxel_bytes(self, payload: Payload) -> bytes:
        meta = payload.meta
        dtype, shape = np.dtype(meta["dtype"]), tuple(int(s) for s in meta["shape"])
        if len(payload.volumes) != 1:
            raise CorruptStreamError(f"{self.label} archive holds {len(payload.volumes)} volumes, expected 1")
        vol = np.asarray(payload.volumes[0])
        if vol.size != math.prod(shape) or vol.dtype.kind != dtype.kind or vol.dtype.itemsize != dtype.itemsize:
            raise CorruptStreamError(f"{self.label} archive: decoded volume {vol.dtype}{list(vol.shape)} "
                                     f"does not match the recorded {dtype}{list(shape)}")
        if meta.get("channels_last"):
            vol = np.moveaxis(vol.reshape((shape[-1],) + shape[:-1]), 0, -1)
        return np.ascontiguousarray(vol.reshape(shape), dtype=dtype).tobytes()

    def patch_header(self, header: bytes, growth: int) -> bytes:
        """Header for a re-deflated stream ``growth`` bytes longer (MetaImage records the size)."""
        return header

    def _rebuild(self, payload: Payload) -> list[tuple[str | None, bytes]]:
        """(relative data-file name or None for the header file, bytes), all hash-checked."""
        meta, m = payload.meta, payload.members
        what = meta.get("name", self.label)
        try:
            detached = meta.get("data_file")
            header = m["header"] + m.get("header_tail", b"")
            exact = meta.get("exact", True)
            if "verbatim" in meta:
                header, region = m["header"], m.get("data_file", b"")
            else:
                decoded = m.get("decoded_prefix", b"") + self._voxel_bytes(payload) + m.get("decoded_suffix", b"")
                if meta["encoding"] == "raw":
                    body = decoded
                else:
                    if (len(decoded) != meta["decoded_size"]
                            or hashlib.sha256(decoded).hexdigest() != meta["decoded_sha256"]):
                        raise CorruptStreamError(
                            f"{what}: restored data does not match the original (SHA-256 mismatch)")
                    comp = zlib.compressobj(int(meta["deflate_level"]), zlib.DEFLATED, -15, 8)
                    body = comp.compress(decoded) + comp.flush()
                    if not exact:
                        header = self.patch_header(header, len(body) - int(meta["deflate_size"]))
                region = m.get("data_prefix", b"") + body + m.get("data_suffix", b"")
                if not detached:
                    header, region = header + region, b""
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise CorruptStreamError(f"{self.label} archive description is incomplete ({exc})") from None
        files = [(None, header, meta.get("size"), meta.get("sha256"))]
        if detached:
            files.append((detached["name"], region, detached.get("size"), detached.get("sha256")))
        for name, data, size, sha in files if exact else ():
            if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
                label = name or what
                if meta.get("encoding") in ("gzip", "zlib") and "verbatim" not in meta:
                    raise MedzipError(
                        f"{label}: voxels verified, but this machine's zlib compresses differently from "
                        "the one that made the archive, so the file would not be byte-identical")
                raise CorruptStreamError(f"{label}: restored file does not match the original (SHA-256 mismatch)")
        return [(name, data) for name, data, _, _ in files]

    def verify(self, payload: Payload) -> None:
        """Rebuild the file(s) in memory and check them against their SHA-256."""
        self._rebuild(payload)

    def outputs(self, meta: dict, out: Path) -> list[Path]:
        """The header file ``out`` and, when the data is detached, the data file beside it
        (the name the header refers to, so it cannot be changed; checked to be plain)."""
        out = Path(out)
        detached = meta.get("data_file")
        if not detached:
            return [out]
        name = plain_file_name(detached.get("name") if isinstance(detached, dict) else None,
                               f"{self.label} data file")
        if name == out.name:
            raise CorruptStreamError(f"{self.label} archive: data file '{name}' has the header's name")
        return [out, out.parent / name]

    def source_files(self, path: Path, meta: dict) -> list[Path]:
        """The input files read for ``path``: the header and any detached data file."""
        return [Path(p) for p in self.outputs(meta, Path(path))]

    def write(self, payload: Payload, out: Path) -> list[Path]:
        """Write the header file at ``out`` and a detached data file, under its original
        name, next to it. Everything is checked before anything is written."""
        targets = self.outputs(payload.meta, Path(out))
        restored = self._rebuild(payload)
        if len(restored) != len(targets):
            raise CorruptStreamError(f"{self.label} archive description is inconsistent")
        for target, (_, data) in zip(targets, restored):
            target.write_bytes(data)
        return targets

    def default_output(self, payload: Payload, archive: Path) -> Path:
        name = strip_archive_suffix(archive)
        if name == Path(archive).name:
            original = payload.meta.get("name")  # from the archive: checked
            name = plain_file_name(original, "output name") if original else name + self.suffixes[0]
        return Path(archive).with_name(name)

    def storage_notes(self, meta: dict) -> list[dict]:
        """Where the file will not come back byte for byte: a gzip / zlib stream no zlib level
        reproduces is restored re-compressed (``kind`` ``recompressed``; files.CompressReport)."""
        if "verbatim" in meta or meta.get("encoding") not in ("gzip", "zlib") \
                or meta.get("exact", True):
            return []
        return [recompressed_note(meta["encoding"])]

    def describe(self, meta: dict) -> list[str]:
        lines = [f"{self.label}: {meta.get('summary', '')}"]
        if meta.get("data_file"):
            lines.append(f"detached data file {meta['data_file']['name']} ({meta['data_file']['size']} bytes)")
        if "verbatim" in meta:
            lines.append(f"stored verbatim ({meta['verbatim']}); restored byte-identical")
        elif meta.get("encoding") in ("gzip", "zlib") and meta.get("exact", True):
            lines.append(f"{meta['encoding']} data decoded and coded as voxels; restored byte-identical "
                         f"(zlib level {meta.get('deflate_level')})")
        elif meta.get("encoding") in ("gzip", "zlib"):
            lines.append(f"{meta['encoding']} data decoded and coded as voxels; the original stream was "
                         f"not written by zlib, so it is restored re-compressed (zlib level "
                         f"{meta.get('deflate_level')}): header and voxels identical, file bytes differ")
        if meta.get("channels_last"):
            lines.append("channel axis coded as the slowest axis")
        lines.append(f"original {meta.get('name')} {meta.get('size')} bytes, SHA-256 {meta.get('sha256')}")
        return lines


class _KeepVerbatim(Exception):
    """Internal: the voxels cannot be separated from the file; store the file whole."""


# -- NRRD specifics ----------------------------------------------------------------------------

_NRRD_TYPES = {
    "i1": ("signed char", "int8", "int8_t"),
    "u1": ("uchar", "unsigned char", "uint8", "uint8_t"),
    "i2": ("short", "short int", "signed short", "signed short int", "int16", "int16_t"),
    "u2": ("ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t"),
    "i4": ("int", "signed int", "int32", "int32_t"),
    "u4": ("uint", "unsigned int", "uint32", "uint32_t"),
    "i8": ("longlong", "long long", "long long int", "signed long long", "signed long long int",
           "int64", "int64_t"),
    "u8": ("ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t"),
    "f4": ("float",),
    "f8": ("double",),
}
_NRRD_TYPE = {alias: code for code, aliases in _NRRD_TYPES.items() for alias in aliases}
_ENCODINGS = {"raw": "raw", "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2",
              "ascii": "ascii", "text": "ascii", "txt": "ascii", "hex": "hex"}
_SPATIAL_KINDS = {"domain", "space", "time", "none", "???"}


def _int_field(fields: dict, key: str, default: int, what) -> int:
    try:
        return int(fields.get(key, default))
    except ValueError:
        raise UnsupportedInputError(f"{what}: NRRD field '{key}' is not an integer") from None


class NrrdAdapter(HeaderedImageAdapter):
    name = "nrrd"
    label = "NRRD"
    suffixes = (".nrrd", ".nhdr")
    magic = (b"NRRD000",)

    def parse_header(self, blob: bytes, path) -> Layout:
        if not blob.startswith(b"NRRD000"):
            raise UnsupportedInputError(f"{path}: not an NRRD file (bad magic)")
        fields, header_len = {}, None
        for i, (line, end) in enumerate(header_lines(blob)):
            if i == 0 or line.startswith("#") or ":=" in line.split(": ", 1)[0]:
                continue  # magic, comments, key/value pairs
            if not line:
                header_len = end
                break
            key, sep, value = line.partition(": ")
            if sep:
                fields[key.strip().lower()] = value.strip()
        fields = {k.replace(" ", ""): v for k, v in fields.items()}  # "byte skip" == "byteskip"
        data_file = fields.get("datafile")
        if header_len is None:
            if not data_file:
                raise UnsupportedInputError(f"{path}: NRRD header has no end (no blank line)")
            header_len = len(blob)
        code = _NRRD_TYPE.get(fields.get("type", "").lower())
        if code is None:
            raise UnsupportedInputError(f"{path}: NRRD type '{fields.get('type')}' is not supported")
        try:
            sizes = [int(s) for s in fields["sizes"].split()]
        except (KeyError, ValueError):
            raise UnsupportedInputError(f"{path}: NRRD header lacks valid 'sizes'") from None
        encoding = _ENCODINGS.get(fields.get("encoding", "").lower(), fields.get("encoding", "?"))
        endian = fields.get("endian", "").lower()
        if code[1] != "1" and endian not in ("little", "big") and encoding not in ("ascii", "hex"):
            raise UnsupportedInputError(f"{path}: NRRD header lacks 'endian' for {code} data")
        dtype = np.dtype(("<" if endian != "big" else ">") + code)
        if data_file is not None:
            if data_file.split()[0] == "LIST" or "%" in data_file:
                raise UnsupportedInputError(f"{path}: NRRD data split over several files is not supported")
            data_file = detached_name(data_file, path)
        kinds = fields.get("kinds", "").lower().split()
        directions = fields.get("spacedirections", "").split()
        channels = len(sizes) >= 3 and (
            (bool(kinds) and kinds[0] not in _SPATIAL_KINDS) or (bool(directions) and directions[0] == "none"))
        dims = "x".join(str(s) for s in sizes)
        order = {"<": " little-endian", ">": " big-endian"}.get(dtype.str[0], "")
        return Layout(dtype=dtype, shape=tuple(reversed(sizes)), encoding=encoding,
                      header_len=header_len, data_file=data_file,
                      line_skip=_int_field(fields, "lineskip", 0, path),
                      byte_skip=_int_field(fields, "byteskip", 0, path), channels_last=channels,
                      summary=f"{dims} (fastest axis first), {dtype.name}{order}, encoding {encoding}")


ADAPTER = NrrdAdapter()
