"""The ``medzip`` command line and the file helpers behind it.

Most tests call ``main()`` in-process (fast); stdin/stdout go through a real subprocess.
Level 1 keeps coding fast.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path as NIB_DATA

import medzip
from medzip import api, cli, files
from medzip.errors import CorruptStreamError

NII = Path(NIB_DATA) / "functional.nii"          # 43 KB, int16 4-D
NII_GZ = Path(NIB_DATA) / "example_nifti2.nii.gz"  # NIfTI-2, gzip


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, *needles) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("medzip: ") and "Traceback" not in err
    for n in needles:
        assert str(n) in lines[0], lines[0]
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "medzip-tmp" in p.name)


@pytest.fixture
def nii(tmp_path) -> Path:
    return Path(shutil.copy(NII, tmp_path / NII.name))


@pytest.fixture
def niigz(tmp_path) -> Path:
    return Path(shutil.copy(NII_GZ, tmp_path / NII_GZ.name))


def medzip_proc(*argv, stdin=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "medzip.cli", *map(str, argv)], input=stdin,
                          capture_output=True, cwd=cwd, timeout=120)


# ---- round trips ------------------------------------------------------------------------------

def test_compress_decompress_roundtrip_keeps_input(capsys, nii, niigz):
    before = {p: sha(p) for p in (nii, niigz)}
    rc, _, err = run(capsys, "compress", "-1", "-T", "1", nii, niigz)
    assert rc == 0, err
    for p, digest in before.items():
        archive = p.with_name(p.name + ".mzp")
        assert archive.is_file() and sha(p) == digest  # input kept by default
        p.unlink()
        rc, _, err = run(capsys, "-d", archive)
        assert rc == 0, err
        assert sha(p) == digest and archive.exists()


def test_output_option_shortcuts_and_levels(capsys, nii, tmp_path):
    rc, _, err = run(capsys, nii, "-o", tmp_path / "a.mzp", "--level", "fast", "-q")
    assert rc == 0 and err == ""
    rc, _, _ = run(capsys, "decompress", tmp_path / "a.mzp", "-o", tmp_path / "b.nii")
    assert rc == 0 and sha(tmp_path / "b.nii") == sha(nii)
    info = json.loads(run(capsys, "info", "--json", tmp_path / "a.mzp")[1])
    assert info["source"]["format"] == "nifti" and info["bits_per_voxel"] > 0
    assert info["volumes"][0]["model"] == "ls3d"


def test_npy_fortran_big_endian_through_cli(capsys, tmp_path):
    arr = np.asfortranarray(np.arange(4 * 5 * 6, dtype=">u2").reshape(4, 5, 6) * 7)
    src = tmp_path / "f.npy"
    np.save(src, arr)
    digest = sha(src)
    assert run(capsys, "compress", "-1", src)[0] == 0
    src.unlink()
    assert run(capsys, "decompress", tmp_path / "f.npy.mzp")[0] == 0
    assert sha(src) == digest and np.load(src).flags.f_contiguous


def test_array_archive_restores_as_npy(capsys, tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "arr.mzp").write_bytes(medzip.compress(arr, level=1))
    assert run(capsys, "-d", tmp_path / "arr.mzp")[0] == 0
    np.testing.assert_array_equal(np.load(tmp_path / "arr.npy"), arr)


# ---- info / test / demo -----------------------------------------------------------------------

def test_info_and_test(capsys, nii):
    run(capsys, "compress", "-1", nii)
    archive = nii.with_name(nii.name + ".mzp")
    rc, out, _ = run(capsys, "info", archive)
    assert rc == 0
    for needle in ("bits/voxel", "ratio", "model ls3d", "nifti_header", "NIfTI-1"):
        assert needle in out
    rc, _, err = run(capsys, "test", archive)
    assert rc == 0 and "OK" in err
    rc, _, err = run(capsys, "-t", archive, "-q")
    assert rc == 0 and err == ""


def test_demo_reports_and_beats_gzip(capsys):
    rc, out, err = run(capsys, "demo", "-1", "-T", "1", "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["verified"] and Path(report["file"]) == files.demo_sample_path()
    bpv = {r["method"]: r["bits_per_voxel"] for r in report["results"]}
    assert bpv["medzip"] < bpv["gzip -6"] and set(bpv) == {"medzip", "gzip -6", "zstd -19"}
    rc, out, _ = run(capsys, "demo", "-1", "-T", "1")
    assert rc == 0 and "bits/voxel" in out and "zstd -19" in out and "verified" in out


def test_bundled_sample_is_the_dipy_file():
    path = files.demo_sample_path()
    assert sha(path) == "b77985d533c8b0b2f4a7d276e6b0d8388df9966b5c9d67be7c1cbd4178285e14"
    assert "BSD-3-Clause" in (path.parent / "README.md").read_text()


# ---- errors: one line, exit 1, nothing left behind --------------------------------------------

def test_missing_file(capsys, tmp_path):
    rc, _, err = run(capsys, "compress", tmp_path / "nope.nii")
    assert rc == 1
    one_error_line(err, "nope.nii")


def test_float_nifti_refused(capsys, tmp_path):
    src = tmp_path / "float.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), src)
    rc, _, err = run(capsys, "compress", src)
    assert rc == 1
    one_error_line(err, "float.nii", "float32")
    assert not (tmp_path / "float.nii.mzp").exists() and leftovers(tmp_path) == []


def test_not_a_medzip_file(capsys, nii):
    for cmd in ("test", "info", "decompress"):
        rc, _, err = run(capsys, cmd, nii)
        assert rc == 1
        one_error_line(err, nii.name, "not a medzip file")


def test_truncated_and_corrupted_archives(capsys, nii, tmp_path):
    run(capsys, "compress", "-1", nii)
    data = nii.with_name(nii.name + ".mzp").read_bytes()
    cut = tmp_path / "cut.nii.mzp"
    cut.write_bytes(data[: len(data) * 2 // 3])
    rc, _, err = run(capsys, "test", cut)
    assert rc == 1
    one_error_line(err, "cut.nii.mzp", "truncated")
    flipped = bytearray(data)
    flipped[-10] ^= 0x40
    bad = tmp_path / "bad.nii.mzp"
    bad.write_bytes(bytes(flipped))
    rc, _, err = run(capsys, "test", bad)
    assert rc == 1
    one_error_line(err, "bad.nii.mzp", "corrupted")
    # decompressing either leaves no output and no temp files
    for archive in (cut, bad):
        rc, _, err = run(capsys, "decompress", archive, "-o", tmp_path / "out.nii")
        assert rc == 1
        one_error_line(err, archive.name)
    assert not (tmp_path / "out.nii").exists() and leftovers(tmp_path) == []


def test_refuses_to_overwrite_without_force(capsys, nii):
    run(capsys, "compress", "-1", nii)
    archive = nii.with_name(nii.name + ".mzp")
    stamp = sha(archive)
    archive.write_bytes(b"precious")  # must survive a refused compress
    rc, _, err = run(capsys, "compress", "-1", nii)
    assert rc == 1
    one_error_line(err, archive.name, "already exists")
    assert archive.read_bytes() == b"precious"
    assert run(capsys, "compress", "-1", "-f", nii)[0] == 0 and sha(archive) == stamp
    original = sha(nii)
    nii.write_bytes(b"edited")  # decompress must not clobber it either
    rc, _, err = run(capsys, "decompress", archive)
    assert rc == 1 and nii.read_bytes() == b"edited"
    one_error_line(err, nii.name, "already exists")
    assert run(capsys, "decompress", "-f", archive)[0] == 0 and sha(nii) == original


def test_partial_batch_failure(capsys, nii, tmp_path):
    rc, _, err = run(capsys, "compress", "-1", tmp_path / "missing.nii", nii)
    assert rc == 1 and "missing.nii" in err
    assert nii.with_name(nii.name + ".mzp").exists()


def test_usage_errors_exit_2(capsys, nii, tmp_path):
    assert run(capsys, "compress", "--bogus", nii)[0] == 2
    assert run(capsys, "compress", "--level", "turbo", nii)[0] == 2
    assert run(capsys, "compress", "-T", "-3", nii)[0] == 2
    assert run(capsys, "compress", nii, nii, "-o", tmp_path / "x.mzp")[0] == 2
    assert run(capsys)[0] == 2
    assert run(capsys, "--help")[0] == 0


# ---- --rm -------------------------------------------------------------------------------------

def test_rm_deletes_input_after_verified_write(capsys, nii):
    digest = sha(nii)
    assert run(capsys, "compress", "-1", "--rm", nii)[0] == 0
    assert not nii.exists()
    archive = nii.with_name(nii.name + ".mzp")
    assert run(capsys, "decompress", "--rm", archive)[0] == 0
    assert sha(nii) == digest and not archive.exists()


def test_rm_keeps_input_when_verification_fails(capsys, nii, monkeypatch):
    real = api.decompress_payload

    def tampered(data, **kw):  # decoder returns wrong voxels: verification must catch it
        payload = real(data, **kw)
        payload.volumes[0] = payload.volumes[0].copy()
        payload.volumes[0].flat[0] += 1
        return payload

    monkeypatch.setattr(files.api, "decompress_payload", tampered)
    rc, _, err = run(capsys, "compress", "-1", "--rm", nii)
    assert rc == 1
    one_error_line(err, "verification failed")
    assert nii.exists() and not nii.with_name(nii.name + ".mzp").exists()
    assert leftovers(nii.parent) == []


def test_keep_is_default_and_last_flag_wins(capsys, nii):
    assert run(capsys, "compress", "-1", "--rm", "-k", nii)[0] == 0
    assert nii.exists()


# ---- interrupts -------------------------------------------------------------------------------

def test_interrupt_leaves_no_partial_output(capsys, nii, monkeypatch):
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "_verify_archive", interrupted)  # while the temp file exists
    rc, _, err = run(capsys, "compress", "-1", "--verify", nii)
    assert rc == 130 and "interrupted" in err
    assert not nii.with_name(nii.name + ".mzp").exists() and leftovers(nii.parent) == []
    monkeypatch.undo()
    run(capsys, "compress", "-1", nii)
    nii.unlink()
    monkeypatch.setattr(api.Archive, "payload", interrupted)  # while decoding
    rc, _, _ = run(capsys, "decompress", nii.with_name(nii.name + ".mzp"))
    assert rc == 130 and not nii.exists() and leftovers(nii.parent) == []


# ---- stdin / stdout ---------------------------------------------------------------------------

def test_stdin_stdout_roundtrip_subprocess(tmp_path):
    for src in (NII, NII_GZ):
        comp = medzip_proc("compress", "-1", "-T", "1", "-", stdin=src.read_bytes())
        assert comp.returncode == 0, comp.stderr
        assert comp.stdout.startswith(b"\x89MZP")
        dec = medzip_proc("-d", "-T", "1", stdin=comp.stdout)
        assert dec.returncode == 0, dec.stderr
        assert dec.stdout == src.read_bytes()  # .nii.gz byte-identical (zlib level found)
        (tmp_path / "s.mzp").write_bytes(comp.stdout)
        dc = medzip_proc("-dc", tmp_path / "s.mzp")
        assert dc.returncode == 0 and dc.stdout == src.read_bytes()


def test_stdin_errors_subprocess():
    bad = medzip_proc("-d", stdin=b"definitely not medzip")
    assert bad.returncode == 1 and bad.stdout == b""
    line = bad.stderr.decode().strip()
    assert line.startswith("medzip: <stdin>:") and "\n" not in line
    bad = medzip_proc("compress", stdin=b"nor an image")
    assert bad.returncode == 1 and bad.stdout == b"" and "<stdin>" in bad.stderr.decode()


def test_refuses_binary_to_terminal(capsys, nii, monkeypatch):
    class Tty:
        buffer = None

        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    rc = cli.main(["compress", "-1", "-c", str(nii)])
    err = capsys.readouterr().err
    assert rc == 1
    one_error_line(err, "terminal")


# ---- subcommands contributed by other modules -------------------------------------------------

def test_extension_modules_register_subcommands(capsys, monkeypatch):
    mod = types.ModuleType("medzip_test_ext")

    def register(sub):
        p = sub.add_parser("hello", help="test subcommand")
        p.add_argument("--code", type=int, default=0)
        p.set_defaults(func=lambda args: args.code)

    mod.register = register
    monkeypatch.setitem(sys.modules, "medzip_test_ext", mod)
    monkeypatch.setattr(cli, "EXTENSION_MODULES", ("medzip_test_ext", "medzip_test_absent_module"))
    assert cli.main(["hello", "--code", "7"]) == 7
    assert "hello" in cli.build_parser().format_help()


# ---- Python helpers ---------------------------------------------------------------------------

def test_files_api_and_error_names(tmp_path, nii):
    out = files.compress_file(nii, level=1, workers=1, verify=True)
    assert out == nii.with_name(nii.name + ".mzp")
    assert files.test_file(out, workers=1)["ok"]
    info = files.info_file(out)
    assert info["details"] and info["compressed_bytes"] == out.stat().st_size
    written = files.decompress_file(out, tmp_path / "r.nii", workers=1)
    assert written == [tmp_path / "r.nii"] and sha(written[0]) == sha(nii)
    with pytest.raises(medzip.MedzipError, match="r.nii.*already exists"):
        files.decompress_file(out, tmp_path / "r.nii")
    (tmp_path / "junk.mzp").write_bytes(b"\x89MZP\r\n\x1a\n" + b"\0" * 4)
    with pytest.raises(CorruptStreamError, match="junk.mzp"):
        files.test_file(tmp_path / "junk.mzp")
    with pytest.raises(medzip.MedzipError, match="same|overwrite the input"):
        files.compress_file(nii, nii, force=True)
    assert files.resolve_workers(0) >= 1 and files.resolve_workers(3) == 3
    assert os.access(out, os.R_OK)
