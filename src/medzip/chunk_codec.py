"""One chunk of a chunked array store <-> one self-contained medzip stream.

The common ground of the Zarr v3 codec (:mod:`medzip.zarr`) and the numcodecs codec
(:mod:`medzip.numcodecs`): the JSON-serialisable settings, the dtype/rank check made when an
array is created, and the decode-side checks that turn a damaged or swapped chunk into a
:class:`~medzip.errors.MedzipError` that names the chunk. Every chunk is coded with
``workers=1``: the storage library (Zarr, Dask) already runs chunks in parallel, from several
threads at once (the core codec keeps no shared per-call state).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import api
from .errors import CorruptStreamError, MedzipError, ModelMismatchError, UnsupportedInputError

CODEC_NAME = "medzip"
MAX_NDIM = 4  # medzip codes 1-D to 4-D volumes ((t,) z, y, x)
SUPPORTED_KINDS = "iu"
MAX_ITEMSIZE = 4


def _file_sha256(path: str) -> str:
    """SHA-256 of a model file; cached per (path, size, mtime): every chunk read checks it."""
    st = os.stat(path)
    return _sha256_of(os.path.abspath(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=16)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ChunkSettings:
    """What goes into the array metadata: ``level``, and ``model`` with its SHA-256 when the
    model is a file (built-in models are named, and pinned by SHA-256, inside every chunk)."""

    level: int = 5
    model: str | None = None
    model_sha256: str | None = None

    @classmethod
    def make(cls, level=5, model=None, model_sha256=None) -> "ChunkSettings":
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 9:
            raise UnsupportedInputError(f"medzip codec level must be an integer 1..9, got {level!r}")
        if model is not None and not isinstance(model, str):
            raise UnsupportedInputError(f"medzip codec model must be a name or a path, got {model!r}")
        if model is not None and model_sha256 is None and os.path.isfile(model):
            model_sha256 = _file_sha256(model)  # recorded at creation, checked by every reader
        return cls(level, model, model_sha256)

    def to_config(self) -> dict:
        config: dict = {"level": self.level}
        if self.model is not None:
            config["model"] = self.model
        if self.model_sha256 is not None:
            config["model_sha256"] = self.model_sha256
        return config

    def _reader_model(self) -> str | None:
        """The model file to hand to the decoder, after checking it is the recorded one."""
        if self.model_sha256 is None:
            return None
        if self.model is None or not os.path.isfile(self.model):
            raise ModelMismatchError(
                f"the array was written with model file '{self.model}' (SHA-256 "
                f"{self.model_sha256[:12]}…), which is not available here")
        have = _file_sha256(self.model)
        if have != self.model_sha256:
            raise ModelMismatchError(
                f"model file '{self.model}' has SHA-256 {have[:12]}…, but the array was written "
                f"with {self.model_sha256[:12]}…")
        return self.model


def check_dtype(dtype, ndim: int) -> np.dtype:
    """Refuse, before anything is written, what medzip cannot store losslessly."""
    dtype = np.dtype(dtype)
    if dtype.kind not in SUPPORTED_KINDS or dtype.itemsize > MAX_ITEMSIZE:
        raise UnsupportedInputError(
            f"the medzip codec stores 8- to 32-bit integer arrays, not {dtype} "
            "(use zstd/blosc for floating-point data)")
    if not 1 <= ndim <= MAX_NDIM:
        raise UnsupportedInputError(
            f"the medzip codec stores 1-D to 4-D arrays, not {ndim}-D ones")
    return dtype


def encode_chunk(chunk: np.ndarray, settings: ChunkSettings) -> bytes:
    check_dtype(chunk.dtype, chunk.ndim)
    return api.compress(chunk, level=settings.level, model=settings.model, workers=1)


def decode_chunk(data, settings: ChunkSettings, where: str,
                 shape: tuple[int, ...] | None = None, dtype=None) -> np.ndarray:
    """Decode one chunk; any failure is a MedzipError whose message starts with ``where``.

    ``shape``/``dtype``, when the caller knows them (Zarr v3), must match what the stream
    holds: a valid medzip stream of another chunk is damage too.
    """
    try:
        arr = api.decompress(data, workers=1, model=settings._reader_model())
    except MedzipError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise CorruptStreamError(
            f"{where}: holds a {arr.shape} array where a {tuple(shape)} chunk belongs")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        if arr.dtype.newbyteorder("=") != np.dtype(dtype).newbyteorder("="):
            raise CorruptStreamError(f"{where}: holds {arr.dtype} data where {dtype} belongs")
        arr = arr.astype(dtype)  # same integers, other byte order
    return arr
