"""Orthanc storage: bytes on disk and REST throughput with the medzip storage area, against
Orthanc's own ``StorageCompression: true`` (zlib) and uncompressed storage, in the same run.

Data: the real CT series of tests/orthanc_support.py (every slice of the genuine InVesalius head
CT, one DICOM file per slice) and the real MR (and other) instances of ../shared/data/originals,
large ones included. Each configuration gets a fresh Orthanc on 127.0.0.1 started from the
configuration ``medzip orthanc config`` prints (the two peers drop the plugin and set
StorageCompression); files are uploaded one by one with REST ``POST /instances``, Orthanc is
restarted (its in-memory cache would otherwise serve the downloads), then every instance is
downloaded with ``GET /instances/{id}/file`` and checked byte for byte. The reference "zlib -9"
is ``zlib.compress(file, 9)`` per file. Throughputs are MB (10^6 bytes) of DICOM files per second,
one client, sequential.

Usage: python benchmarks/orthanc_storage.py [--level N] [--ct-slices K] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import orthanc_support as support  # noqa: E402


def run_config(name: str, cfg: dict, groups: dict[str, list[Path]], work: Path) -> dict:
    config = work / f"{name}.json"
    config.write_text(json.dumps(cfg, indent=2))
    storage = Path(cfg["StorageDirectory"])
    server = support.Orthanc(config, work / f"{name}.log").start()
    ids: dict[str, list[tuple[str, bytes]]] = {g: [] for g in groups}
    try:
        total = 0
        t0 = time.perf_counter()
        for group, paths in groups.items():
            for p in paths:
                data = p.read_bytes()
                ids[group].append((server.upload(data), data))
                total += len(data)
        upload_s = time.perf_counter() - t0
        server.stop()
        server.start()
        t0 = time.perf_counter()
        for group in groups:
            for instance, data in ids[group]:
                status, served = server.get(f"/instances/{instance}/file")
                if status != 200 or served != data:
                    raise SystemExit(f"{name}: instance {instance} not served identically ({status})")
        download_s = time.perf_counter() - t0
        on_disk = {g: sum(server.attachment_file(storage, i).stat().st_size for i, _ in ids[g])
                   for g in groups}
    finally:
        server.stop()
    every_attachment = sum(f.stat().st_size for f in storage.glob("*/*/*") if f.is_file())
    return {"name": name, "dicom_bytes": on_disk, "all_attachment_bytes": every_attachment,
            "upload_MBps": total / upload_s / 1e6, "download_MBps": total / download_s / 1e6,
            "upload_s": upload_s, "download_s": download_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--level", type=int, help="medzip level (default: medzip's default)")
    ap.add_argument("--ct-slices", type=int, help="use only K slices of the CT series")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    args = ap.parse_args(argv)
    if support.ORTHANC is None:
        raise SystemExit("Orthanc is not installed (apt-get install orthanc orthanc-python)")
    if not support.have_shared():
        raise SystemExit(f"needs the shared data set ({support.SHARED})")
    from medzip.orthanc.config import build_config

    with tempfile.TemporaryDirectory(prefix="medzip-orthanc-bench-") as tmp:
        work = Path(tmp)
        groups = {"CT series": support.ct_series(work / "ct", args.ct_slices),
                  "MR/other instances": support.mr_instances(large=True)}
        original = {g: sum(p.stat().st_size for p in ps) for g, ps in groups.items()}
        zlib9 = {g: sum(len(zlib.compress(p.read_bytes(), 9)) for p in ps) for g, ps in groups.items()}
        results = []
        for name in ("uncompressed", "orthanc-zlib", "medzip"):
            cfg = build_config(work / name / "storage", http_port=support.free_port(),
                               dicom_port=support.free_port(), level=args.level)
            if name != "medzip":
                cfg = {k: v for k, v in cfg.items() if k not in ("Plugins", "PythonScript", "Medzip")}
                cfg["StorageCompression"] = name == "orthanc-zlib"
            print(f"running {name} ...", file=sys.stderr, flush=True)
            results.append(run_config(name, cfg, groups, work))
    summary = {"files": {g: len(ps) for g, ps in groups.items()}, "original_bytes": original,
               "zlib9_per_file_bytes": zlib9, "level": args.level, "results": results}
    print(render(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


def render(s: dict) -> str:
    groups = list(s["original_bytes"])
    head = "| storage | " + " | ".join(f"{g} bytes (x zlib -9)" for g in groups) + \
           " | all attachments | upload MB/s | download MB/s |"
    lines = [head, "|" + "---|" * (len(groups) + 4)]
    ref = s["zlib9_per_file_bytes"]
    lines.append("| original files | " + " | ".join(
        f"{s['original_bytes'][g]:,} ({s['original_bytes'][g] / ref[g]:.3f})" for g in groups) + " | | | |")
    lines.append("| zlib -9 per file (reference) | " + " | ".join(
        f"{ref[g]:,} (1.000)" for g in groups) + " | | | |")
    for r in s["results"]:
        lines.append(f"| Orthanc {r['name']} | " + " | ".join(
            f"{r['dicom_bytes'][g]:,} ({r['dicom_bytes'][g] / ref[g]:.3f})" for g in groups)
            + f" | {r['all_attachment_bytes']:,} | {r['upload_MBps']:.2f} | {r['download_MBps']:.2f} |")
    total_ref = sum(ref.values())
    med = next(r for r in s["results"] if r["name"] == "medzip")
    lines.append(f"\nmedzip total DICOM bytes / zlib -9 per file: "
                 f"{sum(med['dicom_bytes'].values()) / total_ref:.3f} "
                 f"(files: {s['files']}, level: {s['level'] or 'default'})")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
