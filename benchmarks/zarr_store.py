"""Zarr store size and write/read time: the medzip codec against what Zarr users pick today.

For each genuine CT and MR volume of the shared data set (manifest.json; ``derived_`` ones are
left out unless ``--include-derived``) and each chunk shape, the same array is written to a
local Zarr store with

- ``medzip``        Zarr v3, ``serializer=MedZipCodec(level)``, no other codec;
- ``zarr-default``  Zarr v3 with Zarr's default codecs (bytes + zstd level 0);
- ``blosc-zstd``    Zarr v3, ``BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")``;
- ``jpegxl``        imagecodecs' numcodecs ``Jpegxl(lossless=True)`` on a Zarr v2 array (it is a
                    numcodecs codec; Zarr v3 has no wrapper for it); signed volumes are stored
                    minus their minimum as unsigned (JPEG-XL has no signed types); skipped with
                    a note if imagecodecs lacks JPEG-XL;

then read back whole with ``zarr.open_array`` and compared with the input (a mismatch is
reported and makes the exit status 1). Store bytes are all files of the store, metadata
included. Times are wall-clock seconds in this process (Zarr's own threads; one run each), so
compare them within a run. 4-D volumes get chunk 1 on their first (time) axis.

    python benchmarks/zarr_store.py                       # table to stdout
    python benchmarks/zarr_store.py --docs                # also refresh docs/BENCHMARKS.md
    python benchmarks/zarr_store.py --volumes ct_head_invesalius_cranium --chunks 32,256,256
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import zarr

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("MEDZIP_BENCH_DATA", REPO.parent / "shared" / "data"))
DEFAULT_CHUNKS = ["32,256,256", "16,128,128"]
CODECS = ("medzip", "zarr-default", "blosc-zstd", "jpegxl")
DOC = REPO / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- zarr:begin -->", "<!-- zarr:end -->"


def _volumes(data: Path, names: list[str] | None, derived: bool) -> list[dict]:
    manifest = json.loads((data / "manifest.json").read_text())
    out = []
    for entry in manifest:
        rel = entry.get("npy", "")
        # volumes/NAME.npy only: the manifest also lists 2-D slices (volumes/2d/..., kept in
        # slices/ on disk), which are not volumes
        if not rel.startswith("volumes/") or rel.count("/") != 1 or not (data / rel).is_file():
            continue
        if names and entry["name"] not in names:
            continue
        if not names and (entry.get("kind") not in ("CT", "MR") or not entry.get("genuine")):
            if not (derived and entry.get("kind", "").split("-")[0] in ("CT", "MR")):
                continue
        out.append(entry)
    return out


def _chunks_for(shape, chunks3) -> tuple[int, ...]:
    full = (1,) * max(0, len(shape) - 3) + tuple(chunks3[-min(len(shape), 3):])
    return tuple(min(c, s) for c, s in zip(full, shape))


@lru_cache(maxsize=None)
def _jpegxl():
    try:
        from imagecodecs.numcodecs import Jpegxl, register_codecs
        import imagecodecs
    except ImportError:
        return None, "imagecodecs not installed"
    if not getattr(getattr(imagecodecs, "JPEGXL", None), "available", False):
        return None, "imagecodecs built without JPEG-XL"
    register_codecs()  # so that the v2 array can be reopened from its metadata
    return Jpegxl, None


def _create(kind: str, path: Path, arr: np.ndarray, chunks, level: int):
    common = dict(store=str(path), shape=arr.shape, chunks=chunks, dtype=arr.dtype)
    if kind == "medzip":
        from medzip.zarr import MedZipCodec

        return zarr.create_array(**common, serializer=MedZipCodec(level=level), compressors=None)
    if kind == "zarr-default":
        return zarr.create_array(**common)
    if kind == "blosc-zstd":
        from zarr.codecs import BloscCodec

        return zarr.create_array(**common, compressors=BloscCodec(cname="zstd", clevel=5,
                                                                  shuffle="shuffle"))
    if kind == "jpegxl":
        jpegxl, why = _jpegxl()
        if jpegxl is None:
            raise RuntimeError(why)
        return zarr.create_array(**common, zarr_format=2, filters=None,
                                 compressors=jpegxl(lossless=True))
    raise ValueError(kind)


def _store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _unsigned_shift(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """JPEG-XL codes unsigned samples only: signed volumes are stored minus their minimum (as
    the user would have to), outside the timings. numcodecs' FixedScaleOffset filter would do
    the same inside Zarr, but it flattens the chunk, so JPEG-XL would see one long row."""
    if arr.dtype.kind != "i":
        return arr, 0
    low = int(arr.min())
    return (arr.astype(np.int64) - low).astype(arr.dtype.str.replace("i", "u")), low


def measure(kind: str, arr: np.ndarray, chunks, level: int, workdir: Path) -> dict:
    path = workdir / f"{kind}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    stored, low = _unsigned_shift(arr) if kind == "jpegxl" else (arr, 0)
    try:
        t0 = time.perf_counter()
        z = _create(kind, path, stored, chunks, level)
        z[...] = stored
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = zarr.open_array(str(path), mode="r")[...]
        t_read = time.perf_counter() - t0
        if stored.dtype != arr.dtype:
            back = (back.astype(np.int64) + low).astype(arr.dtype)
    except Exception as exc:  # a codec that cannot take this volume is reported, not fatal
        return {"codec": kind, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
    finally:
        size = _store_bytes(path) if path.exists() else 0
        shutil.rmtree(path, ignore_errors=True)
    exact = back.dtype == arr.dtype and np.array_equal(back, arr)
    return {"codec": kind, "bytes": size, "write_s": t_write, "read_s": t_read, "exact": exact}


def _fmt_row(vol, chunks, r, ref) -> str:
    if "error" in r:
        return f"| {vol} | {chunks} | {r['codec']} | n/a | | | | {r['error']} |"
    rel = r["bytes"] / ref if ref else float("nan")
    note = "" if r["exact"] else "**MISMATCH**"
    return (f"| {vol} | {chunks} | {r['codec']} | {r['bytes']:,} | {rel:.3f} | "
            f"{r['write_s']:.2f} | {r['read_s']:.2f} | {note} |")


def run(args) -> tuple[str, bool]:
    vols = _volumes(args.data, args.volumes, args.include_derived)
    if not vols:
        raise SystemExit(f"no volumes found in {args.data}")
    chunk_list = [tuple(int(c) for c in s.split(",")) for s in args.chunks]
    _, jxl_note = _jpegxl()
    import medzip

    medzip.decompress(medzip.compress(np.arange(4096, dtype=np.int16).reshape(4, 32, 32),
                                      level=args.level))  # JIT warm-up outside the timings
    rows, totals, ok = [], {}, True
    with tempfile.TemporaryDirectory(prefix="medzip-zarr-bench-") as tmp:
        for entry in vols:
            arr = np.load(args.data / entry["npy"])
            for chunks3 in chunk_list:
                chunks = _chunks_for(arr.shape, chunks3)
                results = [measure(k, arr, chunks, args.level, Path(tmp)) for k in args.codecs]
                ref = next((r["bytes"] for r in results if r["codec"] == "zarr-default"
                            and "error" not in r), None)
                label = "x".join(map(str, chunks))
                for r in results:
                    print(f"{entry['name']} {label} {r}", file=sys.stderr, flush=True)
                    rows.append(_fmt_row(entry["name"], label, r, ref))
                    if "error" not in r:
                        ok &= r["exact"]
                        key = (entry["kind"].split("-")[0], "x".join(map(str, chunks3)), r["codec"])
                        t = totals.setdefault(key, [0, 0.0, 0.0, 0])
                        t[0] += r["bytes"]; t[1] += r["write_s"]; t[2] += r["read_s"]
                        t[3] += arr.nbytes
                    elif r["codec"] == "medzip":
                        ok = False
    lines = [
        "Command: `python benchmarks/zarr_store.py" + "".join(" " + a for a in args.argv) + "`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
        f"{platform.python_version()}, zarr {zarr.__version__}; medzip level {args.level}.",
        "",
        "Totals per modality and chunk shape (store bytes summed over the volumes; "
        "x default = bytes / Zarr default's bytes; times summed):",
        "",
        "| modality | chunks | codec | raw bytes | store bytes | x default | write s | read s |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for (mod, ch, codec), (b, w, r, raw) in totals.items():
        ref = totals.get((mod, ch, "zarr-default"), [0])[0]
        rel = f"{b / ref:.3f}" if ref else "n/a"
        lines.append(f"| {mod} | {ch} | {codec} | {raw:,} | {b:,} | {rel} | {w:.1f} | {r:.1f} |")
    lines += ["", "Per volume (x default: bytes / Zarr default's bytes for the same chunks):", "",
              "| volume | chunks | codec | store bytes | x default | write s | read s | note |",
              "|---|---|---|---:|---:|---:|---:|---|", *rows]
    if jxl_note:
        lines += ["", f"jpegxl: {jxl_note}."]
    return "\n".join(lines), ok


def _update_doc(table: str) -> None:
    text = DOC.read_text()
    block = f"{BEGIN}\n{table}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Zarr stores: medzip codec vs Zarr's codecs\n\n" + \
            "Made by `benchmarks/zarr_store.py` (see its docstring and docs/ZARR.md).\n\n" + block + "\n"
    DOC.write_text(text)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (manifest.json)")
    p.add_argument("--volumes", nargs="*", help="volume names (default: genuine CT and MR)")
    p.add_argument("--include-derived", action="store_true", help="also derived CT/MR volumes")
    p.add_argument("--chunks", nargs="+", default=DEFAULT_CHUNKS, metavar="Z,Y,X")
    p.add_argument("--codecs", type=lambda s: s.split(","), default=list(CODECS),
                   help=f"comma-separated subset of {','.join(CODECS)}")
    p.add_argument("--level", type=int, default=5, help="medzip level (default 5)")
    p.add_argument("--docs", action="store_true", help="write the table into docs/BENCHMARKS.md")
    args = p.parse_args(argv)
    args.argv = argv
    table, ok = run(args)
    print(table)
    if args.docs:
        _update_doc(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
