"""medzip as a numcodecs codec (``codec_id = "medzip"``), e.g. a Zarr v2 compressor.

Registered through the ``numcodecs.codecs`` entry point: ``numcodecs.get_codec({"id":
"medzip"})`` finds it without importing medzip. The codec needs the chunk as a typed array
(shape and dtype travel inside the medzip stream); where a pipeline hands it only bytes (a
filter that serialises, a raw buffer), encoding fails with a MedzipError saying so. Unlike the
Zarr v3 codec, numcodecs has no hook at array creation: a float chunk is refused at its first
write.
"""
from __future__ import annotations

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray

from .chunk_codec import CODEC_NAME, ChunkSettings, decode_chunk, encode_chunk
from .errors import MedzipError, UnsupportedInputError

__all__ = ["MedZip"]


class MedZip(Codec):
    codec_id = CODEC_NAME

    def __init__(self, level: int = 5, model: str | None = None,
                 model_sha256: str | None = None):
        settings = ChunkSettings.make(level, model, model_sha256)
        self.level, self.model, self.model_sha256 = settings.level, settings.model, settings.model_sha256

    @property
    def _settings(self) -> ChunkSettings:
        return ChunkSettings(self.level, self.model, self.model_sha256)

    def get_config(self) -> dict:
        return {"id": self.codec_id, **self._settings.to_config()}

    def encode(self, buf) -> bytes:
        if not isinstance(buf, np.ndarray):
            raise UnsupportedInputError(
                f"the medzip codec needs the chunk as an integer numpy array (shape and dtype), "
                f"got {type(buf).__name__}; put it first in the pipeline, after array filters only")
        return encode_chunk(np.ascontiguousarray(buf), self._settings)

    def decode(self, buf, out=None):
        data = ensure_contiguous_ndarray(buf).view(np.uint8).tobytes()
        arr = decode_chunk(data, self._settings, "medzip chunk")
        if out is None:
            return arr
        # Zarr hands a preallocated chunk buffer: fill it with the same bytes.
        target = ensure_contiguous_ndarray(out)
        flat = arr.reshape(-1).view(np.uint8)
        if target.nbytes != flat.nbytes:
            raise MedzipError(f"medzip chunk: holds {arr.nbytes} bytes, the output buffer "
                              f"{target.nbytes}")
        target.view(np.uint8).reshape(-1)[:] = flat
        return out

    def __repr__(self) -> str:
        return f"MedZip(level={self.level}, model={self.model!r})"
