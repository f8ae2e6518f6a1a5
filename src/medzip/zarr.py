"""medzip as a Zarr v3 array-to-bytes codec (``"name": "medzip"`` in the array metadata).

Registered through the ``zarr.codecs`` entry point, so any process with medzip installed reads
the array with plain ``zarr.open_array``; nothing needs to import this module first::

    zarr.create_array(store="ct.zarr", shape=vol.shape, chunks=(32, 256, 256),
                      dtype=vol.dtype, serializer=MedZipCodec(level=5), compressors=None)

Each chunk is one self-contained medzip stream (see :mod:`medzip.chunk_codec`). With no other
codec around it (``compressors=None``, no filters), reads go through the partial-decode hook,
which is the only place Zarr tells a codec the chunk's store key: a damaged chunk is then
reported by key. Floating-point and 5-D+ arrays are refused when the array is created.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from zarr.abc.codec import ArrayBytesCodec, ArrayBytesCodecPartialDecodeMixin
from zarr.core.common import parse_named_configuration

from .chunk_codec import CODEC_NAME, ChunkSettings, check_dtype, decode_chunk, encode_chunk

__all__ = ["MedZipCodec"]


@dataclass(frozen=True)
class MedZipCodec(ArrayBytesCodecPartialDecodeMixin, ArrayBytesCodec):
    """Zarr v3 serializer: chunk array -> medzip stream. ``level`` 1..9; ``model`` a built-in
    model name or a model file (its SHA-256 is recorded in the metadata and checked on read)."""

    is_fixed_size = False

    level: int
    model: str | None
    model_sha256: str | None

    def __init__(self, *, level: int = 5, model: str | None = None,
                 model_sha256: str | None = None) -> None:
        settings = ChunkSettings.make(level, model, model_sha256)
        object.__setattr__(self, "level", settings.level)
        object.__setattr__(self, "model", settings.model)
        object.__setattr__(self, "model_sha256", settings.model_sha256)

    @property
    def _settings(self) -> ChunkSettings:
        return ChunkSettings(self.level, self.model, self.model_sha256)

    @classmethod
    def from_dict(cls, data):
        _, configuration = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(configuration or {}))

    def to_dict(self):
        return {"name": CODEC_NAME, "configuration": self._settings.to_config()}

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        check_dtype(dtype.to_native_dtype(), len(shape))

    def compute_encoded_size(self, input_byte_length, chunk_spec):
        raise NotImplementedError  # variable-size output

    # -- coding ----------------------------------------------------------------------------------
    def _decode_array(self, chunk_bytes, chunk_spec, where: str):
        arr = decode_chunk(chunk_bytes.to_bytes(), self._settings, where, chunk_spec.shape,
                           chunk_spec.dtype.to_native_dtype())
        return chunk_spec.prototype.nd_buffer.from_numpy_array(arr)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        # Reached only when other codecs wrap this one: Zarr does not pass the key here.
        where = f"zarr chunk of shape {tuple(chunk_spec.shape)}"
        return await asyncio.to_thread(self._decode_array, chunk_bytes, chunk_spec, where)

    async def _decode_partial_single(self, byte_getter, selection, chunk_spec):
        chunk_bytes = await byte_getter.get(prototype=chunk_spec.prototype)
        if chunk_bytes is None:
            return None  # never written: Zarr fills in the fill value
        where = f"zarr chunk '{getattr(byte_getter, 'path', byte_getter)}' ({byte_getter})"
        chunk = await asyncio.to_thread(self._decode_array, chunk_bytes, chunk_spec, where)
        return chunk[selection]

    def _encode_array(self, chunk_array, chunk_spec):
        data = encode_chunk(chunk_array.as_numpy_array(), self._settings)
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _encode_single(self, chunk_array, chunk_spec):
        return await asyncio.to_thread(self._encode_array, chunk_array, chunk_spec)
