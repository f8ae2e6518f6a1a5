"""Small and odd files: medzip against zstd -19 and xz -9 on other projects' test corpora.

Every file that pip ships in pydicom's ``data/test_files``, nibabel's ``tests/data`` and (when
it ships any) pynrrd's test data is compressed with ``medzip.files.encode_file``, restored, and
compared byte for byte with the input. Each file falls in one class:

* ``coded``   at least one volume is coded predictively,
* ``lz``      a format archive whose volumes (if any) all took the zstd/xz fallback,
* ``stored``  the whole file stored (format 2.0 stored-file fallback),
* ``refused`` medzip does not accept it (not an image format it reads, or a MedzipError).

Several medzip checkouts can be compared in one run (``--src A --src B``): each is imported in
its own process from ``A/src`` (default: the installed medzip). Peers are measured in the same
run: zstd -19 is python-zstandard level 19 without checksum (the CLI adds 4 bytes), xz -9 is
``lzma.compress(preset=9)`` (the .xz container, as ``xz -9``).

    python benchmarks/small_files.py --level 1 --src /tmp/medzip-base --src . --worst 10
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard


def corpus_files() -> list[Path]:
    roots = []
    for module, sub in (("pydicom", "data/test_files"), ("nibabel", "tests/data"),
                        ("nrrd", "tests/data")):
        try:
            mod = __import__(module)
        except ImportError:
            continue
        root = Path(mod.__file__).parent / sub
        if root.is_dir():
            roots.append(root)
    return sorted(p for r in roots for p in r.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def peers(path: Path) -> dict:
    data = path.read_bytes()
    return {"size": len(data), "zstd19": len(zstandard.ZstdCompressor(level=19).compress(data)),
            "xz9": len(lzma.compress(data, preset=9))}


# -- worker: runs inside one medzip checkout -------------------------------------------------
def _restored_equal(written: list[Path], out_dir: Path, src: Path) -> bool:
    if not written:
        return False
    for p in written:
        rel = Path(p).relative_to(out_dir)
        orig = src if len(written) == 1 else src.parent / rel
        if not orig.is_file() or Path(p).read_bytes() != orig.read_bytes():
            return False
    return True


def worker(paths: list[str], level: int | None) -> None:
    import medzip
    from medzip import files
    from medzip.errors import MedzipError

    for name in paths:
        src = Path(name)
        row = {"path": name}
        t0 = time.perf_counter()
        try:
            data = files.encode_file(src, level=level, workers=1)
        except MedzipError as exc:
            row.update(cls="refused", why=str(exc).split(": ")[-1][:80])
            print(json.dumps(row), flush=True)
            continue
        row["seconds"] = time.perf_counter() - t0
        row["mzp"] = len(data)
        info = medzip.inspect(data)
        codecs = [v["codec"] for v in info["volumes"]]
        fmt = (info.get("source") or {}).get("format")
        row["cls"] = ("stored" if fmt == "stored" else
                      "coded" if "predictive" in codecs else "lz")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            out.mkdir()
            try:
                written = files.decompress_bytes(data, out / src.name)
                row["exact"] = _restored_equal([Path(p) for p in written], out, src)
            except MedzipError as exc:
                row["exact"] = False
                row["why"] = str(exc)[:80]
        print(json.dumps(row), flush=True)


def run_version(src: str | None, paths: list[Path], level: int | None) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve() / "src")
    cmd = [sys.executable, __file__, "--worker", "--level", str(level or 0), *map(str, paths)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return {r["path"]: r for r in map(json.loads, out.splitlines())}


def summarise(label: str, rows: dict, ref: dict) -> list[str]:
    classes: dict = {}
    for r in rows.values():
        classes[r["cls"]] = classes.get(r["cls"], 0) + 1
    acc = [p for p, r in rows.items() if r["cls"] != "refused"]
    tot = {k: sum(ref[p][k] for p in acc) for k in ("size", "zstd19", "xz9")}
    mzp = sum(rows[p]["mzp"] for p in acc)
    worse = sum(rows[p]["mzp"] > ref[p]["zstd19"] for p in acc)
    over64 = sum(rows[p]["mzp"] > ref[p]["zstd19"] + 64 for p in acc)
    bigger = sum(rows[p]["mzp"] > ref[p]["size"] for p in acc)
    wrong = sum(not rows[p].get("exact") for p in acc)
    secs = sum(rows[p]["seconds"] for p in acc)
    cls = ", ".join(f"{k} {v}" for k, v in sorted(classes.items()))
    return [f"| {label} | {cls} | {len(acc)} | {tot['size']:,} | {mzp:,} | {tot['zstd19']:,} | "
            f"{tot['xz9']:,} | {mzp / tot['zstd19']:.3f} | {worse} | {over64} | {bigger} | "
            f"{wrong} | {secs:.1f} |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", action="append", default=[],
                    help="medzip checkout to measure (repeatable; default: the installed one)")
    ap.add_argument("--level", type=int, default=0, help="medzip level (0: its default)")
    ap.add_argument("--worst", type=int, default=10)
    ap.add_argument("--json", help="write every row here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    level = args.level or None
    if args.worker:
        worker(args.paths, level)
        return
    paths = corpus_files()
    ref = {str(p): peers(p) for p in paths}
    versions = args.src or [None]
    results = {}
    for src in versions:
        label = src or "installed"
        results[label] = run_version(src, paths, level)
    print(f"{len(paths)} files; level {args.level or 'default'}\n")
    print("| medzip | classes | accepted | input B | medzip B | zstd -19 B | xz -9 B | "
          "medzip / zstd | > zstd | > zstd+64 | > input | not exact | encode s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, rows in results.items():
        print("\n".join(summarise(label, rows, ref)))
    last = list(results)[-1]
    rows = results[last]
    acc = [p for p, r in rows.items() if r["cls"] != "refused"]
    worst = sorted(acc, key=lambda p: rows[p]["mzp"] - ref[p]["zstd19"], reverse=True)
    print(f"\nWorst {args.worst} by medzip - zstd -19 bytes ({last}; earlier versions alongside):\n")
    print("| file | input B | zstd -19 | xz -9 | " + " | ".join(results) + " | class |")
    print("|---|---|---|---|" + "---|" * len(results) + "---|")
    for p in worst[:args.worst]:
        cols = " | ".join(str(results[v].get(p, {}).get("mzp", "refused")) for v in results)
        short = "/".join(Path(p).parts[-2:])
        print(f"| {short} | {ref[p]['size']} | {ref[p]['zstd19']} | {ref[p]['xz9']} | {cols} | "
              f"{rows[p]['cls']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"ref": ref, "results": results}, indent=1))


if __name__ == "__main__":
    main()
