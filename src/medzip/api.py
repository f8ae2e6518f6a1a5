"""Public Python API: arrays and payloads in, ``.mzp`` bytes out, and back."""
from __future__ import annotations

import hashlib

import numpy as np
import zstandard

from . import __version__
from .container import Container, ContainerWriter
from .errors import CorruptStreamError, MedzipError
from .formats.base import Payload
from .volume_codec import CodecSettings, decode_volume, encode_volume, volume_summary

_MEMBER_LEVEL = 19


def compress(array, *, level: int | None = None, model: str | None = None,
             chunk_slices: int | None = None, workers: int = 1, progress: bool = False) -> bytes:
    """Compress one integer array (2-D, 3-D as z,y,x, or 4-D as t,z,y,x) losslessly."""
    return compress_payload(Payload([np.asarray(array)]), level=level, model=model,
                            chunk_slices=chunk_slices, workers=workers, progress=progress)


def decompress(data, *, workers: int = 1, progress: bool = False,
               model: str | None = None, slices: tuple[int, int] | None = None) -> np.ndarray:
    """Inverse of :func:`compress`: returns the exact stored integers.

    ``model`` is only needed for streams coded with a user-trained model file. ``slices`` =
    ``(start, stop)`` decodes only those slices of the z axis (of every time point for 4-D),
    touching just the chunks that hold them; each chunk's CRC-32 is checked, but the volume's
    SHA-256 only when everything is decoded.
    """
    if slices is not None:
        container = Container.parse(data)
        vols = _volume_headers(container)
        if len(vols) != 1:
            raise MedzipError(f"archive holds {len(vols)} volumes; use decompress_payload")
        return decode_volume(container, vols[0], workers=workers, progress=progress, model=model,
                             slices=slices)
    payload = decompress_payload(data, workers=workers, progress=progress, model=model)
    if len(payload.volumes) != 1:
        raise MedzipError(f"archive holds {len(payload.volumes)} volumes; use decompress_payload")
    return payload.volumes[0]


def compress_payload(payload: Payload, *, level: int | None = None, model: str | None = None,
                     chunk_slices: int | None = None, workers: int = 1,
                     progress: bool = False) -> bytes:
    settings = CodecSettings.make(level=level, model=model, chunk_slices=chunk_slices,
                                  workers=workers, progress=progress)
    writer = ContainerWriter()
    volumes = [encode_volume(np.asarray(v), writer, settings) for v in payload.volumes]
    members = []
    cctx = zstandard.ZstdCompressor(level=_MEMBER_LEVEL)
    for name, data in payload.members.items():
        ref = writer.add_section(cctx.compress(data))
        members.append({"name": name, "codec": "zstd", "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(), **ref})
    header = {"writer": f"medzip {__version__}", "volumes": volumes, "members": members,
              "source": payload.meta}
    return writer.finish(header)


def _volume_headers(container: Container) -> list[dict]:
    vols = container.header.get("volumes")
    if not isinstance(vols, list):
        raise CorruptStreamError("medzip header has no volume list")
    return vols


def decompress_payload(data, *, workers: int = 1, progress: bool = False,
                       model: str | None = None) -> Payload:
    container = Container.parse(data)
    volumes = [decode_volume(container, vh, workers=workers, progress=progress, model=model)
               for vh in _volume_headers(container)]
    members = {}
    dctx = zstandard.ZstdDecompressor()
    for i, m in enumerate(container.header.get("members", [])):
        name = m.get("name", f"#{i}")
        raw = container.section(m, f"member '{name}'")
        try:
            blob = dctx.decompress(raw, max_output_size=int(m["size"])) if m.get("codec") == "zstd" else raw
        except zstandard.ZstdError:
            raise CorruptStreamError(f"member '{name}' is corrupted") from None
        if hashlib.sha256(blob).hexdigest() != m.get("sha256"):
            raise CorruptStreamError(f"member '{name}' is corrupted (SHA-256 mismatch)")
        members[name] = blob
    return Payload(volumes, members, container.header.get("source") or {"format": "array"})


def inspect(data) -> dict:
    """Header summary without decoding voxels: sizes, ratio, bits/voxel, model."""
    container = Container.parse(data)
    vols = [volume_summary(vh) for vh in _volume_headers(container)]
    raw = sum(v["raw_bytes"] for v in vols) + sum(int(m.get("size", 0)) for m in container.header.get("members", []))
    voxels = sum(v["voxels"] for v in vols)
    return {
        "format_version": "%d.%d" % container.version,
        "writer": container.header.get("writer"),
        "source": container.header.get("source"),
        "volumes": vols,
        "members": [{"name": m.get("name"), "size": m.get("size"), "stored": m.get("length")}
                    for m in container.header.get("members", [])],
        "compressed_bytes": container.total_size,
        "original_bytes": raw,
        "ratio": raw / container.total_size if container.total_size else 0.0,
        "bits_per_voxel": 8.0 * sum(v["stored_bytes"] for v in vols) / voxels if voxels else 0.0,
    }


def verify(data, *, workers: int = 1, progress: bool = False, model: str | None = None) -> dict:
    """Decode everything and check every checksum; raises CorruptStreamError on damage."""
    decompress_payload(data, workers=workers, progress=progress, model=model)
    return inspect(data)
