"""A real Orthanc on 127.0.0.1, configured only by ``medzip orthanc config``, storing real CT and
MR instances through the medzip storage area (REST and C-STORE), serving them back byte for byte,
rendering previews, surviving a restart, deleting, and refusing to serve a damaged file.

Orthanc and its Python plugin come from apt (``.ci/run`` installs them when missing).
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest

import orthanc_support
from orthanc_support import ORTHANC, Orthanc, c_store, medzip_config
from medzip.errors import CorruptStreamError, MedzipError
from medzip.orthanc import storage
from medzip.orthanc.config import find_python_plugin

try:
    PLUGIN = find_python_plugin()
except MedzipError:
    PLUGIN = None
needs_orthanc = pytest.mark.skipif(
    ORTHANC is None or PLUGIN is None,
    reason="Orthanc or orthanc-python is not installed and could not be installed with apt "
           "(.ci/run runs 'apt-get install -y orthanc orthanc-python' when Orthanc is missing)")
CT_SLICES = 8  # of the shared CT series; the benchmark stores all of them


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- the storage envelope, without Orthanc --------------------------------------------------------
def test_uuid_is_validated_before_any_path(tmp_path):
    for bad in ["../../etc/passwd", "/abs", "a" * 36, "0123456789ab-cdef-0123-4567-89abcdef0123",
                "01234567-89ab-cdef-0123-456789abcdef\n", "01234567-89AB-cdef-0123-456789abcdef"]:
        with pytest.raises(MedzipError):
            storage.attachment_path(tmp_path, bad)
    ok = "01234567-89ab-cdef-0123-456789abcdef"
    assert storage.attachment_path(tmp_path, ok) == tmp_path / "01" / "23" / ok


def test_envelope_kinds_and_damage(tmp_path):
    ct = orthanc_support.ct_series(tmp_path / "ct", slices=2)[0].read_bytes()
    compressed = next(p for p in orthanc_support.mr_instances() if pydicom.dcmread(
        p, stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed).read_bytes()
    text = json.dumps({"tags": list(range(500))}).encode()
    noise = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(8))
    for data, kind in [(ct, storage.KIND_MEDZIP), (compressed, None), (text, storage.KIND_ZSTD),
                       (noise, storage.KIND_RAW)]:
        blob = storage.encode(data, level=1, dicom=data is not text)
        if kind is not None:
            assert blob[9:10] == kind
        else:
            assert blob[9:10] != storage.KIND_MEDZIP  # RLE: kept as it is, not coded as pixels
        assert storage.decode(blob) == data
        for pos in (3, 11, len(blob) // 2, len(blob) - 1):
            damaged = bytearray(blob)
            damaged[pos] ^= 0x10
            with pytest.raises(CorruptStreamError):
                storage.decode(bytes(damaged))
        with pytest.raises(CorruptStreamError):
            storage.decode(blob[:-7])


# -- a real Orthanc -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if ORTHANC is None or PLUGIN is None:
        pytest.skip(needs_orthanc.kwargs["reason"])
    root = tmp_path_factory.mktemp("orthanc")
    storage_dir = root / "storage"
    medzip_config(storage_dir, root / "config.json")
    srv = Orthanc(root / "config.json", root / "orthanc.log").start()
    srv.storage_dir = storage_dir
    srv.uploaded = {}  # instance id -> (original bytes or None for C-STORE, path)
    yield srv
    srv.stop()


@needs_orthanc
def test_config_is_safe_by_default(tmp_path):
    cfg_path = tmp_path / "config.json"
    medzip_config(tmp_path / "storage", cfg_path, "--level", "3")
    cfg = json.loads(cfg_path.read_text())
    assert cfg["RemoteAccessAllowed"] is False and cfg["DicomAlwaysAllowStore"] is False
    assert cfg["DicomCheckModalityHost"] is True
    assert all(m[1] == "127.0.0.1" for m in cfg["DicomModalities"].values())
    assert cfg["StorageCompression"] is False and cfg["Medzip"]["Level"] == 3
    assert Path(cfg["PythonScript"]).is_file() and Path(cfg["Plugins"][0]).is_file()
    assert not (tmp_path / "storage").exists()  # printing a configuration creates nothing


@needs_orthanc
def test_upload_rest_and_cstore_read_back_identical(server, tmp_path_factory):
    ct = orthanc_support.ct_series(tmp_path_factory.mktemp("ct"), slices=CT_SLICES)
    mr = orthanc_support.mr_instances()
    rest, dimse = ct[: len(ct) // 2] + mr[:-1], ct[len(ct) // 2:] + mr[-1:]
    # several clients at once: Orthanc calls the storage area from concurrent threads
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda p: server.upload(p.read_bytes()), rest))
    for instance, p in zip(ids, rest):
        server.uploaded[instance] = (p.read_bytes(), p)
    before = set(server.json("/instances"))
    assert c_store(server.dicom_port, dimse) == [0] * len(dimse), server.log_tail()
    stored_by_dimse = set(server.json("/instances")) - before
    assert len(stored_by_dimse) == len(dimse)
    for i in stored_by_dimse:
        server.uploaded[i] = (None, None)

    with ThreadPoolExecutor(4) as pool:
        answers = dict(zip(server.uploaded, pool.map(
            lambda i: server.get(f"/instances/{i}/file"), server.uploaded)))
    coded = 0
    for instance, (original, path) in server.uploaded.items():
        status, served = answers[instance]
        assert status == 200
        if original is not None:  # REST keeps the uploaded file as it is
            assert served == original, path
        # C-STORE: Orthanc writes its own file; its MD5, recorded before the storage area saw
        # the bytes, must match what the storage area gives back
        assert md5(served) == server.md5(instance)
        head = server.attachment_file(server.storage_dir, instance).read_bytes()[:10]
        assert storage.is_envelope(head)
        coded += head[9:10] == storage.KIND_MEDZIP
    assert coded >= len(ct)  # every native CT slice went through medzip's DICOM adapter


@needs_orthanc
def test_preview_decodes_through_the_plugin(server):
    ids = list(server.uploaded)
    for instance in (ids[0], ids[-1]):  # a CT slice (REST) and a C-STORE'd instance
        status, png = server.get(f"/instances/{instance}/preview")
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"


@needs_orthanc
def test_unknown_modality_cannot_store(server):
    path = next(p for _, p in server.uploaded.values() if p is not None)
    count = len(server.json("/instances"))
    assert c_store(server.dicom_port, [path], calling="STRANGER") != [0]
    assert len(server.json("/instances")) == count


@needs_orthanc
def test_delete_restart_and_read_again(server):
    victim = next(iter(server.uploaded))
    victim_file = server.attachment_file(server.storage_dir, victim)
    assert server.request("DELETE", f"/instances/{victim}")[0] == 200
    assert not victim_file.exists()
    del server.uploaded[victim]
    server.stop()
    server.start()
    assert set(server.json("/instances")) == set(server.uploaded)
    for instance, (original, _) in server.uploaded.items():
        status, served = server.get(f"/instances/{instance}/file")
        assert status == 200
        assert md5(served) == server.md5(instance)
        if original is not None:
            assert served == original


@needs_orthanc
def test_corrupted_file_is_an_error_not_other_bytes(server):
    instance = next(i for i, (orig, _) in server.uploaded.items() if orig is not None)
    path = server.attachment_file(server.storage_dir, instance)
    blob = bytearray(path.read_bytes())
    blob[len(blob) * 2 // 3] ^= 0x01
    path.write_bytes(bytes(blob))
    server.stop()  # Orthanc keeps recently read files in memory: start without that cache
    server.start()
    status, body = server.get(f"/instances/{instance}/file")
    assert status >= 400, "a damaged attachment was served"
    assert "corrupt" in server.log_tail().lower()
    path.unlink()
    assert server.get(f"/instances/{instance}/file")[0] >= 400


@needs_orthanc
def test_migrate_plain_orthanc_storage(tmp_path):
    """A storage folder written by a plain Orthanc becomes medzip's, in place and resumable."""
    storage_dir = tmp_path / "storage"
    config = tmp_path / "config.json"
    medzip_config(storage_dir, config)
    cfg = json.loads(config.read_text())
    plain = {k: v for k, v in cfg.items() if k not in ("Plugins", "PythonScript", "Medzip")}
    plain_config = tmp_path / "plain.json"
    plain_config.write_text(json.dumps(plain))
    files = orthanc_support.ct_series(tmp_path / "ct", slices=2) + orthanc_support.mr_instances()[:1]
    srv = Orthanc(plain_config, tmp_path / "plain.log").start()
    try:
        ids = {srv.upload(p.read_bytes()): p.read_bytes() for p in files}
    finally:
        srv.stop()
    before = sum(f.stat().st_size for f in storage_dir.glob("*/*/*"))
    stale = storage_dir / "00" / "00"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / f".x{storage.TMP_SUFFIX}").write_bytes(b"interrupted")  # a crashed earlier run
    cmd = [sys.executable, "-m", "medzip.cli", "orthanc", "migrate", str(storage_dir), "--level", "1"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "1 stale" in first.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "converted 0 file(s)" in again.stdout  # resumable: nothing left
    attachments = [f for f in storage_dir.glob("*/*/*") if storage.valid_uuid(f.name)]
    assert attachments and all(storage.is_envelope(f.read_bytes()[:8]) for f in attachments)
    assert sum(f.stat().st_size for f in attachments) < before
    srv = Orthanc(config, tmp_path / "medzip.log").start()
    try:
        for instance, original in ids.items():
            assert srv.get(f"/instances/{instance}/file") == (200, original)
    finally:
        srv.stop()
