"""One integer volume -> independent coded chunks (and back).

Steps: validate dtype; flatten to (t, z, y, x); subtract the minimum and, for sparse histograms,
map the used values to consecutive ranks; fit the predictor on the encoder; split every 3-D
volume into slabs of slices; code each slab with the wavefront engine (in parallel processes
when asked); record a SHA-256 of the original bytes that the decoder checks.
"""
from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import os
import struct
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import constriction
import numpy as np
import zstandard

from .container import Container, ContainerWriter
from .entropy import ResidualCoder
from .errors import CorruptStreamError, MedzipError, UnsupportedInputError, UnsupportedVersionError
from .predictors.registry import DEFAULT_LEVEL, LEVELS, fit_candidates, load_predictor, model_for_level
from .scheduling import PAD, ZPAD, PaddedGeometry, wavefront

__all__ = ["CodecSettings", "LEVELS", "encode_volume", "decode_volume", "volume_summary"]

TARGET_CHUNK_SLICES = 64
SUPPORTED_KINDS = "iu"
MAX_RANGE_BITS = 33  # int32/uint32 span


@dataclass(frozen=True)
class CodecSettings:
    level: int = DEFAULT_LEVEL
    model: str | None = None
    chunk_slices: int | None = None
    workers: int = 1
    progress: bool = False

    @classmethod
    def make(cls, *, level=None, model=None, chunk_slices=None, workers=1, progress=False):
        level = DEFAULT_LEVEL if level is None else int(level)
        model_for_level(level)  # validates
        if chunk_slices is not None and int(chunk_slices) < 1:
            raise UnsupportedInputError("chunk size must be at least one slice")
        workers = (os.cpu_count() or 1) if not workers or workers < 1 else int(workers)
        return cls(level, model, None if chunk_slices is None else int(chunk_slices), workers,
                   bool(progress))


def _as_4d(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    return (1,) * (4 - len(shape)) + tuple(shape)


def chunk_bounds(nz: int, chunk_slices: int | None) -> list[tuple[int, int]]:
    """Balanced slabs; depends only on the volume (never on worker count) so bytes are stable."""
    n = max(1, round(nz / (chunk_slices or TARGET_CHUNK_SLICES)))
    if chunk_slices:
        n = -(-nz // chunk_slices)
    edges = [nz * i // n for i in range(n + 1)]
    return [(a, b - a) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _sha256(arr: np.ndarray) -> str:
    """SHA-256 of the array's bytes in C order and its own byte order (no copy if contiguous)."""
    return hashlib.sha256(np.ascontiguousarray(arr).reshape(-1).view(np.uint8)).hexdigest()


_BLOCK = 1 << 22  # voxels per block: bounds the temporaries of the value mapping


def map_values(arr: np.ndarray):
    """The integers the predictors work on: ``(mapped, vmin, used)``.

    ``mapped`` is (t, z, y, x) in the work dtype with the minimum subtracted and, when the
    histogram is sparse (at most half the span used), values replaced by their rank among the
    ``used`` values (else ``used`` is None). Done block-wise: no full-size int64 copy.
    """
    vol4 = arr.reshape(_as_4d(arr.shape))
    vmin, vmax = int(vol4.min()), int(vol4.max())
    span = vmax - vmin + 1
    mapped = np.empty(vol4.shape, _work_dtype(vmax - vmin))
    src, dst = vol4.reshape(-1), mapped.reshape(-1)
    blocks = [slice(s, s + _BLOCK) for s in range(0, dst.size, _BLOCK)]
    for b in blocks:
        dst[b] = src[b].astype(np.int64) - vmin
    used = None
    if 16 <= span <= (1 << 24):
        hist = np.zeros(span, np.int64)
        for b in blocks:
            hist += np.bincount(dst[b], minlength=span)
        used = np.flatnonzero(hist)
        if used.size * 2 > span:
            used = None
        else:
            lut = np.zeros(span, mapped.dtype)
            lut[used] = np.arange(used.size)
            for b in blocks:
                dst[b] = lut[dst[b]]
    return mapped, vmin, used


def _store_table(used: np.ndarray) -> bytes:
    return zstandard.ZstdCompressor(level=19).compress(np.diff(used, prepend=0).astype("<u4").tobytes())


def _load_table(blob: bytes, count: int) -> np.ndarray:
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=4 * count)
    except zstandard.ZstdError:
        raise CorruptStreamError("value table is corrupted") from None
    if len(raw) != 4 * count:
        raise CorruptStreamError("value table is corrupted")
    return np.cumsum(np.frombuffer(raw, "<u4").astype(np.int64))


# -- chunk engine -------------------------------------------------------------------------------
def _work_dtype(vmax: int):
    """Narrowest signed type holding values and residuals (|r| <= vmax): memory, not results."""
    return np.int16 if vmax < (1 << 15) - 1 else np.int32 if vmax < (1 << 30) else np.int64


def code_chunk(predictor, geom: PaddedGeometry, vmax: int, chunk: np.ndarray | None = None,
               words: np.ndarray | None = None):
    """Encode ``chunk`` (returns uint32 words) or decode ``words`` (returns the chunk)."""
    dt = _work_dtype(vmax)
    vol = np.zeros(geom.shape, dt).ravel()
    res = np.zeros(geom.shape, dt).ravel()
    model = predictor.start_chunk(geom, vmax)
    coder = ResidualCoder(getattr(predictor, "prior", None),
                          vmax if getattr(predictor, "censored", False) else None)
    encoding = chunk is not None
    if encoding:
        geom.embed(chunk, vol)
        enc = constriction.stream.queue.RangeEncoder()
    else:
        dec = constriction.stream.queue.RangeDecoder(words)
    for flat, zloc in wavefront(geom, predictor.lag, getattr(predictor, "slope", 2)):
        if not flat.size:  # thin slabs (y*x tiny, lag > diagonals) have empty steps: no symbols
            continue
        mu, bucket = model.predict(vol, res, flat, zloc)
        if encoding:
            r = vol[flat] - mu
            coder.encode_step(enc, r, bucket, mu)
        else:
            r = coder.decode_step(dec, bucket, mu)
            x = mu + r
            if x.size and (x.min() < 0 or x.max() > vmax):
                raise CorruptStreamError("coded data is corrupted (value out of range)")
            vol[flat] = x
        res[flat] = r
        model.update(vol, res, flat, zloc, r)
    if encoding:
        return enc.get_compressed()
    return geom.extract(vol)  # a view: callers copy what they keep


def chunk_geometry(predictor, shape) -> PaddedGeometry:
    """Padding wide enough for the predictor's neighbourhood (predictors may widen it)."""
    return PaddedGeometry(*shape, pad=getattr(predictor, "pad", PAD),
                          zpad=getattr(predictor, "zpad", ZPAD))


_JOB: dict = {}


def _encode_job(i):
    j = _JOB
    t, z0, nz = j["chunks"][i]
    part = j["vol4"][t, z0:z0 + nz]
    geom = chunk_geometry(j["predictor"], part.shape)
    return code_chunk(j["predictor"], geom, j["vmax"], chunk=part).astype("<u4").tobytes()


def _decode_job(args):
    # The container and the output array are inherited from the parent (fork; the output is
    # shared memory), so only the chunk's reference travels in and nothing travels back: the
    # chunk is read, CRC-checked, decoded and written in place by the worker.
    predictor, shape, vmax, ref, label, (t, z0) = args
    blob = _JOB["container"].section(ref, label)
    if len(blob) % 4:
        raise CorruptStreamError(f"{label} is truncated")
    words = np.frombuffer(blob, "<u4").astype(np.uint32)
    try:
        part = code_chunk(predictor, chunk_geometry(predictor, shape), vmax, words=words)
    except (ValueError, RuntimeError, AssertionError):  # constriction reports exhausted data
        raise CorruptStreamError(f"{label} is corrupted (entropy decoding failed)") from None
    table, out, vmin = _JOB["table"], _JOB["out"], _JOB["vmin"]
    for k, plane in enumerate(part):  # slice by slice: int64 temporaries stay small
        out[t, z0 + k] = (table[plane] if table is not None else plane.astype(np.int64)) + vmin


def _warm_up(predictor, vmax: int) -> None:
    """Compile (or load from cache) the predictor's kernels once in the parent, so forked
    workers share the machine code instead of each building its own copy."""
    tiny = np.zeros((2, 8, 8), _work_dtype(vmax))
    tiny[1, 3, 3] = vmax
    code_chunk(predictor, chunk_geometry(predictor, tiny.shape), vmax, chunk=tiny)


def _run(fn, jobs, workers: int, weights, progress: bool, desc: str, predictor=None, vmax=1):
    from tqdm import tqdm

    bar = tqdm(total=int(sum(weights)), unit="vox", unit_scale=True, desc=desc,
               disable=not progress, leave=False)
    try:
        if workers <= 1 or len(jobs) <= 1:
            out = []
            for job, w in zip(jobs, weights):
                out.append(fn(job))
                bar.update(w)
            return out
        if predictor is not None:
            _warm_up(predictor, vmax)
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
            futures = [pool.submit(fn, job) for job in jobs]
            out = []
            for f, w in zip(futures, weights):
                out.append(f.result())
                bar.update(w)
            return out
    finally:
        bar.close()


# -- public entry points ------------------------------------------------------------------------
def encode_volume(arr: np.ndarray, writer: ContainerWriter, settings: CodecSettings) -> dict:
    arr = np.asarray(arr)
    if arr.dtype.kind not in SUPPORTED_KINDS or arr.dtype.itemsize > 4:
        raise UnsupportedInputError(
            f"cannot compress {arr.dtype} data: medzip codes integer volumes of 8 to 32 bits")
    if not 1 <= arr.ndim <= 4:
        raise UnsupportedInputError(f"cannot compress a {arr.ndim}-D array (1-D to 4-D supported)")
    header = {"shape": list(arr.shape), "dtype": arr.dtype.str,
              "sha256": _sha256(arr), "chunks": []}
    if arr.size == 0:
        header["codec"] = "empty"
        return header
    mapped, vmin, used = map_values(arr)
    header["min"] = vmin
    top = int(mapped.max())
    if top == 0:
        header["codec"] = "constant"
        return header
    if used is not None:
        header["value_table"] = {"count": int(used.size), **writer.add_section(_store_table(used))}
    model = settings.model or model_for_level(settings.level)
    chunks = [(t, z0, nz) for t in range(mapped.shape[0])
              for z0, nz in chunk_bounds(mapped.shape[1], settings.chunk_slices)]
    weights = [nz * mapped.shape[2] * mapped.shape[3] for _, _, nz in chunks]
    best = None
    for predictor, model_entry in fit_candidates(model, mapped, settings.level):
        _JOB.update(vol4=mapped, predictor=predictor, vmax=top, chunks=chunks)
        try:
            blobs = _run(_encode_job, list(range(len(chunks))), settings.workers, weights,
                         settings.progress, "compress", predictor, top)
        finally:
            _JOB.clear()
        size = sum(map(len, blobs)) + len(predictor.params())
        if best is None or size < best[0]:  # ties keep the earlier (preferred) candidate
            best = (size, predictor, model_entry, blobs)
    _, predictor, model_entry, blobs = best
    header.update(codec="predictive", vmax=top, model=model_entry,
                  predictor_params=writer.add_section(predictor.params()))
    for (t, z0, nz), blob in zip(chunks, blobs):
        header["chunks"].append({"t": t, "z0": z0, "nz": nz, **writer.add_section(blob)})
    return header


def _malformed(what: str) -> CorruptStreamError:
    return CorruptStreamError(f"medzip header is malformed ({what})")


# A CRC-valid header can still be malformed (writer bug, forged file): every field the decoder
# reads is converted here, and a missing or mistyped one is reported as corruption.
_BAD_FIELD = (KeyError, TypeError, ValueError, AttributeError, OverflowError)


def decode_volume(container: Container, vh: dict, *, workers: int = 1,
                  progress: bool = False, model: str | None = None,
                  slices: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one volume, or only slices ``[start, stop)`` of its z axis (3-D / 4-D volumes).

    A slice range decodes just the chunks that cover it; their CRC-32s are checked, but the
    volume's SHA-256 can only be checked when the whole volume is decoded.
    """
    try:
        shape = tuple(int(s) for s in vh["shape"])
        dtype = np.dtype(vh["dtype"])
        codec = vh["codec"]
    except _BAD_FIELD:
        raise _malformed("volume entry") from None
    if (dtype.kind not in SUPPORTED_KINDS or dtype.itemsize > 4 or any(s < 0 for s in shape)
            or len(shape) > 4):
        raise _malformed("volume shape or dtype")
    t_, z_, y_, x_ = _as_4d(shape)
    if slices is not None:
        start, stop = (int(v) for v in slices)
        if len(shape) < 3 or not 0 <= start < stop <= z_:
            raise MedzipError(f"slice range {start}..{stop} is outside the volume's "
                              f"{z_ if len(shape) >= 3 else 0} slices")
        zsel = (start, stop)
    else:
        zsel = (0, z_)
    if codec == "empty":
        out = np.zeros(shape, dtype)
    elif codec == "constant":
        try:
            out = np.full(shape, int(vh["min"]), dtype=dtype)
        except _BAD_FIELD:
            raise _malformed("constant value") from None
    elif codec == "predictive":
        if min(t_, z_, y_, x_) < 1:
            raise _malformed("volume shape")
        out = _decode_predictive(container, vh, (t_, z_, y_, x_), dtype, workers, progress, model,
                                 zsel)
        if slices is not None:
            return out.reshape(shape[:-3] + out.shape[1:])
        out = out.reshape(shape)
    else:
        raise UnsupportedVersionError(f"volume uses codec '{codec}', unknown to this medzip version")
    if slices is not None:  # empty / constant: the range of the full (trivial) volume
        return out.reshape((t_, z_, y_, x_))[:, zsel[0]:zsel[1]].reshape(shape[:-3] + (-1, y_, x_))
    if _sha256(out) != vh.get("sha256"):
        raise CorruptStreamError("decoded volume does not match its SHA-256: data is corrupted")
    return out


def _decode_predictive(container, vh, shape4, dtype, workers, progress, user_model, zsel):
    t_, z_, y_, x_ = shape4
    try:
        vmax, vmin, chunks = int(vh["vmax"]), int(vh["min"]), vh["chunks"]
        model, params_ref = vh.get("model") or {}, vh["predictor_params"]
        count = int(vh["value_table"]["count"]) if "value_table" in vh else None
    except _BAD_FIELD:
        raise _malformed("volume entry") from None
    if (not 1 <= vmax < (1 << MAX_RANGE_BITS) or not isinstance(chunks, list)
            or not isinstance(model, dict) or not isinstance(model.get("name"), str)
            or (count is not None and count < 1)):
        raise _malformed("volume entry")
    params = container.section(params_ref, "predictor parameters")
    try:
        predictor = load_predictor(model, params, user_model)
    except (ValueError, struct.error):
        raise CorruptStreamError("predictor parameters are corrupted") from None
    jobs, places = [], []
    covered = np.zeros((t_, z_), np.int64)
    for i, c in enumerate(chunks):
        try:
            t, z0, nz = int(c["t"]), int(c["z0"]), int(c["nz"])
        except _BAD_FIELD:
            raise _malformed("chunk index") from None
        if not (0 <= t < t_ and 0 <= z0 and nz > 0 and z0 + nz <= z_):
            raise _malformed("chunk index")
        covered[t, z0:z0 + nz] += 1
        label = f"chunk {i} (volume {t}, slices {z0}..{z0 + nz - 1})"
        jobs.append((predictor, (nz, y_, x_), vmax, c, label))
        places.append((t, z0, nz))
    if not (covered == 1).all():
        raise _malformed("chunks do not cover the volume")
    table, top = None, vmax
    if count is not None:
        table = _load_table(container.section(vh["value_table"], "value table"), count)
        # the encoder writes ranks 0..vmax of strictly increasing offsets starting at 0
        if table.size != vmax + 1 or table[0] != 0 or (np.diff(table) <= 0).any():
            raise CorruptStreamError("value table is corrupted")
        top = int(table[-1])
    info = np.iinfo(dtype)
    if vmin < info.min or vmin + top > info.max:  # else astype would wrap silently
        raise CorruptStreamError(f"volume values {vmin}..{vmin + top} do not fit {dtype}: "
                                 "data is corrupted")
    # only the chunks that cover the requested slices; the output starts at the first of them
    wanted = [i for i, (_, z0, nz) in enumerate(places) if z0 < zsel[1] and z0 + nz > zsel[0]]
    base = min(places[i][1] for i in wanted)
    span = max(places[i][1] + places[i][2] for i in wanted) - base
    out_shape = (t_, span, y_, x_)
    count_out = int(np.prod(out_shape))
    shared = mmap.mmap(-1, max(count_out * dtype.itemsize, 1))  # workers write into it
    out = np.frombuffer(shared, dtype, count=count_out).reshape(out_shape)
    _JOB.update(container=container, out=out, table=table, vmin=vmin)
    try:
        _run(_decode_job, [jobs[i] + ((places[i][0], places[i][1] - base),) for i in wanted],
             workers, [places[i][2] * y_ * x_ for i in wanted], progress, "decompress",
             predictor, vmax)
    finally:
        _JOB.clear()
    if (base, span) == (0, z_):
        return out
    return out[:, zsel[0] - base:zsel[1] - base]


def volume_summary(vh: dict) -> dict:
    shape = [int(s) for s in vh.get("shape", [])]
    voxels = int(np.prod(shape)) if shape else 0
    dtype = np.dtype(vh.get("dtype", "u1"))
    stored = sum(int(c.get("length", 0)) for c in vh.get("chunks", []))
    return {"shape": shape, "dtype": dtype.name, "voxels": voxels,
            "raw_bytes": voxels * dtype.itemsize, "stored_bytes": stored,
            "chunks": len(vh.get("chunks", [])), "codec": vh.get("codec"),
            "model": (vh.get("model") or {}).get("name"),
            "model_sha256": (vh.get("model") or {}).get("sha256"),
            "bits_per_voxel": 8.0 * stored / voxels if voxels else 0.0}
