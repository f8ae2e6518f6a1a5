"""Measure codecs on volumes: size, speed, peak memory, and an exact round-trip check.

A result only counts when the decoded array equals the input (values, dtype and shape);
anything else is ``failed`` with the reason. A codec that cannot run (library missing, input
it does not take) is ``skipped`` with the reason. Nothing here raises for a codec's fault.
"""
from __future__ import annotations

import gc
import re
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..heap import release_free_heap
from .codecs import Codec, Unsupported


@dataclass
class Volume:
    name: str
    array: np.ndarray
    modality: str = "unknown"
    source: str = ""


@dataclass
class Result:
    file: str
    volume: str
    modality: str
    shape: list
    dtype: str
    voxels: int
    raw_bytes: int
    codec: str
    family: str
    status: str  # ok | failed | skipped
    reason: str = ""
    verified: bool = False
    compressed_bytes: int | None = None
    bits_per_voxel: float | None = None
    ratio: float | None = None
    encode_s: float | None = None
    decode_s: float | None = None
    encode_mb_s: float | None = None
    decode_mb_s: float | None = None
    encode_voxels_s: float | None = None
    decode_voxels_s: float | None = None
    peak_mem_encode_bytes: int | None = None
    peak_mem_decode_bytes: int | None = None
    mem_method: str = "none"
    repeat: int = 1
    offset: int = 0
    notes: list = field(default_factory=list)
    # filled in by report.add_relative once every codec has run on this volume
    rel_medzip_default: float | None = None
    rel_best_standard: float | None = None
    best_standard_codec: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# -- loading ------------------------------------------------------------------------------------
_PREFIX = re.compile(r"^(ct|mr|cr|dx|pt|nm|us|xa|mg)(?:2d|3d|4d)?_", re.IGNORECASE)


def guess_modality(name: str, meta: dict | None = None, index: int = 0) -> str:
    """'derived' / CT / MR ... from the file-name prefix, else the metadata's modality.

    Metadata: a top-level ``modality`` key, or (DICOM adapter) the modality of the series that
    produced volume ``index``.
    """
    stem = Path(name).name.lower()
    if stem.startswith("derived_"):
        return "derived"
    m = _PREFIX.match(stem)
    if m:
        return m.group(1).upper()
    meta = meta or {}
    candidates = [meta.get("modality")]
    series = meta.get("series")
    if isinstance(series, list):
        candidates += [s.get("modality") for s in series
                       if isinstance(s, dict) and s.get("volume", index) == index]
    for c in candidates:
        if isinstance(c, str) and c.strip():
            return c.strip().upper()
    return "unknown"


def load_volumes(path) -> list[Volume]:
    """Stored integers of every volume in a file (or DICOM folder), via medzip's format adapters."""
    from medzip.formats.base import adapter_for_path

    path = Path(path)
    payload = adapter_for_path(path).read(path)
    stem = path.name
    for suffix in (".gz", ".nii", ".npy", ".dcm"):
        stem = stem.removesuffix(suffix)
    vols = [np.asarray(v) for v in payload.volumes]
    return [Volume(stem if len(vols) == 1 else f"{stem}[{i}]", v,
                   guess_modality(stem, payload.meta, i), str(path)) for i, v in enumerate(vols)]


# -- memory -------------------------------------------------------------------------------------
class _RssPeak:
    """Growth of the resident set during a call (Linux): reset VmHWM, run, read VmHWM.

    Sees native library buffers too. Freed heap is first handed back to the system (glibc
    ``malloc_trim``) so that reusing it shows; memory still held and reused does not, so the
    figure remains a lower bound on what a fresh process would need.
    """

    method = "rss-hwm"

    @staticmethod
    def usable() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return _RssPeak._read()[0] > 0
        except OSError:
            return False

    @staticmethod
    def _read() -> tuple[int, int]:
        hwm = rss = 0
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        return hwm, rss

    def __enter__(self):
        release_free_heap()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.base = self._read()[1]
        return self

    def __exit__(self, *exc):
        self.peak = max(0, self._read()[0] - self.base)
        return False


class _TracePeak:
    """Python/numpy heap growth via tracemalloc (no native buffers; slows Python code)."""

    method = "tracemalloc"

    def __enter__(self):
        tracemalloc.start()
        return self

    def __exit__(self, *exc):
        self.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return False


class _NoPeak:
    method = "none"
    peak = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def memory_method(requested: str = "auto") -> str:
    """'auto' picks rss-hwm where the kernel allows it, else tracemalloc."""
    if requested == "auto":
        return "rss-hwm" if _RssPeak.usable() else "tracemalloc"
    if requested == "rss-hwm" and not _RssPeak.usable():
        raise ValueError("rss-hwm needs Linux /proc/self/clear_refs")
    if requested not in ("rss-hwm", "tracemalloc", "none"):
        raise ValueError(f"unknown memory method '{requested}'")
    return requested


_METERS = {"rss-hwm": _RssPeak, "tracemalloc": _TracePeak, "none": _NoPeak}


# -- one measurement ------------------------------------------------------------------------------
def _mismatch(vol: np.ndarray, out) -> str | None:
    if not isinstance(out, np.ndarray):
        return f"decoder returned {type(out).__name__}, not an array"
    if out.shape != vol.shape:
        return f"decoded shape {out.shape} != {vol.shape}"
    if out.dtype != vol.dtype:
        return f"decoded dtype {out.dtype} != {vol.dtype}"
    bad = np.count_nonzero(out != vol)
    if bad:
        diff = np.abs(out.astype(np.int64)[out != vol] - vol.astype(np.int64)[out != vol]).max()
        return f"{bad} of {vol.size} voxels differ (max |diff| {diff})"
    return None


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _warm_up(codec: Codec, a: np.ndarray) -> None:
    """One untimed round trip on a small crop, so JIT compilation (medzip's numba kernels are
    compiled per dtype) and lazy library set-up are not timed; errors show in the real run."""
    lim = {-3: 2, -2: 32, -1: 32}
    crop = np.ascontiguousarray(a[tuple(slice(0, lim.get(i - a.ndim, 1)) for i in range(a.ndim))])
    try:
        codec.decode(codec.encode(crop))
    except Exception:  # noqa: BLE001
        pass


def measure(codec: Codec, vol: Volume, *, repeat: int = 1, memory: str = "none",
            warm_up: bool = True) -> Result:
    """Encode + decode ``repeat`` times (best time kept), checking every decode."""
    a = vol.array
    base = dict(file=vol.source or vol.name, volume=vol.name, modality=vol.modality,
                shape=list(a.shape), dtype=str(a.dtype), voxels=int(a.size),
                raw_bytes=int(a.nbytes), codec=codec.name, family=codec.family,
                repeat=max(1, int(repeat)))
    if a.dtype.kind not in "iu":
        return Result(**base, status="skipped", reason=f"{a.dtype} data: the benchmark codes "
                      "stored integers only")
    reason = codec.unavailable()
    if reason:
        return Result(**base, status="skipped", reason=reason)
    a = np.ascontiguousarray(a)
    vol = Volume(vol.name, a, vol.modality, vol.source)
    if warm_up:
        _warm_up(codec, a)
    meter = _METERS[memory]
    # tracemalloc slows Python code, so it gets its own untimed pass; rss-hwm costs nothing.
    passes = ([("mem", _TracePeak)] if memory == "tracemalloc" else []) + \
        [("time", meter if memory != "tracemalloc" else _NoPeak)] * base["repeat"]
    enc_t = dec_t = float("inf")
    enc_mem = dec_mem = None
    size = None
    notes: list[str] = []
    offset = 0
    for kind, meter_cls in passes:
        try:
            gc.collect()
            with meter_cls() as m_enc:
                t0 = time.perf_counter()
                enc = codec.encode(vol.array)
                t1 = time.perf_counter()
            gc.collect()
            with meter_cls() as m_dec:
                t2 = time.perf_counter()
                out = codec.decode(enc)
                t3 = time.perf_counter()
        except Unsupported as exc:
            return Result(**base, status="skipped", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - any codec crash is a reported failure
            return Result(**base, status="failed", reason=_error(exc))
        bad = _mismatch(a, out)
        if bad:
            return Result(**base, status="failed", reason=f"round trip not exact: {bad}",
                          compressed_bytes=enc.nbytes)
        if size is not None and enc.nbytes != size:
            notes.append("output size varied between runs")
        try:
            described = codec.describe(enc)
        except Exception as exc:  # noqa: BLE001 - a note must not turn a verified result into a failure
            described = [f"describe failed: {_error(exc)}"]
        size, notes, offset = enc.nbytes, sorted(set(notes + enc.notes + described)), enc.offset
        if m_enc.peak is not None:
            enc_mem = max(enc_mem or 0, m_enc.peak)
            dec_mem = max(dec_mem or 0, m_dec.peak)
        if kind == "time":
            enc_t, dec_t = min(enc_t, t1 - t0), min(dec_t, t3 - t2)
    mb = a.nbytes / 1e6
    method = memory if not codec.memory_note or memory == "none" else \
        f"{memory} ({codec.memory_note})"
    return Result(**base, status="ok", verified=True, compressed_bytes=size,
                  bits_per_voxel=8.0 * size / a.size, ratio=a.nbytes / size if size else None,
                  encode_s=enc_t, decode_s=dec_t,
                  encode_mb_s=mb / enc_t if enc_t > 0 else None,
                  decode_mb_s=mb / dec_t if dec_t > 0 else None,
                  encode_voxels_s=a.size / enc_t if enc_t > 0 else None,
                  decode_voxels_s=a.size / dec_t if dec_t > 0 else None,
                  peak_mem_encode_bytes=enc_mem, peak_mem_decode_bytes=dec_mem,
                  mem_method=method, offset=offset, notes=notes)


def run_bench(volumes: list[Volume], codecs: list[Codec], *, repeat: int = 1,
              memory: str = "auto", progress: bool = False, on_result=None) -> list[Result]:
    """Every codec on every volume; returns results in (volume, codec) order."""
    from tqdm import tqdm

    memory = memory_method(memory)
    results, warmed = [], set()
    with tqdm(total=len(volumes) * len(codecs), disable=not progress, file=sys.stderr,
              unit="run", dynamic_ncols=True) as bar:
        for vol in volumes:
            for codec in codecs:
                bar.set_description(f"{vol.name[:28]} {codec.name}")
                key = (codec.name, vol.array.dtype.str, vol.array.ndim)
                res = measure(codec, vol, repeat=repeat, memory=memory, warm_up=key not in warmed)
                warmed.add(key)
                results.append(res)
                if on_result:
                    on_result(res)
                bar.update(1)
    return results
