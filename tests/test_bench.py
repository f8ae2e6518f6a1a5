"""medzip bench: adapters round-trip real data, missing libraries skip, failures are not counted.

Sizes and speeds are never asserted: they depend on the machine and library versions.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medzip.bench import codecs as bc
from medzip.bench import report
from medzip.bench.codecs import Codec, Encoded, all_codecs, select
from medzip.bench.runner import Volume, guess_modality, measure, run_bench

DOCS = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
# Every default codec except the slow medzip levels (tests use medzip at its fast level only).
TEST_CODECS = [n for n, c in all_codecs().items()
               if c.default and n not in ("medzip-default", "medzip-strong")]


def _mr_crop() -> np.ndarray:
    """nibabel's example4d fMRI, stored int16, as (t, z, y, x), cropped to 2x3x40x48."""
    path = Path(nib.__file__).parent / "tests" / "data" / "example4d.nii.gz"
    data = np.asarray(nib.load(path).dataobj.get_unscaled())  # (x, y, z, t)
    return np.ascontiguousarray(data.transpose(3, 2, 1, 0)[:, 10:13, 30:70, 40:88])


def _ct_slice() -> np.ndarray:
    """pydicom's CT_small stored values; 2-D, 128x128, int16."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    return np.ascontiguousarray(ds.pixel_array)


@pytest.fixture(scope="module")
def volumes() -> list[Volume]:
    mr, ct = _mr_crop(), _ct_slice()
    return [
        Volume("mr_example4d_crop", mr, "MR"),
        # Hounsfield units (stored + RescaleIntercept -1024): signed data with negatives.
        Volume("ct_small_hu", (ct.astype(np.int32) - 1024).astype(np.int16), "CT"),
        # The same CT scaled to 16 bits, to exercise the >12-bit paths (HEVC split, uint16).
        Volume("ct_small_16bit", ct.astype(np.uint16) << 4, "CT"),
        # The MR crop at 8 bits, to exercise the uint8 paths.
        Volume("mr_example4d_8bit", (mr >> 3).astype(np.uint8), "MR"),
    ]


@pytest.mark.parametrize("name", TEST_CODECS)
def test_codec_round_trips_real_volumes(name, volumes):
    codec = all_codecs()[name]
    missing = codec.unavailable()
    for vol in volumes:
        res = measure(codec, vol, memory="none", warm_up=False)
        if missing:
            assert res.status == "skipped" and res.reason == missing
            continue
        assert res.status == "ok", f"{name} on {vol.name}: {res.reason}"
        assert res.verified and res.compressed_bytes > 0 and res.bits_per_voxel > 0
        assert res.encode_s > 0 and res.decode_s > 0
        if vol.name == "ct_small_hu" and codec.family in ("image", "video") \
                and not getattr(codec, "signed_ok", False):
            assert res.offset == 1024 - int(_ct_slice().min())  # shifted to unsigned
            assert "signed input shifted to unsigned by +offset" in res.notes


def test_hevc_split_path_when_ffmpeg_present(volumes):
    codec = all_codecs()["hevc-x265"]
    if codec.unavailable():
        pytest.skip(codec.unavailable())
    enc = codec.encode(volumes[2].array)
    assert enc.side["layout"] == "split" and len(enc.parts) == 2
    assert np.array_equal(codec.decode(enc), volumes[2].array)


@pytest.mark.parametrize("module,codec_name", [
    ("imagecodecs", "jpegxl-e7"), ("imagecodecs", "htj2k"), ("pyppmd", "ppmd-h6"),
    ("zstandard", "zstd-19"),
])
def test_missing_library_is_skipped_with_reason(monkeypatch, volumes, module, codec_name):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    res = measure(all_codecs()[codec_name], volumes[0], memory="none")
    assert res.status == "skipped" and not res.verified
    assert module in res.reason


def test_missing_ffmpeg_is_skipped_with_reason(monkeypatch, volumes):
    monkeypatch.setattr(bc.shutil, "which", lambda name: None)
    res = measure(all_codecs()["hevc-x265"], volumes[0], memory="none")
    assert res.status == "skipped" and res.reason == "ffmpeg not found on PATH"


def test_medzip_model_error_is_skipped(monkeypatch, volumes):
    import medzip
    from medzip.errors import MedzipError

    def refuse(*args, **kwargs):
        raise MedzipError("model 'medzip-paper' is not shipped")

    monkeypatch.setattr(medzip, "compress", refuse)
    res = measure(all_codecs()["medzip-paper"], volumes[0], memory="none", warm_up=False)
    assert res.status == "skipped" and "not shipped" in res.reason


class _Broken(Codec):
    """Tiny output, wrong decode: would win every comparison if it were counted."""

    name, family = "broken", "general"

    def encode(self, vol):
        return Encoded([b"\0"], {"vol": vol.copy()})

    def decode(self, enc):
        out = enc.side["vol"].copy()
        out.flat[0] += 1
        return out


class _Crashing(Codec):
    name, family = "crashing", "image"

    def encode(self, vol):
        return Encoded([b"\0" * 8])

    def decode(self, enc):
        raise RuntimeError("decoder fell over")


@pytest.fixture(scope="module")
def small_run(volumes):
    codecs = [all_codecs()["medzip-fast"], all_codecs()["gzip-6"], all_codecs()["bzip2-9"],
              _Broken(), _Crashing()]
    results = run_bench(volumes[:2], codecs, memory="auto")
    return results, report.summarize(results, reference="medzip-fast")


def test_broken_codec_is_failed_and_not_counted(small_run):
    results, summary = small_run
    broken = [r for r in results if r.codec == "broken"]
    assert broken and all(r.status == "failed" and not r.verified for r in broken)
    assert all("round trip not exact: 1 of" in r.reason for r in broken)
    assert all(r.bits_per_voxel is None and r.rel_best_standard is None for r in broken)
    crashing = [r for r in results if r.codec == "crashing"]
    assert all(r.status == "failed" and "decoder fell over" in r.reason for r in crashing)
    for r in results:
        assert r.best_standard_codec in ("gzip-6", "bzip2-9")
    rows = [s for s in summary if s["codec"] == "broken"]
    assert rows and all(s["files_ok"] == 0 and s["files_failed"] > 0 for s in rows)
    assert all(s["bits_per_voxel"] is None and s["compressed_bytes"] is None for s in rows)
    gz = next(s for s in summary if s["codec"] == "gzip-6" and s["group"] == "overall")
    assert gz["files_ok"] == 2 and gz["rel_best_standard"] >= 1.0
    assert gz["rel_medzip_default"] is not None


def _documented(section: str) -> list[str]:
    text = DOCS.read_text()
    block = re.search(rf"<!-- fields:{section} -->(.*?)<!-- /fields:{section} -->", text, re.S)
    assert block, f"docs/BENCHMARKS.md lacks the {section} field table"
    return re.findall(r"^\| `([a-z_]+)` \|", block.group(1), re.M)


def test_json_and_csv_have_the_documented_fields(small_run, tmp_path):
    results, summary = small_run
    out = tmp_path / "bench.json"
    report.write_json(out, results, summary, {"repeat": 1})
    doc = json.loads(out.read_text())
    assert set(doc) >= set(_documented("top"))
    assert doc["results"] and doc["summary"]
    for row in doc["results"]:
        assert list(row) == _documented("results")
    for row in doc["summary"]:
        assert list(row) == _documented("summary")
    assert set(doc["environment"]) >= {"created", "platform", "python", "versions"}
    csv_path = tmp_path / "bench.csv"
    report.write_csv(csv_path, results)
    lines = csv_path.read_text().splitlines()
    assert lines[0].split(",") == _documented("results")
    assert len(lines) == len(results) + 1


def test_plot_is_a_real_png(small_run, tmp_path):
    import matplotlib.image as mpimg

    _, summary = small_run
    out = tmp_path / "plot.png"
    report.write_plot(out, summary)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    img = mpimg.imread(out)
    assert img.shape[0] > 300 and img.shape[1] > 400 and float(img[..., :3].std()) > 0.01


def test_markdown_and_marker_replacement(small_run):
    results, summary = small_run
    md = report.markdown(results, summary)
    assert "| codec |" in md and "- broken failed on " in md and "round trip not exact" in md
    row = next(line for line in md.splitlines() if line.startswith("| mr_example4d_crop |"))
    assert row.count("| failed") == 2  # broken and crashing show as failed, not as sizes
    text = "intro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\nafter\n"
    new = report.replace_marked(text, "NEW TABLE")
    assert new == "intro\n<!-- bench:begin -->\nNEW TABLE\n<!-- bench:end -->\nafter\n"
    with pytest.raises(ValueError):
        report.replace_marked("no markers", "x")


def test_select_and_modality():
    names = [c.name for c in select("default")]
    assert "medzip-default" in names and "medzip-paper" not in names
    assert [c.name for c in select("gzip-6,medzip-paper")] == ["gzip-6", "medzip-paper"]
    with pytest.raises(KeyError):
        select("nope")
    assert guess_modality("ct_head.npy") == "CT"
    assert guess_modality("mr_epi") == "MR"
    assert guess_modality("derived_mr_t1") == "derived"
    assert guess_modality("scan", {"modality": "pt"}) == "PT"
    assert guess_modality("scan") == "unknown"


def _bench_parser():
    from medzip.bench import cli

    parser = argparse.ArgumentParser(prog="medzip")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_list_codecs_and_usage_errors(capsys):
    parser = _bench_parser()
    args = parser.parse_args(["bench", "--list-codecs"])
    assert args.func(args) == 0
    assert "jpegxl-e7" in capsys.readouterr().out
    args = parser.parse_args(["bench", "x.npy", "--codecs", "nope"])
    assert args.func(args) == 2


def test_cli_end_to_end_on_npy(tmp_path, capsys):
    src = tmp_path / "mr_crop.npy"
    np.save(src, _mr_crop())
    out = tmp_path / "o"
    args = _bench_parser().parse_args([
        "bench", str(src), "--codecs", "medzip-fast,gzip-6,jpegls", "--no-progress",
        "--json", f"{out}.json", "--csv", f"{out}.csv", "--plot", f"{out}.png"])
    assert args.func(args) == 0
    doc = json.loads(Path(f"{out}.json").read_text())
    assert {r["codec"] for r in doc["results"]} == {"medzip-fast", "gzip-6", "jpegls"}
    assert all(r["modality"] == "MR" for r in doc["results"])
    assert Path(f"{out}.png").read_bytes()[:4] == b"\x89PNG"
    assert "medzip-fast" in capsys.readouterr().out
