"""Public Python API: arrays and payloads in, ``.mzp`` bytes out, and back.

Every function is safe to call from many threads at once. ``workers`` is the number of worker
processes one call may use: the API defaults to 1 (a library should not take every core of
its host unasked; integrations parallelise across calls), the CLI to every usable core;
0 or None means every usable core. Output bytes never depend on it.
"""
from __future__ import annotations

import hashlib

import numpy as np
import zstandard

from . import __version__, general
from .container import Container, ContainerWriter, crc32, section_refs
from .errors import CorruptStreamError, MedzipError
from .formats.base import Payload
from .formats.stored import stored_payload
from .volume_codec import CodecSettings, decode_volume, encode_volume, volume_summary

__all__ = ["compress", "decompress", "compress_payload", "compress_smallest",
           "decompress_payload", "inspect", "verify", "Archive"]

MAX_MEMBER_SIZE = 1 << 40  # largest member a reader accepts (docs/FORMAT.md)
# Each member is stored as the smallest of these codings (format 1.2). xz (LZMA2 at its
# slowest preset, ~1 MB/s) is only tried on members up to MEMBER_XZ_MAX bytes.
MEMBER_CODECS = ("raw", "zstd", "xz")
MEMBER_XZ_MAX = 8 << 20
# Stored-file fallback (compress_smallest): files up to this size are always also tried stored;
# larger ones only when zstd -3 of their bytes comes within STORED_PROBE_MARGIN of the archive.
STORED_TRY_ALL_BYTES = 128 << 10
STORED_PROBE_MARGIN = 1.15


def compress(array, *, level: int | str | None = None, model: str | None = None,
             chunk_slices: int | None = None, workers: int | None = 1,
             progress: bool = False, fallback: bool = True) -> bytes:
    """Compress one integer array losslessly; returns the ``.mzp`` bytes.

    ``array``: integers of 8 to 32 bits, any byte order; 2-D (y, x), 3-D (z, y, x) or 4-D
    (t, z, y, x). ``level``: 1..9 or ``"fast"`` (1), ``"default"`` (5), ``"strong"`` (9);
    1-3 classical predictor, 4-6 the LSTM, 7-9 also search encoder options. ``model``: a
    built-in model name or a model file (``medzip train``). ``chunk_slices``: slices per
    independently decodable chunk (default: about 64). ``workers``: processes for this call
    (1; 0/None = every usable core). ``progress``: a progress bar on stderr. ``fallback``:
    store the volume's bytes with zstd or xz instead when that is smaller (the default; off
    forces the predictive coding).
    """
    return compress_payload(Payload([np.asarray(array)]), level=level, model=model,
                            chunk_slices=chunk_slices, workers=workers, progress=progress,
                            fallback=fallback)


def decompress(data, *, workers: int | None = 1, progress: bool = False,
               model: str | None = None, slices: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse of :func:`compress`: returns the exact stored integers (dtype, shape, values).

    ``data``: the ``.mzp`` bytes (any buffer). ``model`` is only needed for streams coded with
    a user-trained model file. ``slices`` = ``(start, stop)`` decodes only those slices of the
    z axis (of every time point for 4-D), touching just the chunks that hold them; each
    chunk's CRC-32 is checked, but the volume's digest only when everything is decoded.
    Raises :class:`CorruptStreamError` for damaged data, :class:`MedzipError` otherwise.
    """
    archive = Archive(data)
    if len(archive.volume_entries) != 1:
        raise MedzipError(f"archive holds {len(archive.volume_entries)} volumes; "
                          "use decompress_payload")
    if slices is not None:
        return archive.volume(0, workers=workers, progress=progress, model=model,
                              slices=slices)
    return archive.payload(workers=workers, progress=progress, model=model).volumes[0]


def compress_payload(payload: Payload, *, level: int | str | None = None,
                     model: str | None = None, chunk_slices: int | None = None,
                     workers: int | None = 1, progress: bool = False,
                     fallback: bool = True) -> bytes:
    """Compress a file's payload (volumes + verbatim members + format metadata); options as
    in :func:`compress`."""
    settings = CodecSettings.make(level=level, model=model, chunk_slices=chunk_slices,
                                  workers=workers, progress=progress, fallback=fallback)
    return _compress(payload, settings)


def _compress(payload: Payload, settings: CodecSettings) -> bytes:
    writer = ContainerWriter()
    volumes = [encode_volume(np.asarray(v), writer, settings) for v in payload.volumes]
    members = []
    for name, data in payload.members.items():
        codec, coded = general.smallest(data, MEMBER_CODECS if len(data) <= MEMBER_XZ_MAX
                                        else MEMBER_CODECS[:2])
        ref = writer.add_section(coded)
        members.append({"name": name, "codec": codec, "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(), **ref})
    header = {"writer": f"medzip {__version__}", "volumes": volumes, "members": members,
              "source": payload.meta}
    return writer.finish(header)


def _stored_archive(original: bytes, codec: str) -> bytes:
    """A format 2.0 stored-file archive (docs/FORMAT.md §2.1) of ``original`` coded with
    ``codec``; every default is omitted, and instead of a SHA-256 (32+ bytes on files that are
    often a few hundred) the bytes are checked by a CRC-32: the section's own for raw, the
    frame's content checksum for zstd, ``data_crc32`` for xz."""
    writer = ContainerWriter()
    if codec == "raw":
        member = {}
        coded = original
    elif codec == "zstd":
        coded = general.zstd(original, checksum=True)
        member = {"codec": codec, "size": len(original)}
    else:
        coded = general.xz(original)
        member = {"codec": codec, "size": len(original), "data_crc32": crc32(original)}
    member["crc32"] = writer.add_section(coded)["crc32"]
    header = {"members": [member], "source": stored_payload(b"").meta, "volumes": []}
    return writer.finish(header, compact=True)


def compress_smallest(payload: Payload, original: bytes | None, **options) -> tuple[bytes, Payload]:
    """``(archive, payload it holds)``: :func:`compress_payload` of ``payload``, or the
    ``original`` file's bytes stored whole (raw, zstd or xz) when that archive is smaller.

    Files up to STORED_TRY_ALL_BYTES are tried both ways; larger ones are tried stored only when
    a fast zstd -3 pass over them comes close to the coded archive (clinical files never do,
    so their encode time does not change)."""
    data = compress_payload(payload, **options)
    if original is None:
        return data, payload
    if len(original) > STORED_TRY_ALL_BYTES:
        probe = len(general.zstd(original, 3))
        if probe > STORED_PROBE_MARGIN * len(data):
            return data, payload
    codecs = MEMBER_CODECS if len(original) <= MEMBER_XZ_MAX else MEMBER_CODECS[:2]
    alt = min((_stored_archive(original, c) for c in codecs), key=len)
    if len(alt) < len(data):
        return alt, stored_payload(original)
    return data, payload


def decompress_payload(data, *, workers: int | None = 1, progress: bool = False,
                       model: str | None = None) -> Payload:
    """Every volume and member of an archive, each checked against its digest."""
    return Archive(data).payload(workers=workers, progress=progress, model=model)


def inspect(data) -> dict:
    """Header summary without decoding voxels: sizes, ratio, bits/voxel, model, and whether
    every section the header names is present (``complete``; CRCs are not checked)."""
    return Archive(data).info()


def verify(data, *, workers: int | None = 1, progress: bool = False,
           model: str | None = None) -> dict:
    """Decode everything and check every checksum (raises CorruptStreamError on damage);
    returns :func:`inspect`'s summary."""
    archive = Archive(data)
    archive.payload(workers=workers, progress=progress, model=model)
    return archive.info()


class Archive:
    """One parsed ``.mzp``: the header is read and validated once, then volumes, members and
    the summary are served from it (what the file-level commands need, without re-parsing)."""

    def __init__(self, data):
        self.container = Container.parse(data)
        header = self.container.header
        compact = self.container.version >= (2, 0)
        vols = header.get("volumes")
        if not isinstance(vols, list):
            raise CorruptStreamError("medzip header has no volume list")
        members = header.get("members", [])
        if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
            raise CorruptStreamError("medzip header is malformed (member list)")
        if compact:
            members = [_member_defaults(m, self.container) for m in members]
        source = header.get("source")
        if source is not None and not isinstance(source, dict):
            raise CorruptStreamError("medzip header is malformed (source)")
        self.volume_entries: list = vols
        self.member_entries: list[dict] = members
        self.source: dict = source or {"format": "array"}

    def volume(self, i: int, *, workers: int | None = 1, progress: bool = False,
               model: str | None = None, slices: tuple[int, int] | None = None) -> np.ndarray:
        return decode_volume(self.container, self.volume_entries[i], workers=workers,
                             progress=progress, model=model, slices=slices)

    def member(self, i: int) -> tuple[str, bytes]:
        m = self.member_entries[i]
        name, size = m.get("name"), m.get("size")
        if not isinstance(name, str) or "\0" in name:
            raise CorruptStreamError(f"medzip header is malformed (member {i} name)")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_MEMBER_SIZE:
            raise CorruptStreamError(f"medzip header is malformed (member '{name}' size)")
        raw = self.container.section(m, f"member '{name}'")
        codec = m.get("codec", "raw")
        if codec not in MEMBER_CODECS:
            raise CorruptStreamError(f"member '{name}' uses an unknown codec")
        blob = general.inflate(codec, raw, size, f"member '{name}'")
        if "sha256" in m or self.container.version < (2, 0):
            if len(blob) != size or hashlib.sha256(blob).hexdigest() != m.get("sha256"):
                raise CorruptStreamError(f"member '{name}' is corrupted (SHA-256 mismatch)")
        elif "data_crc32" not in m and _self_checked(codec, raw):
            pass  # 2.x stored file: the zstd frame's checksum was verified while inflating
        elif isinstance(m.get("data_crc32"), bool) or crc32(blob) != m.get("data_crc32"):
            raise CorruptStreamError(f"member '{name}' is corrupted (CRC-32 mismatch)")
        return name, blob

    def payload(self, *, workers: int | None = 1, progress: bool = False,
                model: str | None = None) -> Payload:
        volumes = [self.volume(i, workers=workers, progress=progress, model=model)
                   for i in range(len(self.volume_entries))]
        members = dict(self.member(i) for i in range(len(self.member_entries)))
        return Payload(volumes, members, self.source)

    def info(self) -> dict:
        container = self.container
        vols = [volume_summary(vh) for vh in self.volume_entries]
        sizes = [m.get("size", 0) for m in self.member_entries]
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes):
            raise CorruptStreamError("medzip header is malformed (member size)")
        raw = sum(v["raw_bytes"] for v in vols) + sum(sizes)
        voxels = sum(v["voxels"] for v in vols)
        refs = list(section_refs(container.header))
        return {
            "format_version": "%d.%d" % container.version,
            "writer": container.header.get("writer"),
            "source": container.header.get("source"),
            "volumes": vols,
            "members": [{"name": m.get("name"), "size": m.get("size"), "stored": m.get("length")}
                        for m in self.member_entries],
            "compressed_bytes": container.total_size,
            "original_bytes": raw,
            "complete": all(container.holds(r) for r in refs),
            "ratio": raw / container.total_size if container.total_size else 0.0,
            "bits_per_voxel": 8.0 * sum(v["stored_bytes"] for v in vols) / voxels if voxels else 0.0,
        }


def _member_defaults(m: dict, container: Container) -> dict:
    """A 2.x member entry with its omitted keys filled in: name "file", offset 0, length the
    rest of the body, codec "raw"; a raw member's size is its length and its bytes are checked
    by the section's CRC-32."""
    out = {"name": "file", "offset": 0, "codec": "raw", **m}
    if "length" not in out and isinstance(out["offset"], int):
        out["length"] = container.total_size - container.body_start - out["offset"]
    if out["codec"] == "raw" and "sha256" not in out:
        out.setdefault("size", out.get("length"))
        out.setdefault("data_crc32", out.get("crc32"))
    return out


def _self_checked(codec: str, raw: bytes) -> bool:
    """A zstd frame with a content checksum: the decoder verified the bytes already."""
    try:
        return codec == "zstd" and zstandard.get_frame_parameters(raw).has_checksum
    except zstandard.ZstdError:
        return False
