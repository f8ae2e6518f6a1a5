"""File-level hardening (issue 9): changing inputs, special and archive-named outputs, signals,
stale staging files, permission bits and times, --rm on detached data, messages, -o DIR.

Small arrays at level 1 keep every test fast; forged archives get a valid header CRC
(conftest.Stream) so they reach the checks under test rather than the CRC check.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import Stream, _pydicom_test_file, demo_volume
from medzip import cli, files
from medzip.errors import MedzipError

VOL = (np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16) * 3 + 100)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if "medzip-tmp" in p.name)


@pytest.fixture
def npy(tmp_path) -> Path:
    path = tmp_path / "scan.npy"
    np.save(path, VOL)
    return path


def _nhdr(folder: Path, stem: str = "scan") -> Path:
    """A detached NRRD: ``stem.nhdr`` + ``stem.raw``."""
    (folder / f"{stem}.raw").write_bytes(VOL.astype("<u2").tobytes())
    header = folder / f"{stem}.nhdr"
    header.write_bytes(b"NRRD0004\ntype: uint16\ndimension: 3\nsizes: 16 16 4\nendian: little\n"
                       b"encoding: raw\ndata file: %s.raw\n\n" % stem.encode())
    return header


def _mhd(folder: Path) -> Path:
    (folder / "scan.raw").write_bytes(VOL.astype("<u2").tobytes())
    header = folder / "scan.mhd"
    header.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 16 16 4\n"
                       b"ElementType = MET_USHORT\nElementDataFile = scan.raw\n")
    return header


def _forge(archive: Path, edit) -> None:
    s = Stream.parse(archive.read_bytes())
    edit(s.header)
    archive.write_bytes(s.build())


def _dicom_folder(folder: Path, n: int) -> Path:
    src = _pydicom_test_file("CT_small.dcm")
    if src is None:
        pytest.skip("pydicom test file CT_small.dcm not available")
    folder.mkdir()
    for i in range(n):
        shutil.copy(src, folder / f"IM{i:03d}.dcm")
    return folder


# ---- item 3: an input that changes while it is compressed -------------------------------------

@pytest.mark.parametrize("verify", [False, True])
def test_input_changed_during_compression_is_refused(capsys, npy, monkeypatch, verify):
    old = time.time_ns() - 3600 * 10**9
    os.utime(npy, ns=(old, old))  # settled file: the stat check, not the hash, must catch it
    real = files.api.compress_payload

    def then_edited(payload, **kw):
        data = real(payload, **kw)
        blob = bytearray(npy.read_bytes())
        blob[-1] ^= 0xFF  # same size, other content: a scanner still writing, an editor saving
        npy.write_bytes(bytes(blob))
        return data

    monkeypatch.setattr(files.api, "compress_payload", then_edited)
    rc, _, err = run(capsys, "compress", "-1", "-T", "1", *(["--verify"] if verify else []), npy)
    assert rc == 1 and "changed while it was being compressed" in err, err
    assert err.startswith(f"medzip: {npy}: changed") and ".mzp" not in err, err
    assert not npy.with_name("scan.npy.mzp").exists() and leftovers(npy.parent) == []


def test_recently_written_input_is_checked_by_content(npy, monkeypatch):
    # Written a moment ago: times cannot prove it unchanged, so the content is compared; the
    # edit below restores the old times as a copy tool would.
    real = files.api.compress_payload

    def then_edited(payload, **kw):
        data = real(payload, **kw)
        st = os.stat(npy)
        blob = bytearray(npy.read_bytes())
        blob[-2] ^= 0x01
        npy.write_bytes(bytes(blob))
        os.utime(npy, ns=(st.st_atime_ns, st.st_mtime_ns))
        return data

    monkeypatch.setattr(files.api, "compress_payload", then_edited)
    with pytest.raises(MedzipError, match="changed while"):
        files.compress_file(npy, level=1, workers=1)
    with pytest.raises(MedzipError, match="changed while"):
        files.encode_file(npy, level=1, workers=1)  # the -c (stdout) path


# ---- item 6: -f never replaces special files --------------------------------------------------

def test_force_never_replaces_a_fifo_or_link(capsys, npy, tmp_path):
    assert run(capsys, "compress", "-1", "-T", "1", npy)[0] == 0
    archive = npy.with_name("scan.npy.mzp")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    for target in (fifo, link):
        for argv in (("decompress", archive), ("compress", npy)):
            rc, _, err = run(capsys, *argv, "-1" if argv[0] == "compress" else "-q", "-T", "1",
                             "-f", "-o", target)
            assert rc == 1 and "not a regular file" in err, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.path.islink(link)
    assert leftovers(tmp_path) == []


# ---- item 7: names from the archive -----------------------------------------------------------

@pytest.mark.parametrize("name", [".bashrc", "sub/deep/x", "../x.raw", "/tmp/x.raw", "a\0b",
                                  "scan.nhdr"])
def test_forged_data_file_name_writes_nothing(capsys, tmp_path, name):
    src = _nhdr(tmp_path)
    assert run(capsys, "compress", "-1", "-T", "1", src)[0] == 0
    archive = tmp_path / "scan.nhdr.mzp"
    _forge(archive, lambda h: h["source"]["data_file"].update(name=name))
    out = tmp_path / "out"
    out.mkdir()
    before = sorted(p.name for p in out.iterdir())
    rc, _, err = run(capsys, "decompress", "-f", archive, "-o", out / "scan.nhdr")
    assert rc == 1 and ("unsafe" in err or "header's name" in err), err
    assert sorted(p.name for p in out.iterdir()) == before and not (tmp_path / "x.raw").exists()
    rc, _, err = run(capsys, "test", archive)
    assert rc == 1, err


def test_force_never_overwrites_a_file_the_archive_names(capsys, tmp_path):
    src = _nhdr(tmp_path)
    assert run(capsys, "compress", "-1", "-T", "1", src)[0] == 0
    archive = tmp_path / "scan.nhdr.mzp"
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_bytes(b"precious")
    _forge(archive, lambda h: h["source"]["data_file"].update(name="notes.txt"))
    rc, _, err = run(capsys, "decompress", "-f", archive, "-o", out / "scan.nhdr")
    assert rc == 1 and "notes.txt" in err and "not named after" in err, err
    assert (out / "notes.txt").read_bytes() == b"precious" and not (out / "scan.nhdr").exists()


def test_data_file_named_after_the_output_is_replaced_with_force(capsys, tmp_path):
    src = _nhdr(tmp_path)
    digest = sha(tmp_path / "scan.raw")
    assert run(capsys, "compress", "-1", "-T", "1", src)[0] == 0
    (tmp_path / "scan.raw").write_bytes(b"stale")
    src.unlink()
    rc, _, err = run(capsys, "decompress", tmp_path / "scan.nhdr.mzp")
    assert rc == 1 and "scan.raw" in err and "already exists" in err
    assert run(capsys, "decompress", "-f", tmp_path / "scan.nhdr.mzp")[0] == 0
    assert sha(tmp_path / "scan.raw") == digest


def test_forged_original_name_is_checked(capsys, tmp_path):
    src = _nhdr(tmp_path)
    assert run(capsys, "compress", "-1", "-T", "1", src)[0] == 0
    archive = tmp_path / "noext"  # no .mzp suffix: the output name comes from the archive
    shutil.move(tmp_path / "scan.nhdr.mzp", archive)
    _forge(archive, lambda h: h["source"].update(name=".profile"))
    rc, _, err = run(capsys, "decompress", "-f", archive)
    assert rc == 1 and "unsafe" in err and not (tmp_path / ".profile").exists()


@pytest.mark.parametrize("path", ["../evil.dcm", "a/../../evil.dcm", "/tmp/evil.dcm", "IM001.dcm",
                                  "IM001.dcm/x"])
def test_forged_dicom_member_paths_write_nothing(capsys, tmp_path, path):
    study = _dicom_folder(tmp_path / "study", 2)
    assert run(capsys, "compress", "-1", "-T", "1", study)[0] == 0
    archive = tmp_path / "study.mzp"

    def edit(h):
        h["source"]["files"][0]["path"] = path  # IM001.dcm: a duplicate; IM001.dcm/x: file + folder
    _forge(archive, edit)
    rc, _, err = run(capsys, "decompress", archive, "-o", tmp_path / "out")
    assert rc == 1 and "DICOM archive lists" in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.dcm").exists()
    assert leftovers(tmp_path) == []


# ---- item 8: SIGTERM behaves like Ctrl-C ------------------------------------------------------

@pytest.mark.parametrize("threads", ["1", "2"])
def test_sigterm_exits_143_and_leaves_nothing(tmp_path, threads):
    rng = np.random.default_rng(0)
    vol = (np.cumsum(rng.integers(-3, 4, (32, 128, 128)), axis=2) + 1000).astype(np.uint16)
    src = tmp_path / "big.npy"
    np.save(src, vol)
    proc = subprocess.Popen([sys.executable, "-m", "medzip.cli", "compress", "-1", "-T", threads,
                             "--verify", str(src)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90
        while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)  # the staged archive exists while it is verified
        assert leftovers(tmp_path), "the run ended before its archive was staged"
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err, err
    assert leftovers(tmp_path) == [] and not (tmp_path / "big.npy.mzp").exists()


# ---- item 9: staging files left by a killed run -----------------------------------------------

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_staging_files_of_dead_runs_are_removed(capsys, npy, tmp_path):
    host = files._HOST
    dead, alive = _dead_pid(), os.getppid()
    stale_file = tmp_path / f".scan.npy.mzp.{host}-{dead}.0a1b2c3d.medzip-tmp"
    stale_file.write_bytes(b"x" * 1000)
    live_file = tmp_path / f".scan.npy.mzp.{host}-{alive}.0a1b2c3d.medzip-tmp"
    live_file.write_bytes(b"busy")
    other_host = tmp_path / f".scan.npy.mzp.00000000-{dead}.0a1b2c3d.medzip-tmp"
    other_host.write_bytes(b"theirs")
    assert run(capsys, "compress", "-1", "-T", "1", npy)[0] == 0
    assert not stale_file.exists() and live_file.exists() and other_host.exists()
    npy.unlink()
    stale_dir = tmp_path / f".scan.npy.{host}-{dead}.k3j_x9q.medzip-tmp"
    (stale_dir / "scan.npy").mkdir(parents=True)
    assert run(capsys, "decompress", tmp_path / "scan.npy.mzp")[0] == 0
    assert not stale_dir.exists() and np.array_equal(np.load(npy), VOL)


# ---- item 10: permission bits and times -------------------------------------------------------

def test_mode_and_times_kept_on_archive_and_restore(capsys, npy, tmp_path):
    old_umask = os.umask(0o022)
    try:
        os.chmod(npy, 0o600)
        atime, mtime = 1_600_000_000_123_456_789, 1_650_000_000_987_654_321
        os.utime(npy, ns=(atime, mtime))
        assert run(capsys, "compress", "-1", "-T", "1", npy)[0] == 0
        archive = npy.with_name("scan.npy.mzp")
        st = os.stat(archive)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime_ns == mtime and st.st_atime_ns == atime
        out = tmp_path / "restored.npy"
        assert run(capsys, "decompress", archive, "-o", out)[0] == 0
        st = os.stat(out)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime_ns == mtime
    finally:
        os.umask(old_umask)


def test_folder_mode_and_times_kept(capsys, tmp_path):
    old_umask = os.umask(0o022)
    try:
        study = _dicom_folder(tmp_path / "study", 2)
        mtime = 1_650_000_000_000_000_000
        for p in study.iterdir():
            os.chmod(p, 0o600)
        os.chmod(study, 0o700)
        os.utime(study, ns=(mtime, mtime))
        assert run(capsys, "compress", "-1", "-T", "1", study)[0] == 0
        archive = tmp_path / "study.mzp"
        assert stat.S_IMODE(os.stat(archive).st_mode) == 0o600
        out = tmp_path / "out"
        assert run(capsys, "decompress", archive, "-o", out)[0] == 0
        assert stat.S_IMODE(os.stat(out).st_mode) == 0o700 and os.stat(out).st_mtime_ns == mtime
        assert {stat.S_IMODE(os.stat(p).st_mode) for p in out.iterdir()} == {0o600}
    finally:
        os.umask(old_umask)


# ---- item 11: --rm with a detached data file --------------------------------------------------

@pytest.mark.parametrize("make", [_mhd, _nhdr], ids=["mhd", "nhdr"])
def test_rm_removes_header_and_data_file_and_restore_writes_both(capsys, tmp_path, make):
    header = make(tmp_path)
    digests = {p.name: sha(p) for p in (header, tmp_path / "scan.raw")}
    assert run(capsys, "compress", "-1", "-T", "1", "--rm", header)[0] == 0
    assert not header.exists() and not (tmp_path / "scan.raw").exists()
    assert run(capsys, "decompress", "--rm", tmp_path / (header.name + ".mzp"))[0] == 0
    assert {n: sha(tmp_path / n) for n in digests} == digests


def _not_zlib_gzip(raw: bytes) -> bytes:
    """A gzip member of ``raw`` that no zlib level reproduces (memLevel 9, filtered strategy),
    like ITK >= 5.4's zlib-ng or pigz output."""
    comp = zlib.compressobj(6, zlib.DEFLATED, 31, 9, zlib.Z_FILTERED)
    return comp.compress(raw) + comp.flush()


def _real_nrrd(folder: Path, name: str, deflate) -> Path:
    """A gzip NRRD of a crop of the bundled real MR sample, its data deflated by ``deflate``."""
    vol = np.ascontiguousarray(demo_volume()[:4, 30:70, 30:70], dtype="<i2")
    path = folder / name
    path.write_bytes(b"NRRD0004\ntype: int16\ndimension: 3\nsizes: 40 40 4\nendian: little\n"
                     b"encoding: gzip\n\n" + deflate(vol.tobytes()))
    return path


def _gzip_nrrd_other_deflater(folder: Path) -> Path:
    return _real_nrrd(folder, "other.nrrd", _not_zlib_gzip)


def _nii_gz_other_deflater(folder: Path) -> Path:
    from nibabel.testing import data_path
    path = folder / "other.nii.gz"
    path.write_bytes(_not_zlib_gzip((Path(data_path) / "anatomical.nii").read_bytes()))
    return path


@pytest.mark.parametrize("make", [_gzip_nrrd_other_deflater, _nii_gz_other_deflater],
                         ids=["nrrd", "nii.gz"])
@pytest.mark.parametrize("recursive", [False, True], ids=["file", "-r"])
def test_rm_keeps_an_input_that_would_not_restore_byte_identical(capsys, tmp_path, make, recursive):
    """A gzip stream zlib did not write restores with the same header and voxels but other
    compressed bytes: compress says so, and --rm keeps the input (the restore is not the file)."""
    src = make(tmp_path)
    digest = sha(src)
    rc, _, err = run(capsys, "compress", "-1", "-T", "1", "--rm",
                     *(["-r", tmp_path] if recursive else [src]))
    assert rc == 0
    assert "not written by zlib" in err and "file bytes will differ" in err
    assert "input kept despite --rm" in err
    assert src.exists() and sha(src) == digest
    archive = tmp_path / (src.name + ".mzp")
    restored = tmp_path / "back" / src.name
    restored.parent.mkdir()
    assert run(capsys, "decompress", archive, "-o", restored)[0] == 0
    assert _inflated(restored) == _inflated(src)  # header and voxels
    assert sha(restored) != digest


def _inflated(path: Path) -> bytes:
    """A gzip NRRD's header and inflated data, or a .nii.gz's .nii bytes."""
    blob = path.read_bytes()
    if path.name.endswith(".nii.gz"):
        return gzip.decompress(blob)
    header, data = blob.split(b"\n\n", 1)
    return header + gzip.decompress(data)


def test_zlib_written_gzip_input_is_removed_by_rm_without_a_note(capsys, tmp_path):
    src = _real_nrrd(tmp_path, "plain.nrrd", lambda raw: gzip.compress(raw, mtime=0))
    rc, _, err = run(capsys, "compress", "-1", "-T", "1", "--rm", src)
    assert rc == 0 and "bits/voxel" in err and "not written by zlib" not in err
    assert not src.exists()


# ---- item 12: messages that say what happened and what to do ----------------------------------

def test_folder_of_nifti_files_says_so(capsys, tmp_path):
    from nibabel.testing import data_path

    folder = tmp_path / "niftis"
    folder.mkdir()
    for name in ("functional.nii", "anatomical.nii"):
        shutil.copy(Path(data_path) / name, folder / name)
    rc, _, err = run(capsys, "compress", folder)
    assert rc == 1 and "no DICOM files" in err and "2 NIfTI files" in err
    assert "one by one" in err and "unrecognised" not in err


def test_archive_as_input_is_already_compressed(capsys, npy):
    assert run(capsys, "compress", "-1", "-T", "1", npy)[0] == 0
    archive = npy.with_name("scan.npy.mzp")
    rc, _, err = run(capsys, "compress", archive)
    assert rc == 1 and "already compressed" in err
    renamed = npy.with_name("looks.npy")
    shutil.copy(archive, renamed)  # the content decides, not the name
    rc, _, err = run(capsys, "compress", renamed)
    assert rc == 1 and "already compressed" in err


@pytest.mark.parametrize("name, needles", [
    ("MR_small_RLE.dcm", ["stored whole", "compressed transfer syntax", "--transcode"]),
    ("SC_rgb_small_odd.dcm", ["stored whole", "colour", "greyscale"]),
])
def test_dicom_stored_whole_says_why(capsys, tmp_path, name, needles):
    src = _pydicom_test_file(name)
    if src is None:
        pytest.skip(f"pydicom test file {name} not available")
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(src, folder / name)
    rc, _, err = run(capsys, "compress", "-1", "-T", "1", folder)
    assert rc == 0, err
    for needle in needles:
        assert needle in err, err
    assert "0.000 bits/voxel" not in err


# ---- item 13: info on a truncated archive -----------------------------------------------------

def test_info_reports_truncation(capsys, npy, tmp_path):
    assert run(capsys, "compress", "-1", "-T", "1", npy)[0] == 0
    archive = npy.with_name("scan.npy.mzp")
    rc, out, _ = run(capsys, "info", archive)
    assert rc == 0 and "not verified" in out
    cut = tmp_path / "cut.mzp"
    cut.write_bytes(archive.read_bytes()[:-50])
    rc, out, err = run(capsys, "info", cut)
    assert rc == 1 and "TRUNCATED" in out and "truncated archive" in err
    rc, out, err = run(capsys, "info", "--json", cut)
    assert rc == 1 and '"complete": false' in out


# ---- item 14: bench --plot without matplotlib -------------------------------------------------

def test_bench_plot_without_matplotlib_names_the_extra(capsys, npy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    rc, _, err = run(capsys, "bench", npy, "--plot", tmp_path / "p.png")
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1 and 'pip install "medzip[bench]"' in lines[0], err
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert 'pip install "medzip[bench]"' in readme


# ---- item 15: CLI wording, short lines --------------------------------------------------------

def test_cli_and_api_wording_do_not_mix(capsys, npy):
    assert run(capsys, "compress", "-1", "-T", "1", npy)[0] == 0
    rc, _, err = run(capsys, "compress", "-1", npy)
    assert rc == 1 and "use -f" in err and "force=True" not in err
    with pytest.raises(files.OutputExistsError) as info:
        files.compress_file(npy, level=1)
    assert "force=True" in str(info.value) and "-f" not in str(info.value)


def test_decompressing_a_series_prints_a_summary_line(capsys, tmp_path):
    study = _dicom_folder(tmp_path / "study", 8)
    assert run(capsys, "compress", "-1", "-T", "1", study)[0] == 0
    rc, _, err = run(capsys, "decompress", "-T", "1", tmp_path / "study.mzp", "-o", tmp_path / "out")
    assert rc == 0 and len(err.strip().splitlines()) == 1
    assert "8 files in" in err and len(err) < 200, err


# ---- item 16: -o DIR / --output-dir -----------------------------------------------------------

def test_output_dir_for_several_inputs(capsys, npy, tmp_path):
    second = tmp_path / "two.npy"
    np.save(second, VOL + 1)
    outdir = tmp_path / "archives"
    outdir.mkdir()
    assert run(capsys, "compress", "-1", "-T", "1", npy, second, "-o", outdir)[0] == 0
    assert sorted(p.name for p in outdir.iterdir()) == ["scan.npy.mzp", "two.npy.mzp"]
    restored = tmp_path / "restored"
    restored.mkdir()
    rc, _, err = run(capsys, "decompress", "-T", "1", *sorted(outdir.iterdir()),
                     "--output-dir", restored)
    assert rc == 0, err
    assert sha(restored / "scan.npy") == sha(npy) and sha(restored / "two.npy") == sha(second)
    assert run(capsys, "compress", npy, second, "-o", tmp_path / "missing.mzp")[0] == 2


# ---- issue 13: one pass over the archive, one verify path -------------------------------------

def test_compress_summary_does_not_reread_the_archive(capsys, npy, monkeypatch):
    def no(*a, **kw):
        raise AssertionError("the written archive was read again")

    monkeypatch.setattr(files, "info_file", no)
    monkeypatch.setattr(files, "read_input", no)
    rc, _, err = run(capsys, "compress", "-1", "-T", "1", npy)
    assert rc == 0 and "bits/voxel" in err, err


def test_demo_uses_the_compress_verify_path(capsys, monkeypatch):
    def broken(*a, **kw):
        raise MedzipError("verification failed: the archive does not decode to the input")

    monkeypatch.setattr(files, "verify_archive", broken)
    rc, _, err = run(capsys, "demo", "-1", "-T", "1")
    assert rc == 1 and "round trip FAILED" in err
