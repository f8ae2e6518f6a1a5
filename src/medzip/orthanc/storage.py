"""The storage folder behind Orthanc: one self-describing, self-checking file per attachment.

Orthanc hands every attachment (the DICOM instance itself, and small derived ones such as the
"DICOM until pixel data" cache) to the storage area as ``(uuid, content type, bytes)`` and
expects exactly those bytes back. Each one is written as an *envelope*::

    magic    8 bytes   b"\\x89MZO\\r\\n\\x1a\\n"
    version  1 byte    1
    kind     1 byte    b"m": a medzip archive follows (DICOM adapter, single file)
                       b"z": size (u64 LE) + SHA-256 (32 bytes) + one zstd frame
                       b"r": size (u64 LE) + SHA-256 (32 bytes) + the bytes as they are
    body     ...

``m`` is used when medzip's DICOM adapter codes pixels (native greyscale transfer syntaxes): the
archive's sections carry CRC-32s and its metadata the SHA-256 of the original file, and the
adapter refuses to restore anything that does not match it. Files the adapter would only store
verbatim (compressed transfer syntaxes, colour, non-DICOM attachments) skip the codec: zstd
when it saves anything, else raw; both with their own size and SHA-256. A read therefore either
returns the exact bytes Orthanc stored or raises :class:`~medzip.errors.CorruptStreamError`.

Paths follow Orthanc's own layout (``ROOT/ab/cd/abcd...``) so a plain Orthanc folder can be
migrated in place (:mod:`medzip.orthanc.migrate`); the uuid is validated before any path is
built from it, and files are written to a temp name in the same folder, fsynced, then renamed.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import struct
import tempfile
from pathlib import Path

import zstandard

from .. import api, files
from ..errors import CorruptStreamError, MedzipError

MAGIC = b"\x89MZO\r\n\x1a\n"
VERSION = 1
KIND_MEDZIP, KIND_ZSTD, KIND_RAW = b"m", b"z", b"r"
_CHECKED = struct.Struct("<Q32s")  # size, SHA-256 of the original bytes
_PREFIX = len(MAGIC) + 2
TMP_SUFFIX = ".medzip-tmp"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Attachments not coded as pixels: strong zstd for the usual (small or already compressed)
# ones, a fast level past the size where level 19 would stall an upload for seconds.
_ZSTD_STRONG, _ZSTD_FAST, _ZSTD_STRONG_MAX = 19, 6, 8 << 20


def is_envelope(head: bytes) -> bool:
    return head[: len(MAGIC)] == MAGIC


def valid_uuid(uuid: str) -> bool:
    """Orthanc attachment ids are lower-case RFC 4122 text; anything else never becomes a path."""
    return isinstance(uuid, str) and _UUID.fullmatch(uuid) is not None


def attachment_path(root: Path, uuid: str) -> Path:
    if not valid_uuid(uuid):
        raise MedzipError(f"refusing attachment id {uuid!r}: not an Orthanc uuid")
    return Path(root) / uuid[0:2] / uuid[2:4] / uuid


def _checked(kind: bytes, data: bytes, body: bytes) -> bytes:
    return b"".join([MAGIC, bytes([VERSION]), kind,
                     _CHECKED.pack(len(data), hashlib.sha256(data).digest()), body])


def encode(data: bytes, *, level: int | None = None, name: str = "instance.dcm",
           dicom: bool = True, verify: bool = True) -> bytes:
    """The envelope for ``data``. ``dicom=False`` skips the DICOM adapter (Orthanc says the
    attachment is not an instance). ``verify`` decodes a medzip archive before it is returned:
    Orthanc keeps no other copy of what it stores, so a codec fault must fail the upload."""
    data = bytes(data)
    if dicom:
        archive = _medzip_archive(data, level, name)
        if archive is not None:
            blob = MAGIC + bytes([VERSION]) + KIND_MEDZIP + archive
            if verify and decode(blob, name) != data:
                raise CorruptStreamError(f"{name}: verification failed, the archive does not "
                                         "restore the instance")
            return blob
    zlevel = _ZSTD_STRONG if len(data) <= _ZSTD_STRONG_MAX else _ZSTD_FAST
    packed = zstandard.ZstdCompressor(level=zlevel).compress(data)
    if len(packed) < len(data):
        return _checked(KIND_ZSTD, data, packed)
    return _checked(KIND_RAW, data, data)


def _medzip_archive(data: bytes, level: int | None, name: str) -> bytes | None:
    """A medzip archive of one DICOM file, or None when the adapter would code no pixels."""
    with tempfile.TemporaryDirectory(prefix="medzip-orthanc-") as tmp:
        src = Path(tmp) / name
        src.write_bytes(data)
        try:
            adapter, payload = files.load_file(src)
        except MedzipError:
            return None  # not a format medzip reads: the checked zstd/raw path stores it
        if adapter.name != "dicom" or not payload.volumes:
            return None
        # Orthanc calls the storage area from several threads; medzip's core is re-entrant
        return api.compress_payload(payload, level=level, workers=1)


def decode(blob: bytes, what: str = "attachment") -> bytes:
    """The original bytes of an envelope; CorruptStreamError on any damage."""
    blob = bytes(blob)
    if len(blob) < _PREFIX or not is_envelope(blob):
        raise CorruptStreamError(f"{what}: not a medzip Orthanc attachment (bad magic)")
    version, kind = blob[len(MAGIC)], blob[len(MAGIC) + 1 : _PREFIX]
    if version != VERSION:
        raise CorruptStreamError(f"{what}: envelope version {version} is not supported")
    if kind == KIND_MEDZIP:
        return _restore_medzip(blob[_PREFIX:], what)
    if kind not in (KIND_ZSTD, KIND_RAW) or len(blob) < _PREFIX + _CHECKED.size:
        raise CorruptStreamError(f"{what}: envelope is damaged (unknown kind or truncated)")
    size, digest = _CHECKED.unpack_from(blob, _PREFIX)
    body = blob[_PREFIX + _CHECKED.size :]
    if kind == KIND_ZSTD:
        try:
            body = zstandard.ZstdDecompressor().decompress(body, max_output_size=size)
        except zstandard.ZstdError:
            raise CorruptStreamError(f"{what}: zstd data is corrupted") from None
    if len(body) != size or hashlib.sha256(body).digest() != digest:
        raise CorruptStreamError(f"{what}: content does not match its SHA-256 (corrupted)")
    return body


def _restore_medzip(archive: bytes, what: str) -> bytes:
    import io

    out = io.BytesIO()
    try:
        # the DICOM adapter checks the rebuilt file against its recorded SHA-256 before
        # writing a byte, so damage surfaces here as an error, never as other bytes
        files.decompress_to_stream(archive, out, workers=1, name=what)
    except MedzipError as exc:
        raise CorruptStreamError(f"{what}: {exc}") from None
    return out.getvalue()


class StorageArea:
    """Orthanc's three storage callbacks over a folder; safe to call from several threads."""

    def __init__(self, root, *, level: int | None = None, verify: bool = True):
        self.root = Path(root)
        self.level = level
        self.verify = verify
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, uuid: str, dicom: bool, data: bytes) -> None:
        path = attachment_path(self.root, uuid)
        blob = encode(data, level=self.level, name=f"{uuid}.dcm", dicom=dicom, verify=self.verify)
        write_atomic(path, blob)

    def read(self, uuid: str) -> bytes:
        path = attachment_path(self.root, uuid)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise MedzipError(f"attachment {uuid}: no such file in {self.root}") from None
        return decode(blob, f"attachment {uuid}")

    def remove(self, uuid: str) -> None:
        path = attachment_path(self.root, uuid)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        for folder in (path.parent, path.parent.parent):  # as Orthanc does: drop empty levels
            try:
                folder.rmdir()
            except OSError:
                break


def write_atomic(path: Path, blob: bytes) -> None:
    """Temp file beside ``path``, fsync, rename: readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    try:
        for attempt in range(3):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                break
            except FileNotFoundError:  # a concurrent remove() dropped the folder just now
                if attempt == 2:
                    raise
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
