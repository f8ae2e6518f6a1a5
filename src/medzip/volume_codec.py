"""One integer volume -> independent coded chunks (and back).

Steps: validate dtype; flatten to (t, z, y, x); subtract the minimum and, for sparse histograms,
map the used values to consecutive ranks; fit the predictor on the encoder; split every 3-D
volume into slabs of slices; code each slab with the wavefront engine (in parallel processes
when asked); record a SHA-256 of the original bytes that the decoder checks.
"""
from __future__ import annotations

import hashlib
import math
import mmap
import operator
import os
import struct
from dataclasses import dataclass

import constriction
import numpy as np
import zstandard

from . import general
from .container import SECTION_ZSTD_LEVEL, Container, ContainerWriter
from .entropy import ResidualCoder
from .errors import CorruptStreamError, MedzipError, UnsupportedInputError, UnsupportedVersionError
from .parallel import resolve_workers, run_jobs, start_method
from .predictors.registry import (DEFAULT_LEVEL, LEVELS, fit_candidates, load_predictor,
                                  model_for_level, parse_level)
from .predictors.base import Predictor
from .scheduling import PaddedGeometry, wavefront, work_dtype

__all__ = ["CodecSettings", "LEVELS", "encode_volume", "decode_volume", "volume_summary"]

# Slabs of about this many slices: a worker's memory is a few copies of its slab (a 512 x 512 x
# 133 CT stays within 3 x raw + 300 MB on 2 workers) and slabs spread over workers; each slab's
# first slice costs a little (no previous slice): +0.04 % on a 108-slice head CT vs 64.
TARGET_CHUNK_SLICES = 32
TEMPORAL_CHUNK_SLICES = 16
SUPPORTED_KINDS = "iu"
MAX_RANGE_BITS = 33  # int32/uint32 span
MAX_DIM = (1 << 31) - 1  # largest extent of one axis a reader accepts
MAX_VOXELS = 1 << 40  # largest volume a reader accepts (also bounded by the machine's memory)
# Fallback (docs/FORMAT.md): a volume's bytes coded with zstd -19 or xz replace the predictive
# coding when smaller. Up to this many voxels both are simply tried (a fraction of a second);
# above it, zstd -3 (~0.03 s per MB) first estimates whether an LZ coder comes close, since
# xz at its slowest preset costs 2-4 s per MB, as much as the predictive coding itself.
# Levels 7-9 code several candidate predictors and keep the smallest stream. Above this many
# voxels the candidates are compared on a sample of slabs first and only the winner and the
# default level's choice code the whole volume (encode time ~1.5-2.5x level 5 instead of ~4x);
# smaller volumes compare whole streams.
SEARCH_FULL_VOXELS = 1 << 22
SEARCH_SAMPLE_SLABS = 2
SEARCH_SAMPLE_SLICES = 8
FALLBACK_TRY_ALL_VOXELS = 1 << 16
FALLBACK_PROBE_LEVEL = 3
FALLBACK_PROBE_MARGIN = 1.15  # zstd -3 within 15 % of the predictive size: try -19 and xz
FALLBACK_CODECS = ("zstd", "xz")


@dataclass(frozen=True)
class CodecSettings:
    level: int = DEFAULT_LEVEL
    model: str | None = None
    chunk_slices: int | None = None
    workers: int = 1
    progress: bool = False
    # keep a general-purpose coding of the volume when smaller (tests of the predictive
    # coder alone switch it off)
    fallback: bool = True

    @classmethod
    def make(cls, *, level=None, model=None, chunk_slices=None, workers=1, progress=False,
             fallback=True):
        level = parse_level(level)
        if chunk_slices is not None and int(chunk_slices) < 1:
            raise UnsupportedInputError("chunk size must be at least one slice")
        workers = resolve_workers(workers)
        return cls(level, model, None if chunk_slices is None else int(chunk_slices), workers,
                   bool(progress), bool(fallback))


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
    """SHA-256 of the array's bytes in C order and its own byte order (no copy if contiguous).
    Format 1.0's only digest; still written so 1.0 readers decode newer files."""
    return hashlib.sha256(_raw_bytes(arr)).hexdigest()


def _raw_bytes(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def _digest(arr: np.ndarray, sha256: str) -> str:
    """Format >= 1.1: a SHA-256 over dtype, shape and the bytes' SHA-256, so a header edit of
    the dtype or the shape (same bytes, another array) is caught like damaged voxels. Built on
    the bytes' digest so the voxels are hashed once."""
    return hashlib.sha256(f"medzip-volume {arr.dtype.str} {list(arr.shape)} {sha256}"
                          .encode("ascii")).hexdigest()


_BLOCK = 1 << 22  # voxels per block: bounds the temporaries of the value mapping
# Rescaled data (see _missing_where_dense): counts capped at twice GAP_DENSE_COUNT (one spike,
# such as a floor or mask value, cannot make its empty neighbours look dense) are averaged over
# GAP_WINDOW values; where that mean is at least GAP_DENSE_COUNT the values are "dense", and
# at least GAP_MIN_DENSE dense values of which one in GAP_MISSING_RATIO or more never occurs
# mark it. (On the development data only rescaled copies are marked: every genuine scan and
# golden file keeps its values; scans stretched by 1.08 or more are marked.)
GAP_WINDOW = 17
GAP_DENSE_COUNT = 8
GAP_MIN_DENSE = 64
GAP_MISSING_RATIO = 20
GAP_MAX_SPAN = 1 << 20  # the test's temporaries: three int64 arrays of the span


def _missing_where_dense(hist: np.ndarray) -> bool:
    """Whether values are missing where the histogram is dense: the signature of integers
    rescaled by a factor above 1 (a converter stretching 12-bit data to fill 16 bits, a float
    scale written back as integers), which use only some of the values in every stretch. The
    coder would spend probability on values that never occur (log2 of the factor, bits per
    voxel); their ranks are the original integers again. Where values are merely rare (the
    tails of a histogram with few voxels, full-range noise) every value in the dense part
    occurs, and ranks would only distort the predictors' linear geometry there: integer
    counts and thresholds, so the decision is the same on every machine."""
    if hist.size > GAP_MAX_SPAN:
        return False
    half = GAP_WINDOW // 2
    capped = np.minimum(hist, 2 * GAP_DENSE_COUNT)
    cum = np.concatenate((np.zeros(half + 1, np.int64), np.cumsum(capped),
                          np.full(half, int(capped.sum()), np.int64)))
    dense = (cum[GAP_WINDOW:] - cum[:-GAP_WINDOW]) >= GAP_DENSE_COUNT * GAP_WINDOW
    n_dense = int(np.count_nonzero(dense))
    missing = int(np.count_nonzero(hist[dense] == 0))
    return n_dense >= GAP_MIN_DENSE and missing * GAP_MISSING_RATIO >= n_dense


@dataclass(frozen=True)
class ValueMap:
    """How stored integers become the integers the predictors work on: minus the minimum and,
    when the histogram is sparse or rescaled (see ``scan_values``), their rank among the
    ``used`` values (``lut``: value minus minimum -> rank)."""

    vmin: int
    top: int  # largest mapped value
    lut: np.ndarray | None
    used: np.ndarray | None  # the original values minus vmin that occur, when ranked
    dtype: np.dtype  # of a mapped copy (fitting): the work dtype of the whole span

    def fill(self, src: np.ndarray, out: np.ndarray) -> None:
        """Write the mapped values of ``src`` (z, y, x) into ``out`` (same shape, any strides:
        a padded chunk's inner view) in blocks of at most _BLOCK voxels, so the int64
        temporaries stay small and no mapped copy of the volume is ever made."""
        nz, ny, nx = src.shape
        ry, rx = max(1, _BLOCK // max(nx, 1)), min(max(nx, 1), _BLOCK)
        for z in range(nz):
            for y0 in range(0, ny, ry):
                for x0 in range(0, nx, rx):
                    block = (z, slice(y0, y0 + ry), slice(x0, x0 + rx))
                    v = src[block].astype(np.int64) - self.vmin
                    out[block] = v if self.lut is None else self.lut[v]

    def mapped(self, vol4: np.ndarray) -> np.ndarray:
        """A mapped copy of a (t, z, y, x) volume, in the work dtype."""
        out = np.empty(vol4.shape, self.dtype)
        for t in range(vol4.shape[0]):
            self.fill(vol4[t], out[t])
        return out


def _flat_blocks(flat: np.ndarray):
    for s in range(0, flat.size, _BLOCK):
        yield flat[s:s + _BLOCK].astype(np.int64)


def scan_values(arr: np.ndarray) -> ValueMap:
    """The value mapping of a volume: its minimum and, when the histogram is sparse (at most
    half the span used) or values are missing where it is dense (rescaled data), the ranks of
    the used values. Reads the volume in blocks: no full-size copy."""
    src = arr.reshape(-1)
    vmin, vmax = int(src.min()), int(src.max())
    span = vmax - vmin + 1
    if 16 <= span <= (1 << 24):
        hist = np.zeros(span, np.int64)
        for v in _flat_blocks(src):
            hist += np.bincount(v - vmin, minlength=span)
        used = np.flatnonzero(hist)
        if used.size * 2 <= span or _missing_where_dense(hist):
            lut = np.zeros(span, work_dtype(used.size - 1))
            lut[used] = np.arange(used.size)
            return ValueMap(vmin, int(used.size - 1), lut, used, np.dtype(work_dtype(span - 1)))
    return ValueMap(vmin, vmax - vmin, None, None, np.dtype(work_dtype(span - 1)))


def map_values(arr: np.ndarray):
    """The integers the predictors work on: ``(mapped, vmin, used)``.

    ``mapped`` is (t, z, y, x) in the work dtype with the minimum subtracted and, when the
    histogram is sparse or rescaled, values replaced by their rank among the ``used`` values
    (else ``used`` is None). The encoder itself maps chunk by chunk (``ValueMap.fill``); this
    whole-volume copy serves fitting and training.
    """
    values = scan_values(arr)
    return values.mapped(arr.reshape(_as_4d(arr.shape))), values.vmin, values.used


def _store_table(used: np.ndarray) -> bytes:
    return zstandard.ZstdCompressor(level=SECTION_ZSTD_LEVEL).compress(
        np.diff(used, prepend=0).astype("<u4").tobytes())


def _load_table(blob: bytes, count: int) -> np.ndarray:
    try:
        raw = zstandard.ZstdDecompressor().decompress(blob, max_output_size=4 * count)
    except zstandard.ZstdError:
        raise CorruptStreamError("value table is corrupted") from None
    if len(raw) != 4 * count:
        raise CorruptStreamError("value table is corrupted")
    return np.cumsum(np.frombuffer(raw, "<u4").astype(np.int64))


# -- chunk engine -------------------------------------------------------------------------------
def code_chunk(predictor: Predictor, geom: PaddedGeometry, vmax: int,
               chunk: np.ndarray | None = None, words: np.ndarray | None = None,
               previous: np.ndarray | None = None, use_mask: bool = True,
               values: ValueMap | None = None):
    """Encode ``chunk`` (returns uint32 words) or decode ``words`` (returns the chunk).

    ``previous``: the same slices of the series' previous volume, for predictors that read it
    (``temporal``); it is padded like the chunk. Voxels of a predictor's ``known_plane`` (a
    padding mask: 0 in every slice) are predicted and updated like the others, but not coded.
    ``values``: ``chunk`` and ``previous`` hold stored integers that this mapping turns into
    the predictors' values as they are copied in (else they are mapped already)."""
    def embed(src, dst):
        if values is None:
            geom.embed(src, dst)
        else:
            values.fill(src, geom.extract(dst))

    known, floor, pad_value = coding_mask(predictor, geom) if use_mask else (None, 0, 0)
    if pad_value > vmax:
        raise CorruptStreamError("padding value out of range: data is corrupted")
    swap = bool(floor or pad_value)  # the masked voxels read as the floor (both 0 unmasked)
    vol = np.zeros(geom.shape, work_dtype(vmax)).ravel()
    if previous is None:
        model = predictor.start_chunk(geom, vmax)
    else:
        ref = np.zeros(geom.shape, vol.dtype).ravel()
        embed(previous, ref)
        if swap:
            ref[known] = floor
        model = predictor.start_chunk(geom, vmax, ref=ref)
    # censored coding (entropy.ResidualCoder) for predictors whose stream version asks for it
    coder = ResidualCoder(predictor.prior, vmax if getattr(predictor, "censored", False) else None,
                          floor)
    encoding = chunk is not None
    if encoding:
        embed(chunk, vol)
        if known is not None and (vol[known] != pad_value).any():
            raise ValueError("voxels of the padding mask do not hold its value")
        if swap:
            vol[known] = floor
        enc = constriction.stream.queue.RangeEncoder()
    else:
        dec = constriction.stream.queue.RangeDecoder(words)
    for flat, zloc in wavefront(geom, predictor.lag, predictor.slope):
        if not flat.size:  # thin slabs (y*x tiny, lag > diagonals) have empty steps: no symbols
            continue
        mu, bucket = model.predict(vol, flat, zloc)
        coded = slice(None) if known is None else np.flatnonzero(~known[flat])
        if encoding:
            r = vol[flat] - mu
            if known is None or coded.size:
                coder.encode_step(enc, r[coded], bucket[coded], mu[coded])
        else:
            if known is None:
                r = coder.decode_step(dec, bucket, mu)
            else:  # masked voxels are at the floor (0, or the predictor's): residual known
                r = floor - mu
                if coded.size:
                    r[coded] = coder.decode_step(dec, bucket[coded], mu[coded])
            x = mu + r
            if x.size and (x.min() < 0 or x.max() > vmax):
                raise CorruptStreamError("coded data is corrupted (value out of range)")
            vol[flat] = x
        model.update(vol, flat, zloc, r)
    if encoding:
        return enc.get_compressed()
    if swap:
        vol[known] = pad_value
    return geom.extract(vol)  # a view: callers copy what they keep


def _known_voxels(predictor, geom: PaddedGeometry) -> np.ndarray | None:
    """The padding mask spread over the padded chunk (flat bool), or None."""
    plane = getattr(predictor, "known_plane", None)
    if plane is None:
        return None
    known = np.zeros(geom.shape, bool)
    p = geom.pad
    known[geom.zpad:, p:p + geom.ny, p:p + geom.nx] = plane
    return known.ravel()


def coding_mask(predictor, geom: PaddedGeometry) -> tuple[np.ndarray | None, int, int]:
    """``(known, floor, pad_value)``: the padding mask over the padded chunk (flat bool, or
    None), the value its voxels read as while the chunk is coded, and the value they hold; both
    0 without a mask. Where either is set the masked voxels read as ``floor`` (code_chunk; the
    training rows, which must see what the coder sees, do the same).

    ``floor`` (medzip-blend version 5): the lowest value inside the mask's field of view. The
    masked voxels (0, the volume's floor) take that value while the chunk is coded, so the
    predictors see air, not a step down to the padding, at the field of view's edge; the coder
    censors coded voxels there. They are set back to 0 at the end. ``pad_value`` (version 7):
    the masked voxels hold that value instead of 0; they read as the floor while coding (no
    step up to the padding either) and take it back at the end."""
    known = _known_voxels(predictor, geom)
    if known is None:
        return None, 0, 0
    return known, int(getattr(predictor, "floor", 0)), int(getattr(predictor, "pad_value", 0))


def chunk_geometry(predictor, shape) -> PaddedGeometry:
    """Padding wide enough for the predictor's neighbourhood (predictors may widen it)."""
    return PaddedGeometry(*shape, pad=predictor.pad, zpad=predictor.zpad)


@dataclass(frozen=True)
class _EncodeState:
    """What every encoder chunk job reads (one per call: never a module global). ``vol4``
    holds the stored integers; each job maps its own slab (``values``), so no mapped copy of
    the volume stays in memory while the workers code."""

    vol4: np.ndarray
    values: ValueMap
    predictor: object
    vmax: int
    chunks: list


def _encode_job(state: _EncodeState, i: int) -> bytes:
    t, z0, nz = state.chunks[i]
    part = state.vol4[t, z0:z0 + nz]
    geom = chunk_geometry(state.predictor, part.shape)
    previous = state.vol4[t - 1, z0:z0 + nz] if t and _temporal(state.predictor) else None
    return code_chunk(state.predictor, geom, state.vmax, chunk=part, previous=previous,
                      values=state.values).astype("<u4").tobytes()


def _temporal(predictor) -> bool:
    """Whether volume t of a series is coded with volume t-1 as context (then a chunk's
    decoding needs the chunk of the same slices in the volume before)."""
    return getattr(predictor, "temporal", False)


def chunk_plan(shape4: tuple[int, int, int, int], chunk_slices: int | None,
               temporal: bool) -> list[tuple[int, int, int]]:
    """``(t, z0, nz)`` of every chunk. A temporal stream decodes each stack of chunks over time
    in order, so its slabs are thinner (more stacks to share among workers); a slab's first
    slice still has the previous volume as context, which keeps the cost of that small."""
    target = chunk_slices or (TEMPORAL_CHUNK_SLICES if temporal else None)
    return [(t, z0, nz) for t in range(shape4[0]) for z0, nz in chunk_bounds(shape4[1], target)]


@dataclass(frozen=True)
class _DecodeState:
    """What every decoder chunk job reads. ``out`` is the shared output mapping when workers
    can write into it (in-process or forked); with ``spawn`` it is None and jobs return their
    slab for the caller to place."""

    container: Container
    predictor: object
    plane: tuple[int, int]
    vmax: int
    vmin: int
    table: np.ndarray | None
    dtype: np.dtype
    out: np.ndarray | None


def _decode_job(state: _DecodeState, job):
    """Decode a stack of chunks in order: one chunk, or (temporal streams) the chunks of the
    same slices in every volume of the series, each the context of the next."""
    # Only the chunks' references travel in: each chunk is read, CRC-checked, decoded and (when
    # the output is shared) written in place by the worker, so nothing large travels back.
    slabs, previous = [], None
    for ref, label, nz, (t, z0) in job:
        part = _decode_chunk(state, ref, label, nz, previous)
        if _temporal(state.predictor):
            previous = part
        slabs.append(_place(state, part, t, z0, nz))
    return None if state.out is not None else slabs


def _decode_chunk(state: _DecodeState, ref, label: str, nz: int, previous):
    blob = state.container.section(ref, label)
    if len(blob) % 4:
        raise CorruptStreamError(f"{label} is truncated")
    words = np.frombuffer(blob, "<u4").astype(np.uint32, copy=False)  # no copy on little-endian
    try:
        return code_chunk(state.predictor,
                          chunk_geometry(state.predictor, (nz,) + state.plane), state.vmax,
                          words=words, previous=previous)
    except (ValueError, RuntimeError, AssertionError):  # constriction reports exhausted data
        raise CorruptStreamError(f"{label} is corrupted (entropy decoding failed)") from None


def _place(state: _DecodeState, part: np.ndarray, t: int, z0: int, nz: int):
    """Write a decoded chunk (value ranks) into the output, or return it as a slab (spawn)."""
    if state.out is not None:
        dst, t_dst, z_dst = state.out, t, z0
    else:
        dst, t_dst, z_dst = np.empty((1, nz) + state.plane, state.dtype), 0, 0
    for k, plane in enumerate(part):  # slice by slice: int64 temporaries stay small
        dst[t_dst, z_dst + k] = (state.table[plane] if state.table is not None
                                 else plane.astype(np.int64)) + state.vmin
    return None if state.out is not None else dst[0]


def _decode_stacks(places, wanted: list[int], predictor, t_: int) -> list[list[int]]:
    """Chunk indices grouped into decoding jobs: one chunk each, or for a temporal stream one
    stack per slab of slices, in time order (every volume must then use the same slabs)."""
    if not _temporal(predictor):
        return [[i] for i in wanted]
    stacks: dict[tuple[int, int], list[int]] = {}
    for i in sorted(wanted, key=lambda i: places[i][0]):
        stacks.setdefault(places[i][1:], []).append(i)
    if any(len(s) != t_ for s in stacks.values()):
        raise _malformed("chunks of a series coded with its previous volumes do not line up")
    return [stacks[key] for key in sorted(stacks)]


def _warm_up(predictor, vmax: int) -> None:
    """Compile (or load from cache) the predictor's kernels once in the parent, so forked
    workers share the machine code instead of each building its own copy."""
    tiny = np.zeros((2, 8, 8), work_dtype(vmax))
    tiny[1, 3, 3] = vmax
    code_chunk(predictor, chunk_geometry(predictor, tiny.shape), vmax, chunk=tiny,
               use_mask=False)  # the mask is the volume's plane, not this tiny one


def _run(fn, state, jobs, workers: int, weights, progress: bool, desc: str, predictor, vmax):
    from tqdm import tqdm

    bar = tqdm(total=int(sum(weights)), unit="vox", unit_scale=True, desc=desc,
               disable=not progress, leave=False)
    try:
        return run_jobs(fn, state, jobs, workers, on_done=lambda i: bar.update(weights[i]),
                        prepare=lambda: _warm_up(predictor, vmax))
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
    sha256 = _sha256(arr)
    header = {"shape": list(arr.shape), "dtype": arr.dtype.str,
              "sha256": sha256, "digest": _digest(arr, sha256), "chunks": []}
    if arr.size == 0:
        header["codec"] = "empty"
        return header
    values = scan_values(arr)
    header["min"] = values.vmin
    top, used = values.top, values.used
    if top == 0:
        header["codec"] = "constant"
        return header
    table = None if used is None else _store_table(used)
    model = settings.model or model_for_level(settings.level)
    vol4 = arr.reshape(_as_4d(arr.shape))
    # the fit reads a mapped copy, dropped before the chunks are coded (they map their own
    # slabs): one raw volume less in memory while the workers run. The worker processes wait
    # for the fit: it may use as many threads meanwhile.
    mapped = values.mapped(vol4)
    candidates = fit_candidates(model, mapped, settings.level, threads=settings.workers,
                                scratch=True)
    del mapped
    if len(candidates) > 1 and vol4.size > SEARCH_FULL_VOXELS:
        sample = _sample_slabs(vol4.shape)
        winner = _smallest(candidates, vol4, values, settings, lambda p: sample, "search",
                           False)[1]
        # the slabs are a sample: where they pick another candidate, the default level's own
        # choice codes the whole volume too and the smaller stream is kept (a level 9 stream
        # is never larger than level 5's; the head CT's slabs picked one 0.5 % larger)
        candidates = [candidates[0]] + ([winner] if winner is not candidates[0] else [])
    size, (predictor, model_entry), blobs, chunks = _smallest(
        candidates, vol4, values, settings,
        lambda p: chunk_plan(vol4.shape, settings.chunk_slices, _temporal(p)), "compress",
        settings.progress)
    size += len(table or b"")
    fallback = _fallback(arr, size) if settings.fallback else None
    if fallback is not None:
        codec, data = fallback
        del header["min"]
        header.update(codec=codec, data=writer.add_section(data))
        return header
    if table is not None:
        header["value_table"] = {"count": int(used.size), **writer.add_section(table)}
    header.update(codec="predictive", vmax=top, model=model_entry,
                  predictor_params=writer.add_section(predictor.params()))
    for (t, z0, nz), blob in zip(chunks, blobs):
        header["chunks"].append({"t": t, "z0": z0, "nz": nz, **writer.add_section(blob)})
    return header


def _smallest(candidates: list, vol4: np.ndarray, values: ValueMap, settings: CodecSettings,
              plan, desc: str, progress: bool):
    """``(size, candidate, blobs, chunks)`` of the candidate whose chunks ``plan(predictor)``
    code smallest, parameters included (ties keep the earlier, preferred candidate).
    ``vol4``: the stored integers, mapped slab by slab with ``values``."""
    top = values.top
    best = None
    for cand in candidates:
        predictor = cand[0]
        chunks = plan(predictor)
        weights = [nz * vol4.shape[2] * vol4.shape[3] for _, _, nz in chunks]
        state = _EncodeState(vol4, values, predictor, top, chunks)
        blobs = _run(_encode_job, state, list(range(len(chunks))), settings.workers, weights,
                     progress, desc, predictor, top)
        size = sum(map(len, blobs)) + len(predictor.params())
        if best is None or size < best[0]:
            best = (size, cand, blobs, chunks)
    return best


def _sample_slabs(shape4) -> list[tuple[int, int, int]]:
    """Where levels 7-9 compare candidates on a large volume: SEARCH_SAMPLE_SLABS slabs of
    SEARCH_SAMPLE_SLICES slices spread evenly through z, in the middle time point of a series
    (which has a previous volume for the temporal candidates). Depends only on the shape,
    never on the worker count, so the output bytes do not either."""
    t_, z_ = shape4[:2]
    nz = min(SEARCH_SAMPLE_SLICES, z_)
    starts = sorted({(z_ - nz) * (i + 1) // (SEARCH_SAMPLE_SLABS + 1)
                     for i in range(SEARCH_SAMPLE_SLABS)})
    return [(t_ // 2, z0, nz) for z0 in starts]


def _fallback(arr: np.ndarray, predictive_size: int) -> tuple[str, bytes] | None:
    """``(codec, coded bytes)`` of the smallest general-purpose coding of the volume's bytes
    (its dtype, C order) when it is smaller than the predictive coding, else None.

    Small volumes try zstd -19 and xz outright. On larger ones a zstd -3 pass (fast) decides
    first: clinical volumes code far smaller predictively, and there the slow coders never run.
    """
    raw = _raw_bytes(arr)
    if arr.size > FALLBACK_TRY_ALL_VOXELS:
        probe = len(general.zstd(raw, FALLBACK_PROBE_LEVEL))
        if probe > FALLBACK_PROBE_MARGIN * predictive_size:
            return None
    codec, data = general.smallest(raw, FALLBACK_CODECS)
    return (codec, data) if len(data) < predictive_size else None


def _malformed(what: str) -> CorruptStreamError:
    return CorruptStreamError(f"medzip header is malformed ({what})")


def _field_int(value, what: str, lo: int, hi: int) -> int:
    """A header integer: JSON ints only (no bools, floats, strings), within [lo, hi]."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _malformed(what)
    return value


def _volume_shape(vh: dict) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a volume entry, or CorruptStreamError: no other exception type."""
    shape, dtype = vh.get("shape"), vh.get("dtype")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 4 or not isinstance(dtype, str):
        raise _malformed("volume shape or dtype")
    shape = tuple(_field_int(s, "volume shape", 0, MAX_DIM) for s in shape)
    try:
        dtype = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError):
        raise _malformed("volume dtype") from None
    if dtype.kind not in SUPPORTED_KINDS or dtype.itemsize > 4 or dtype.str != vh["dtype"]:
        raise _malformed("volume dtype")
    if math.prod(shape) > MAX_VOXELS:
        raise _malformed(f"volume of {math.prod(shape)} voxels; the format allows {MAX_VOXELS}")
    return shape, dtype


def _check_digest(out: np.ndarray, vh: dict, binding: bool) -> None:
    """Format >= 1.1 binds dtype and shape into the digest; 1.0 files carry bytes only."""
    sha256 = _sha256(out)
    if vh.get("sha256") != sha256 or (binding and vh.get("digest") != _digest(out, sha256)):
        raise CorruptStreamError("decoded volume does not match its SHA-256: data is corrupted")


def _zrange(slices, shape: tuple[int, ...]) -> tuple[int, int] | None:
    if slices is None:
        return None
    nz = shape[-3] if len(shape) >= 3 else 0
    try:
        start, stop = (operator.index(v) for v in slices)
    except (TypeError, ValueError):
        raise MedzipError("slices must be two integers (start, stop)") from None
    if len(shape) < 3 or not 0 <= start <= stop <= nz:
        raise MedzipError(f"slice range {start}..{stop} is outside the volume's {nz} slices")
    return start, stop


def decode_volume(container: Container, vh: dict, *, workers: int = 1,
                  progress: bool = False, model: str | None = None,
                  slices: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one volume, or only slices ``[start, stop)`` of its z axis (3-D / 4-D volumes).

    A slice range decodes just the chunks that cover it; their CRC-32s are checked, but the
    volume's digest can only be checked when the whole volume is decoded.
    """
    if not isinstance(vh, dict):
        raise _malformed("volume entry")
    shape, dtype = _volume_shape(vh)
    zsel = _zrange(slices, shape)
    out_shape = shape if zsel is None else shape[:-3] + (zsel[1] - zsel[0],) + shape[-2:]
    _check_memory(math.prod(out_shape) * dtype.itemsize)
    try:
        out = _decode_codec(container, vh, shape, dtype, zsel, workers, progress, model)
    except MemoryError:
        raise MedzipError(f"not enough memory to decode a {math.prod(out_shape)}-voxel "
                          f"{dtype.name} volume") from None
    out = out.reshape(out_shape)
    if zsel is None:
        _check_digest(out, vh, binding=container.version >= (1, 1))
    return out


def _decode_codec(container, vh, shape, dtype, zsel, workers, progress, model) -> np.ndarray:
    """The voxels as (t, z, y, x) (only slices ``zsel`` when given)."""
    t_, z_, y_, x_ = _as_4d(shape)
    zsel = zsel or (0, z_)
    out4 = (t_, zsel[1] - zsel[0], y_, x_)
    codec = vh.get("codec")
    if codec == "empty":
        if math.prod(shape):
            raise _malformed("empty volume with voxels")
        return np.zeros(out4, dtype)
    if codec == "constant":
        info = np.iinfo(dtype)
        return np.full(out4, _field_int(vh.get("min"), "constant value", info.min, info.max),
                       dtype=dtype)
    if codec in FALLBACK_CODECS:
        return _decode_general(container, vh, codec, (t_, z_, y_, x_), dtype)[:, zsel[0]:zsel[1]]
    if codec == "predictive":
        if min(t_, z_, y_, x_) < 1:
            raise _malformed("volume shape")
        return _decode_predictive(container, vh, (t_, z_, y_, x_), dtype, workers, progress,
                                  model, zsel)
    if isinstance(codec, str):
        raise UnsupportedVersionError(f"volume uses codec '{codec[:40]}', unknown to this "
                                      "medzip version")
    raise _malformed("volume codec")


def _decode_general(container, vh, codec: str, shape4, dtype) -> np.ndarray:
    """A volume stored as its bytes coded with zstd or xz: inflated piecewise up to exactly
    the size that shape and dtype declare (a forged size allocates nothing it does not fill)."""
    size = math.prod(shape4) * dtype.itemsize
    blob = container.section(vh.get("data"), "volume data")
    raw = general.inflate(codec, blob, size, "volume data", writable=True)
    return np.frombuffer(raw, dtype).reshape(shape4)


def _check_memory(nbytes: int) -> None:
    """Refuse an output that cannot fit this machine before touching it (a forged header must
    not start a swap storm); smaller outputs are mapped lazily and fill as chunks decode."""
    try:
        limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not available: no extra limit
        return
    if nbytes > limit:
        raise MedzipError(f"archive declares a {nbytes / 2**30:.1f} GiB volume, more than this "
                          f"machine's {limit / 2**30:.1f} GiB of memory")


def _chunk_places(chunks, t_: int, z_: int) -> list[tuple[int, int, int]]:
    """``(t, z0, nz)`` of every chunk entry; they must tile each time point's slices exactly.

    Checked by sorting, not with a (t, z) coverage array: a forged z of 2**28 costs nothing."""
    if not isinstance(chunks, list) or not 1 <= len(chunks) <= t_ * z_:
        raise _malformed("chunk index")
    places = []
    for c in chunks:
        if not isinstance(c, dict):
            raise _malformed("chunk index")
        places.append((_field_int(c.get("t"), "chunk index", 0, t_ - 1),
                       _field_int(c.get("z0"), "chunk index", 0, z_ - 1),
                       _field_int(c.get("nz"), "chunk index", 1, z_)))
    expect = (0, 0)
    for t, z0, nz in sorted(places):
        if (t, z0) != expect:
            raise _malformed("chunks do not cover the volume")
        expect = (t, z0 + nz) if z0 + nz < z_ else (t + 1, 0)
        if z0 + nz > z_:
            raise _malformed("chunks do not cover the volume")
    if expect != (t_, 0):
        raise _malformed("chunks do not cover the volume")
    return places


def _check_model_entry(model) -> None:
    """The model entry's fields have the types the encoder writes (names and digests strings,
    a version an int, the network an object of those), so that looking them up can raise
    nothing but MedzipError (a list where a name belongs is unhashable)."""
    def named(entry) -> bool:
        return isinstance(entry, dict) and isinstance(entry.get("name"), str) \
            and isinstance(entry.get("sha256", ""), str)

    version = model.get("version", 0) if isinstance(model, dict) else None
    if not named(model) or isinstance(version, bool) or not isinstance(version, int) \
            or ("lstm" in model and not (named(model["lstm"]) and "sha256" in model["lstm"])):
        raise _malformed("model entry")


def _decode_predictive(container, vh, shape4, dtype, workers, progress, user_model, zsel):
    t_, z_, y_, x_ = shape4
    vmax = _field_int(vh.get("vmax"), "value range", 1, (1 << MAX_RANGE_BITS) - 1)
    vmin = _field_int(vh.get("min"), "minimum value", -(1 << 31), (1 << 32) - 1)
    model, params_ref = vh.get("model"), vh.get("predictor_params")
    _check_model_entry(model)
    places = _chunk_places(vh.get("chunks"), t_, z_)
    table, top = None, vmax
    if "value_table" in vh:
        entry = vh["value_table"]
        # the encoder writes ranks 0..vmax of the used values, at most one per voxel and only
        # for spans up to 2**24: check the count before anything is decompressed
        count = _field_int(entry.get("count") if isinstance(entry, dict) else None,
                           "value table", 1, min(1 << 24, t_ * z_ * y_ * x_))
        if count != vmax + 1:
            raise CorruptStreamError("value table is corrupted")
        table = _load_table(container.section(entry, "value table"), count)
        if table[0] != 0 or (np.diff(table) <= 0).any():
            raise CorruptStreamError("value table is corrupted")
        top = int(table[-1])
    info = np.iinfo(dtype)
    if vmin < info.min or vmin + top > info.max:  # else astype would wrap silently
        raise CorruptStreamError(f"volume values {vmin}..{vmin + top} do not fit {dtype}: "
                                 "data is corrupted")
    params = container.section(params_ref, "predictor parameters")
    try:
        predictor = load_predictor(model, params, user_model)
    except (ValueError, struct.error):
        raise CorruptStreamError("predictor parameters are corrupted") from None
    known = getattr(predictor, "known_plane", None)
    if known is not None and known.shape != (y_, x_):
        raise CorruptStreamError("padding mask does not match the slice plane")
    # only the chunks that cover the requested slices; the output starts at the first of them
    wanted = [i for i, (_, z0, nz) in enumerate(places) if z0 < zsel[1] and z0 + nz > zsel[0]]
    if not wanted:  # an empty slice range
        return np.empty((t_, 0, y_, x_), dtype)
    base = min(places[i][1] for i in wanted)
    span = max(places[i][1] + places[i][2] for i in wanted) - base
    out_shape = (t_, span, y_, x_)
    count_out = math.prod(out_shape)
    shared_out = start_method() == "fork" or workers <= 1
    try:
        # an anonymous shared mapping: pages are only committed as decoded slices land in them
        buf = mmap.mmap(-1, max(count_out * dtype.itemsize, 1))
    except (OSError, OverflowError, ValueError):
        raise MedzipError(f"not enough memory to decode a {count_out}-voxel volume") from None
    out = np.frombuffer(buf, dtype, count=count_out).reshape(out_shape)
    state = _DecodeState(container, predictor, (y_, x_), vmax, vmin, table, dtype,
                         out if shared_out else None)
    chunks = vh["chunks"]
    jobs, weights = [], []
    for stack in _decode_stacks(places, wanted, predictor, t_):
        job = []
        for i in stack:
            t, z0, nz = places[i]
            label = f"chunk {i} (volume {t}, slices {z0}..{z0 + nz - 1})"
            job.append((chunks[i], label, nz, (t, z0 - base)))
        jobs.append(tuple(job))
        weights.append(sum(places[i][2] for i in stack) * y_ * x_)
    parts = _run(_decode_job, state, jobs, resolve_workers(workers), weights, progress,
                 "decompress", predictor, vmax)
    if not shared_out:
        for job, slabs in zip(jobs, parts):
            for (_, _, nz, (t, z0)), part in zip(job, slabs):
                out[t, z0:z0 + nz] = part
    return out[:, zsel[0] - base:zsel[1] - base]


def volume_summary(vh: dict) -> dict:
    """What ``medzip info`` shows of one volume entry, without decoding; a malformed entry
    raises CorruptStreamError (never another exception type)."""
    if not isinstance(vh, dict):
        raise _malformed("volume entry")
    shape, dtype = _volume_shape(vh)
    chunks = vh.get("chunks", [])
    if not isinstance(chunks, list) or not all(isinstance(c, dict) for c in chunks):
        raise _malformed("chunk index")
    stored = sum(_field_int(c.get("length"), "chunk index", 0, 1 << 62) for c in chunks)
    if isinstance(vh.get("data"), dict):  # a fallback volume: one section holds it all
        stored += _field_int(vh["data"].get("length"), "volume data", 0, 1 << 62)
    model = vh.get("model") if isinstance(vh.get("model"), dict) else {}
    voxels = math.prod(shape)
    out = {"shape": list(shape), "dtype": dtype.name, "voxels": voxels,
           "raw_bytes": voxels * dtype.itemsize, "stored_bytes": stored,
           "chunks": len(chunks), "codec": vh.get("codec"),
           "model": model.get("name"), "model_sha256": model.get("sha256"),
           "bits_per_voxel": 8.0 * stored / voxels if voxels else 0.0}
    # predictors with versions (medzip-blend) and the network they run, when well formed
    if isinstance(model.get("version"), int) and not isinstance(model.get("version"), bool):
        out["model_version"] = model["version"]
    net = model.get("lstm")
    if isinstance(net, dict) and isinstance(net.get("name"), str) \
            and isinstance(net.get("sha256"), str):
        out["network"] = {"name": net["name"][:200], "sha256": net["sha256"][:64]}
    return out
