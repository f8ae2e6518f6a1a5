"""A longer hostile-archive campaign than the suite runs: every stream kind medzip writes,
mutated many more times, each kind in a memory-limited forked child (test_hostile's harness).

The suite keeps its fuzz tests short (a few hundred to a few thousand mutations of a handful of
streams); run this before a release or after a format change. The same real data the suite
uses (the bundled DWI b0 sample and the golden crops), so it needs no ../shared.

Per stream, three campaigns:
* whole: bit flips anywhere, truncations, header bytes flipped and header fields replaced with
  the CRC recomputed (test_hostile._mutations);
* sections: a predictor parameter block or a coded chunk damaged and sealed with a valid CRC
  (and, for the blend, its zstd-packed values forged and re-packed);
* partial: the whole campaign's archives decoded by slice range (``slices=``).
A finding is any exception other than a one-line MedzipError, a resident-memory growth over the
suite's budget, a decode slower than 20 s, or a *full* decode that returns a different array
without an error. A slice-range decode of a forged header may return other values (it cannot
check the volume digest: docs/FORMAT.md §9) and is counted, not a finding.

Hostile *input files* too (``--inputs``): real NIfTI-1 / NIfTI-2 (nibabel's test data), DICOM
(pydicom's), NRRD, MetaImage and .npy files of the bundled sample, mutated (bytes of the header
region changed, anywhere, or cut short; a ``.nii.gz`` is mutated inside and re-gzipped), then
compressed at level 1 and, where that succeeds, restored: only a one-line MedzipError, or the
exact file bytes back, or a restore the adapter announced as re-compressed (a gzip stream zlib
did not write: same header and voxels, other compressed bytes) pass.

Usage: python tests/fuzz_campaign.py [--count N] [--paper] [--only NAME ...] [--inputs | --archives]
(~1 minute per stream at the default 1,500 mutations; --paper adds the medzip-paper stream,
whose float-free but slow network takes ~15 minutes for the same count; the inputs take
~5 minutes.) Exit status 1 on a finding. Stop 18's runs found a model entry whose network name
was a list raising TypeError, a .npy header with an unclosed brace raising tokenize.TokenError
and a NIfTI-2 header with a negative dimension raising OverflowError.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import medzip  # noqa: E402
from medzip.errors import MedzipError  # noqa: E402

import test_hostile as hostile  # noqa: E402
from conftest import (Stream, deep_trio, demo_volume, example4d_head_series,  # noqa: E402
                      long_dwi, wide_heart, zero_padded_ct)

EXPECTED = ("exact", "corrupt", "refused")


def streams(paper: bool) -> dict:
    """name -> (array, compress keyword arguments)."""
    dwi = demo_volume()[:6, 20:60, 20:60]
    out = {
        "level1 ls3d": (dwi, dict(level=1, chunk_slices=2)),
        "level2 ls3d": (dwi, dict(level=2, chunk_slices=3)),
        "level4 medzip-lstm": (dwi, dict(level=4, chunk_slices=3)),
        "level5 value table": (dwi, dict(level=5, chunk_slices=3)),  # the sample is sparse
        "level5 wide sets": (wide_heart(), dict(level=5, chunk_slices=5)),
        "level5 long sets": (long_dwi(), dict(level=5, chunk_slices=3)),
        "level5 deep sets": (np.ascontiguousarray(deep_trio()[:, 16:48, 16:48]),
                             dict(level=5, chunk_slices=16)),
        "level5 padding value": (np.ascontiguousarray(zero_padded_ct()[:8]),
                                 dict(level=5, chunk_slices=4)),
        "level9 series": (example4d_head_series()[:, :4, :32, :40], dict(level=9, chunk_slices=2)),
    }
    if paper:
        out["medzip-paper"] = (dwi[:, :24, :24], dict(model="medzip-paper", chunk_slices=3))
    return out


def _partial_outcome(data: bytes, original: np.ndarray, rng: random.Random) -> str:
    z = original.shape[-3]
    start = rng.randrange(z)
    stop = rng.randrange(start, z + 1)
    try:
        out = medzip.decompress(data, slices=(start, stop))
    except MedzipError as exc:
        return "refused" if "\n" not in str(exc) else "LEAK multi-line message"
    except Exception as exc:  # noqa: BLE001 - the finding this campaign looks for
        return f"LEAK partial {type(exc).__name__}: {exc}"[:300]
    want = original[..., start:stop, :, :]
    same = out.dtype == original.dtype and out.shape == want.shape and np.array_equal(out, want)
    return "exact" if same else "other values (forged header, no digest)"


def _partial(data: bytes, original: np.ndarray, count: int, seed: int) -> dict:
    """The whole campaign's mutations, decoded by a random slice range each."""
    rng = random.Random(seed)
    return hostile._fuzz(data, original, count, seed,
                         lambda blob, arr: _partial_outcome(blob, arr, rng))


def input_files(folder: Path) -> dict:
    """name -> bytes of real input files of every format medzip reads."""
    import gzip

    out = {}
    try:
        from nibabel.testing import data_path
        out["anatomical.nii"] = (Path(data_path) / "anatomical.nii").read_bytes()
        out["example_nifti2.nii"] = gzip.decompress(
            (Path(data_path) / "example_nifti2.nii.gz").read_bytes())
        out["anatomical.nii.gz"] = out["anatomical.nii"]  # mutated, then gzipped
    except (ImportError, OSError):
        pass
    try:
        from pydicom.data import get_testdata_file
        for name in ("CT_small.dcm", "MR_small.dcm"):
            out[name] = Path(get_testdata_file(name)).read_bytes()
    except (ImportError, OSError, TypeError):
        pass
    vol = np.ascontiguousarray(demo_volume()[:4, 30:70, 30:70], dtype="<i2")
    np.save(folder / "sample.npy", vol)
    out["sample.npy"] = (folder / "sample.npy").read_bytes()
    sizes = b"%d %d %d" % vol.shape[::-1]
    out["sample.nrrd"] = (b"NRRD0004\ntype: int16\ndimension: 3\nsizes: " + sizes +
                          b"\nendian: little\nencoding: gzip\n\n" +
                          gzip.compress(vol.tobytes(), mtime=0))
    out["sample.mha"] = (b"ObjectType = Image\nNDims = 3\nBinaryData = True\n"
                         b"BinaryDataByteOrderMSB = False\nDimSize = " + sizes +
                         b"\nElementType = MET_SHORT\nElementDataFile = LOCAL\n" + vol.tobytes())
    return out


def _mutate_input(blob: bytes, rng: random.Random) -> bytes:
    b = bytearray(blob)
    r = rng.random()
    if r < 0.1:
        return bytes(b[:rng.randrange(1, len(b))])
    span = min(len(b), 600) if r < 0.8 else len(b)  # mostly the header region
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(span)
        if rng.random() < 0.5:
            b[i] ^= 1 << rng.randrange(8)
        else:
            b[i] = rng.choice(b"0123456789 -\n:=x\xff\x00")
    return bytes(b)


def _fuzz_input(name: str, blob: bytes, count: int, seed: int) -> dict:
    import gzip
    import io
    import tempfile

    from medzip import files

    rng = random.Random(seed)
    tally: dict = {}
    with tempfile.TemporaryDirectory(prefix="medzip-fuzz-") as tmp:
        path = Path(tmp) / name
        for _ in range(count):
            data = _mutate_input(blob, rng)
            if name.endswith(".gz"):
                data = gzip.compress(data, mtime=0)
            path.write_bytes(data)
            t0 = time.perf_counter()
            try:
                archive = files.encode_file(path, level=1, workers=1)
                out = io.BytesIO()
                files.decompress_to_stream(archive, out, workers=1, name=str(path) + ".mzp")
                outcome = "exact"
                if out.getvalue() != data:
                    adapter, payload = files.load_file(path)
                    notes = getattr(adapter, "storage_notes", lambda meta: [])(payload.meta)
                    outcome = ("re-compressed, announced"
                               if any(n["kind"] == "recompressed" for n in notes)
                               else "WRONG restore")
            except MedzipError as exc:
                outcome = "refused" if "\n" not in str(exc) else "LEAK multi-line message"
            except Exception as exc:  # noqa: BLE001 - the finding this campaign looks for
                outcome = f"LEAK {type(exc).__name__}: {exc}"[:300]
            if time.perf_counter() - t0 > 20:
                outcome = "LEAK slow"
            tally[outcome] = tally.get(outcome, 0) + 1
    return {"tally": tally}


def run_inputs(args) -> int:
    import tempfile
    import warnings

    findings = 0
    with tempfile.TemporaryDirectory(prefix="medzip-fuzz-") as tmp:
        sources = input_files(Path(tmp))
    for i, (name, blob) in enumerate(sources.items()):
        if args.only and not any(s in name for s in args.only):
            continue
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel warns about the odd headers it reads
            status, value, growth = hostile.run_limited(_fuzz_input, name, blob, args.count,
                                                        args.seed + 7 * i, timeout=7200)
        tally = value["tally"] if status == "ok" else {f"harness: {value}": 1}
        bad = {k: n for k, n in tally.items()
               if k.startswith(("LEAK", "WRONG", "harness"))}
        if growth >= hostile.RSS_BUDGET:
            bad[f"memory +{growth >> 20} MiB"] = 1
        findings += sum(bad.values())
        print(f"input {name:22s} {args.count} mutations, {time.time() - t0:5.0f} s, "
              f"RSS +{growth >> 20} MiB, outcomes {tally}", flush=True)
    return findings


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1500, help="mutations per campaign")
    ap.add_argument("--paper", action="store_true", help="add the (slow) medzip-paper stream")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="streams whose name contains NAME")
    ap.add_argument("--seed", type=int, default=1000)
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--inputs", action="store_true", help="only the input-file campaign")
    what.add_argument("--archives", action="store_true", help="only the archive campaigns")
    args = ap.parse_args()
    findings = 0 if args.archives else run_inputs(args)
    for i, (name, (arr, kw)) in enumerate([] if args.inputs else streams(args.paper).items()):
        if args.only and not any(s in name for s in args.only):
            continue
        data = medzip.compress(arr, **kw)
        model = Stream.parse(data).header["volumes"][0].get("model", {})
        print(f"{name}: {arr.shape} {arr.dtype}, model entry {model}", flush=True)
        blend = model.get("name") == "medzip-blend"
        for label, fn, extra in (("whole", hostile._fuzz, ()),
                                 ("sections", hostile._fuzz_sections, (blend,)),
                                 ("partial", _partial, ())):
            t0 = time.time()
            status, value, growth = hostile.run_limited(fn, data, arr, args.count,
                                                        args.seed + 10 * i, *extra, timeout=7200)
            if status != "ok":
                bad = {("harness", value): 1}
            else:
                bad = {k: n for k, n in value["tally"].items()
                       if k[1] not in EXPECTED and not k[1].startswith("other values")}
            if growth >= hostile.RSS_BUDGET:
                bad[("memory", f"{growth >> 20} MiB")] = 1
            findings += sum(bad.values())
            other = sum(n for k, n in value["tally"].items() if k[1].startswith("other")) \
                if status == "ok" else 0
            print(f"{name:22s} {label:8s} {args.count} mutations, {time.time() - t0:5.0f} s, "
                  f"RSS +{growth >> 20} MiB, findings {bad or 0}"
                  + (f", partial decodes of forged headers with other values: {other}"
                     if other else ""), flush=True)
    print(f"{findings} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
