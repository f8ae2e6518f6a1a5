"""Regenerate the golden ``.mzp`` files. Run ONCE, review, commit; tests never call this.

    python tests/golden/make_golden.py            # refuses to overwrite existing files
    python tests/golden/make_golden.py --force    # after an intentional ls3d/format change
    python tests/golden/make_golden.py --set lstm # add files for the current medzip-lstm model
                                                  # (tests/golden/lstm; earlier models' files stay)
    python tests/golden/make_golden.py --set paper  # the same for medzip-paper (tests/golden/paper)
    python tests/golden/make_golden.py --set format2  # format 2.0 / fallback streams (once)
    python tests/golden/make_golden.py --set blend2   # medzip-blend with medzip-blend-lstm:
                                                      # v1 streams and v2 (4-D series coded with
                                                      # the previous volume as context), once
    python tests/golden/make_golden.py --set blend3   # a crop the encoder codes with wide
                                                      # class sets (v3), once
    python tests/golden/make_golden.py --set blend4   # an interpolated crop the encoder codes
                                                      # with long class sets (v4), once
    python tests/golden/make_golden.py --set blend4deep  # a slice-interpolated crop coded
                                                         # with deep class sets (v4), once
    python tests/golden/make_golden.py --set blend5   # a CT crop padded below its air floor
                                                      # outside a circular field of view (v5),
                                                      # and blend4deep's crop as the stop-14
                                                      # encoder codes it (v4 with a mask)
    python tests/golden/make_golden.py --set blend6   # every blend2-blend5 input as the stop-15
                                                      # encoder codes it (v6 where the fixed-rule
                                                      # experts are used), once
    python tests/golden/make_golden.py --set blend7   # the inputs the stop-16 encoder codes
                                                      # differently, a slice and a CT crop
                                                      # padded with 0 HU (v7), once
    python tests/golden/make_golden.py --set blend8   # the inputs the stop-17 encoder codes
                                                      # with the mask by rows (v8) and a
                                                      # padded full-resolution CT slice, once
    python tests/golden/make_golden.py --set blend9   # every blend6-blend8 input with the
                                                      # retrained medzip-blend-lstm, once

Sources are small crops of real volumes from the project's shared data set
(``<repo>/../shared/data/volumes``, see its README for provenance), all from permissively
licensed packages. The voxels themselves are not committed as ``.npy``: each ``.mzp`` holds
them losslessly, and ``manifest.json`` records the SHA-256 of the exact source bytes (native
layout, C order, the dtype's own byte order) that the decoded array must reproduce.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import medzip
from medzip.container import Container

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data" / "volumes"


def _crop(name: str, *index) -> np.ndarray:
    return np.ascontiguousarray(np.load(SHARED / f"{name}.npy")[index])


# name -> (source description, array builder, compress kwargs besides model="ls3d")
CASES = {
    "ct_nema_2x64x64_u2": (
        "ct_nema_enhanced_2frame [:, 200:264, 200:264] (genuine CT, pydicom-data, MIT); "
        "sparse histogram -> value table; one chunk per frame",
        lambda: _crop("ct_nema_enhanced_2frame", slice(None), slice(200, 264), slice(200, 264)),
        {"chunk_slices": 1}),
    "mr_fmri4d_2x4x32x32_i2": (
        "mr_fmri_example4d_nibabel [:, 8:12, 30:62, 40:72] (genuine 4-D fMRI, nibabel, MIT)",
        lambda: _crop("mr_fmri_example4d_nibabel", slice(None), slice(8, 12), slice(30, 62),
                      slice(40, 72)),
        {}),
    "mr_heart_6x40x40_u1_sparse": (
        "mr_heart_8bit_16frame_amijs [0:6, 0:40, 0:40] (genuine MR, ami.js, Apache-2.0); "
        "30 distinct values in 0..116 -> value table",
        lambda: _crop("mr_heart_8bit_16frame_amijs", slice(0, 6), slice(0, 40), slice(0, 40)),
        {}),
    "mr_colin_6x40x40_i1": (
        "derived_mr_colin27_ch2_mricron [80:86, 90:130, 70:110] (MR template, mricron-data, "
        "BSD-3) as int16 minus 128, stored as int8",
        lambda: (_crop("derived_mr_colin27_ch2_mricron", slice(80, 86), slice(90, 130),
                       slice(70, 110)).astype(np.int16) - 128).astype(np.int8),
        {}),
    "mr_dwi_b0_4x40x40_be_u2": (
        "mr_dwi_b0_dipy_S0_10slices [3:7, 44:84, 44:84] (genuine MR, dipy, BSD-3) as "
        "big-endian uint16 ('>u2')",
        lambda: _crop("mr_dwi_b0_dipy_S0_10slices", slice(3, 7), slice(44, 84),
                      slice(44, 84)).astype(">u2"),
        {}),
}


def source_sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


# The row LSTM (level 4, or level 5 with model="medzip-lstm"; streams of medzip <= 0.1's default)
# and medzip-blend v1 (the default: levels 5 and 9), on three of the crops above.
LSTM_CASES = {name: CASES[name] for name in
              ("ct_nema_2x64x64_u2", "mr_fmri4d_2x4x32x32_i2", "mr_dwi_b0_4x40x40_be_u2")}
# The published MedZip configuration (slow: ~2 k voxels/s): two tiny crops, CT and MR.
PAPER_CASES = {
    "ct_nema_2x12x12_u2": (
        "ct_nema_enhanced_2frame [:, 220:232, 220:232] (genuine CT, pydicom-data, MIT)",
        lambda: _crop("ct_nema_enhanced_2frame", slice(None), slice(220, 232), slice(220, 232)),
        {}),
    "mr_dwi_b0_3x12x12_u2": (
        "mr_dwi_b0_dipy_S0_10slices [3:6, 50:62, 50:62] (genuine MR, dipy, BSD-3)",
        lambda: _crop("mr_dwi_b0_dipy_S0_10slices", slice(3, 6), slice(50, 62), slice(50, 62)),
        {}),
}
# medzip-blend with its own network (medzip-blend-lstm): the blend set's crops again (the 4-D
# fMRI crop now coded with its previous volume: version 2), a longer series cut in two slabs
# (two decoding stacks of six volumes), masked crops (padding mask, version 2) and the searched
# level.
BLEND2_CASES = {
    **LSTM_CASES,
    "mr_fmri4d_6x6x10x10_i2": (
        "mr_fmri_nitime_fmri1 [0:6, 0:6] (genuine 4-D fMRI, nitime, BSD-3); chunks of 3 slices: "
        "two stacks of six volumes",
        lambda: _crop("mr_fmri_nitime_fmri1", slice(0, 6), slice(0, 6)),
        {"chunk_slices": 3}),
    "mr_epi_masked_10x64x64_i2": (
        "mr_epi_fslpy_example_func [0:10] (genuine masked EPI, fslpy, Apache-2.0): 2693 pixels are "
        "0 in every slice -> padding mask (version 2)",
        lambda: _crop("mr_epi_fslpy_example_func", slice(0, 10)),
        {}),
    "mr_fmri4d_masked_2x4x40x48_i2": (
        "mr_fmri_example4d_nibabel [:, 10:14, 0:40, 0:48] (genuine 4-D fMRI, nibabel, MIT): "
        "previous volume as context and a padding mask",
        lambda: _crop("mr_fmri_example4d_nibabel", slice(None), slice(10, 14), slice(0, 40),
                      slice(0, 48)),
        {}),
    "mr_fmri4d_6x6x10x10_i2_level9": (
        "the same crop at level 9 (search over encoder options)",
        lambda: _crop("mr_fmri_nitime_fmri1", slice(0, 6), slice(0, 6)),
        {"chunk_slices": 3, "level": 9}),
}
# medzip-blend v3 (wide class sets where they pay; the blend2 crops are still coded as there):
# a cine MR crop, smooth data where they pay.
BLEND3_CASES = {
    "mr_heart_10x64x64_u1": (
        "mr_heart_8bit_16frame_amijs [0:10, 40:104, 40:104] (genuine cine MR, ami.js, "
        "Apache-2.0): wide class sets (version 3)",
        lambda: _crop("mr_heart_8bit_16frame_amijs", slice(0, 10), slice(40, 104),
                      slice(40, 104)),
        {}),
}


def _zero_filled(name: str, *index) -> np.ndarray:
    """A crop of a real MR scan reconstructed 2x in-plane from zero-filled k-space, as a scanner's
    interpolation option does (benchmarks/interpolated.py, ``magnitude`` mode)."""
    sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))
    from interpolated import zero_filled

    crop = _crop(name, *index).astype(np.int64)
    return zero_filled(crop - crop.min())


BLEND4_CASES = {
    "mr_dwi_b0_zerofilled_6x64x64_u2": (
        "mr_dwi_b0_dipy_S0_10slices [2:8, 32:64, 32:64] (genuine MR, dipy, BSD-3) minus its "
        "minimum, reconstructed 2x in-plane from zero-filled k-space: long class sets "
        "(version 4)",
        lambda: _zero_filled("mr_dwi_b0_dipy_S0_10slices", slice(2, 8), slice(32, 64),
                             slice(32, 64)),
        {}),
}


def _slice_interpolated(name: str, *index) -> np.ndarray:
    """A crop of a real scan reconstructed with twice the slices from zero-filled kz, as 3-D MR
    with slice interpolation (benchmarks/slice_interpolation.py, ``magnitude`` mode)."""
    sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))
    from slice_interpolation import zero_filled_z

    crop = _crop(name, *index).astype(np.int64)
    return zero_filled_z(crop - crop.min(), 2.0, "magnitude")


BLEND4_DEEP_CASES = {
    "mr_trio_zfilled_z_32x64x64_u2": (
        "mr_epi_trio_axasc35_heudiconv [4:20] (genuine MR, heudiconv test data, Apache-2.0) "
        "minus its minimum, reconstructed with twice the slices from zero-filled kz: deep "
        "class sets (version 4, flag 32)",
        lambda: _slice_interpolated("mr_epi_trio_axasc35_heudiconv", slice(4, 20)),
        {}),
}


def _fov_padded(name: str, pad_value: int, *index) -> np.ndarray:
    """A crop of a real CT with the pixels outside the inscribed circle set to ``pad_value``:
    what scanners that pad the field of view with -2000 or -3024 HU store (air stays at its
    clip floor inside)."""
    sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))
    from fov_padding import padded

    return padded(_crop(name, *index), pad_value)


BLEND5_CASES = {
    "ct_head_fov_pad2000_32x64x64_i2": (
        "ct_head_invesalius_cranium [30:62, ::4, ::4] (genuine CT, invesalius, GPL-2) with the "
        "pixels outside the inscribed circle set to -2000 HU: padding mask and the field of "
        "view's floor -1024 (version 5, flag 64)",
        lambda: _fov_padded("ct_head_invesalius_cranium", -2000, slice(30, 62),
                            slice(None, None, 4), slice(None, None, 4)),
        {}),
    # the blend4deep crop as the stop-14 encoder codes it: deep class sets and, since masks of
    # up to 0.25 bit per covered voxel are sent, a padding mask (version 4, flags 2 + 4 + 32)
    "mr_trio_zfilled_z_32x64x64_u2": BLEND4_DEEP_CASES["mr_trio_zfilled_z_32x64x64_u2"][:2]
    + ({},),
}
# Every input of the blend2-blend5 sets as the stop-15 encoder codes it: version 6 (fixed-rule
# in-slice experts) where it uses them, earlier versions elsewhere (a series coded with its
# previous volume, 10 x 10 slices, deep class sets); the encoder ALARM of all of them lives here.
BLEND6_CASES = {**BLEND2_CASES, **BLEND3_CASES, **BLEND4_CASES, **BLEND5_CASES}
# Every input whose stream the stop-16 encoder changes - the in-slice set wherever it pays
# (blend.IN_SLICE_PAYS_PERCENT), the sets fitted with the masked voxels at the field of view's
# floor, and version 7 (a padding mask whose pixels hold a value above the floor) - plus one
# slice coded with the in-slice set and a CT crop zero-filled in HU outside its field of view
# (version 7). Their encoder ALARM lives here; the other blend6 files keep theirs.
BLEND7_CASES = {
    "mr_heart_10x64x64_u1": BLEND3_CASES["mr_heart_10x64x64_u1"][:2] + ({},),
    "ct_nema_2x64x64_u2": BLEND2_CASES["ct_nema_2x64x64_u2"][:2]
    + (BLEND2_CASES["ct_nema_2x64x64_u2"][2],),
    "ct_head_fov_pad2000_32x64x64_i2": BLEND5_CASES["ct_head_fov_pad2000_32x64x64_i2"][:2]
    + ({},),
    "ct_head_fov_pad0_32x64x64_i2": (
        "ct_head_invesalius_cranium [30:62, ::4, ::4] (genuine CT, invesalius, GPL-2) with the "
        "pixels outside the inscribed circle set to 0 HU (air clipped at -1024 inside): a "
        "padding mask with its value (version 7, flags 2 + 128)",
        lambda: _fov_padded("ct_head_invesalius_cranium", 0, slice(30, 62),
                            slice(None, None, 4), slice(None, None, 4)),
        {}),
    "mr_colin_1x217x181_u1": (
        "derived_mr_colin27_ch2_mricron [90:91] (MR template, mricron-data, BSD-3): one slice, "
        "coded with the in-slice set as it pays there (version 6, flag 16)",
        lambda: _crop("derived_mr_colin27_ch2_mricron", slice(90, 91)),
        {}),
}
# Every input whose stream the stop-17 encoder changes - version 8, the padding mask by rows
# where that is smaller than the packed bits (discs of a field of view, the masked EPI corner) -
# plus one CT slice padded outside its field of view at full resolution (a PACS instance). Their
# encoder ALARM lives here; the other blend6 / blend7 files keep theirs.
BLEND8_CASES = {
    "mr_epi_masked_10x64x64_i2": BLEND2_CASES["mr_epi_masked_10x64x64_i2"],
    "ct_head_fov_pad2000_32x64x64_i2": BLEND7_CASES["ct_head_fov_pad2000_32x64x64_i2"],
    "ct_head_fov_pad0_32x64x64_i2": BLEND7_CASES["ct_head_fov_pad0_32x64x64_i2"],
    "mr_colin_1x217x181_u1": BLEND7_CASES["mr_colin_1x217x181_u1"],
    "ct_head_fov_pad3024_1x256x256_i2": (
        "ct_head_invesalius_cranium [45:46] (genuine CT, invesalius, GPL-2), one slice at full "
        "resolution with the pixels outside the inscribed circle set to -3024 HU: the disc "
        "mask by rows (version 8) and the field of view's floor",
        lambda: _fov_padded("ct_head_invesalius_cranium", -3024, slice(45, 46)),
        {}),
}
# Every input of blend6-blend8 as the stop-17 encoder codes it with the retrained network
# (medzip-blend-lstm cb773e6f0523: 24 units, trained with single slices and thinned volumes
# too): the network runs on every stream, so every encoder ALARM moves here and blend6-blend8
# become decode tests (their files name the earlier network, shipped as
# medzip-blend-lstm@d717b647d9c3.npz).
BLEND9_CASES = {**BLEND6_CASES, **BLEND7_CASES, **BLEND8_CASES}
# Format 2.0 (compressed header) and 1.2's fallback codecs, made once by the writer that
# introduced them; their decode test is tests/test_golden_format2.py.
FORMAT2_CASES = {
    "labels_ct_nema_2x64x64_u1": (
        "ct_nema_enhanced_2frame [:, 200:264, 200:264] cut into 4 labels by value (a label map "
        "from genuine CT, pydicom-data, MIT): takes the zstd/xz fallback",
        lambda: np.digitize(_crop("ct_nema_enhanced_2frame", slice(None), slice(200, 264),
                                  slice(200, 264)), [100, 900, 1100]).astype(np.uint8) * 60,
        {}),
    "mr_dwi4d_65x3x10x10_i2": (
        "mr_dwi_dipy_small_64D [:, 3:6] (genuine 4-D DWI, dipy, BSD-3): 65 chunk entries, "
        "coded predictively (fallback off), in a compressed header",
        lambda: _crop("mr_dwi_dipy_small_64D", slice(None), slice(3, 6)),
        {"fallback": False}),
    "mr_dwi4d_65x3x10x10_i2_xz": (
        "the same crop with the fallback on: xz is smaller",
        lambda: _crop("mr_dwi_dipy_small_64D", slice(None), slice(3, 6)),
        {}),
}
# A whole file stored (format 2.0 stored-file form): a tiny NRRD whose header is most of it.
FORMAT2_FILES = {
    "tiny_labels.nrrd": (
        "2x8x8 label NRRD written here (header + 128 voxel bytes): stored whole",
        lambda: (b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 8 8 2\nencoding: raw\n"
                 b"# a comment that makes the header most of the file\n\n"
                 + bytes((i // 16 + i % 3) % 4 * 60 for i in range(128)))),
}
SETS = {"ls3d": (HERE, CASES, {"model": "ls3d"}),
        "format2": (HERE / "format2", FORMAT2_CASES, {"model": "ls3d"}),
        "lstm": (HERE / "lstm", LSTM_CASES, {"level": 5, "model": "medzip-lstm"}),
        "paper": (HERE / "paper", PAPER_CASES, {"model": "medzip-paper"}),
        "blend": (HERE / "blend", LSTM_CASES, {"level": 5}),
        "blend2": (HERE / "blend2", BLEND2_CASES, {"level": 5, "fallback": False}),
        "blend3": (HERE / "blend3", BLEND3_CASES, {"level": 5, "fallback": False}),
        "blend4": (HERE / "blend4", BLEND4_CASES, {"level": 5, "fallback": False}),
        "blend4deep": (HERE / "blend4deep", BLEND4_DEEP_CASES, {"level": 5, "fallback": False}),
        "blend5": (HERE / "blend5", BLEND5_CASES, {"level": 5, "fallback": False}),
        "blend6": (HERE / "blend6", BLEND6_CASES, {"level": 5, "fallback": False}),
        "blend7": (HERE / "blend7", BLEND7_CASES, {"level": 5, "fallback": False}),
        "blend8": (HERE / "blend8", BLEND8_CASES, {"level": 5, "fallback": False}),
        "blend9": (HERE / "blend9", BLEND9_CASES, {"level": 5, "fallback": False})}
# Sets whose files are tagged with the model version that wrote them.
MODEL_SETS = {"lstm": "medzip-lstm", "paper": "medzip-paper"}


def _stored_files(out_dir: Path) -> dict:
    import tempfile

    from medzip import files

    entries = {}
    for name, (source, build) in FORMAT2_FILES.items():
        raw = build()
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / name
            src.write_bytes(raw)
            data = files.encode_file(src, level=1, workers=1)
        info = medzip.inspect(data)
        assert info["source"] == {"format": "stored"}, name
        (out_dir / f"{name}.mzp").write_bytes(data)
        entries[name] = {"file": f"{name}.mzp", "source": source, "size": len(raw),
                         "sha256": hashlib.sha256(raw).hexdigest(),
                         "mzp_sha256": hashlib.sha256(data).hexdigest(), "mzp_bytes": len(data),
                         "format_version": info["format_version"]}
        print(f"{name}: {len(raw)} bytes stored -> {len(data)} bytes")
    return entries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="overwrite existing golden files")
    ap.add_argument("--set", choices=sorted(SETS), default="ls3d")
    args = ap.parse_args()
    out_dir, cases, base_kwargs = SETS[args.set]
    out_dir.mkdir(exist_ok=True)
    if args.set in ("lstm", "blend", "blend2", "blend6", "blend9"):  # one at the searched level too
        name = "mr_dwi_b0_4x40x40_be_u2"
        cases = {**cases, name + "_level9": (cases[name][0], cases[name][1], {"level": 9})}
    manifest_path = out_dir / "manifest.json"
    entries = {}
    if args.set in MODEL_SETS:
        # One generation per model version: files of earlier models stay, so every shipped
        # model keeps a decode test; names carry the model's SHA-256 prefix.
        from medzip.predictors.models import builtin_model
        tag = builtin_model(MODEL_SETS[args.set]).sha256[:12]
        if manifest_path.exists():
            entries = json.loads(manifest_path.read_text())["volumes"]
        cases = {f"{name}@{tag}": case for name, case in cases.items()}
        if any(name in entries for name in cases) and not args.force:
            print(f"golden files for model {tag} exist; use --force to remake them", file=sys.stderr)
            return 1
    elif manifest_path.exists() and not args.force:
        print(f"{manifest_path} exists; golden files are made once. Use --force to remake them "
              "(only after an intentional encoder or format change).", file=sys.stderr)
        return 1
    if not SHARED.is_dir():
        print(f"shared data not found at {SHARED}", file=sys.stderr)
        return 1
    for name, (source, build, kwargs) in cases.items():
        arr = build()
        kwargs = {**base_kwargs, **kwargs}
        data = medzip.compress(arr, **kwargs)
        back = medzip.decompress(data)
        assert np.array_equal(back, arr) and back.dtype == arr.dtype, name
        (out_dir / f"{name}.mzp").write_bytes(data)
        entries[name] = {
            "file": f"{name}.mzp", "source": source, "shape": list(arr.shape),
            "dtype": arr.dtype.str, "sha256": source_sha256(arr),
            "compress_kwargs": kwargs, "model": medzip.inspect(data)["volumes"][0]["model"],
            "model_sha256": medzip.inspect(data)["volumes"][0]["model_sha256"],
            "mzp_sha256": hashlib.sha256(data).hexdigest(), "mzp_bytes": len(data),
            "format_version": medzip.inspect(data)["format_version"],
            "codec": medzip.inspect(data)["volumes"][0]["codec"],
            "model_version": Container.parse(data).header["volumes"][0]["model"].get("version"),
        }
        print(f"{name}: {arr.shape} {arr.dtype.str} -> {len(data)} bytes")
    manifest = {"writer": f"medzip {medzip.__version__}", "volumes": entries}
    if args.set == "format2":
        manifest["files"] = _stored_files(out_dir)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
