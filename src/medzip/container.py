"""The ``.mzp`` container: magic, version, a JSON header and CRC-checked sections.

Layout (all integers little-endian; see docs/FORMAT.md)::

    magic      8 bytes   b"\\x89MZP\\r\\n\\x1a\\n"
    major      u16       incompatible changes bump this; readers refuse a newer major
    minor      u16       compatible additions (new optional header keys)
    hlen       u32       length of the header
    header     hlen      UTF-8 JSON object; unknown keys are ignored by readers
    hcrc       u32       CRC-32 of every byte before it
    body       ...       sections, addressed from the header by {"offset","length","crc32"}

Sections are opaque byte strings (coded chunks, parameter blobs, file members); each is
checked against its CRC-32 when read, so damage is reported with the section's name.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

from .errors import CorruptStreamError, UnsupportedVersionError

MAGIC = b"\x89MZP\r\n\x1a\n"
FORMAT_MAJOR = 1
FORMAT_MINOR = 0
_PREFIX = struct.Struct("<8sHHI")
_CRC = struct.Struct("<I")
MAX_HEADER = 1 << 30


def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass
class ContainerWriter:
    """Collects sections, then writes header + body in one piece."""

    _parts: list = field(default_factory=list)
    _size: int = 0

    def add_section(self, data: bytes) -> dict:
        ref = {"offset": self._size, "length": len(data), "crc32": crc32(data)}
        self._parts.append(bytes(data))
        self._size += len(data)
        return ref

    def finish(self, header: dict) -> bytes:
        head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
        prefix = _PREFIX.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(head)) + head
        return b"".join([prefix, _CRC.pack(crc32(prefix)), *self._parts])


class Container:
    """A parsed, header-validated view of a ``.mzp`` byte string."""

    def __init__(self, data, header: dict, body_start: int, version: tuple[int, int]):
        self._data = memoryview(data)
        self.header = header
        self.body_start = body_start
        self.version = version

    @classmethod
    def parse(cls, data) -> "Container":
        data = memoryview(data)
        if len(data) < _PREFIX.size or bytes(data[:8]) != MAGIC:
            raise CorruptStreamError("not a medzip file (bad magic number)")
        _, major, minor, hlen = _PREFIX.unpack(data[: _PREFIX.size])
        if major > FORMAT_MAJOR:
            raise UnsupportedVersionError(
                f"file uses format version {major}.{minor}, this medzip reads up to "
                f"{FORMAT_MAJOR}.x: upgrade medzip to decode it"
            )
        end = _PREFIX.size + hlen
        if hlen > MAX_HEADER or len(data) < end + _CRC.size:
            raise CorruptStreamError("truncated medzip file (header incomplete)")
        (stored,) = _CRC.unpack(data[end : end + _CRC.size])
        if crc32(data[:end]) != stored:
            raise CorruptStreamError("medzip header is corrupted (CRC mismatch)")
        try:
            header = json.loads(bytes(data[_PREFIX.size : end]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # CRC passed: a writer bug
            raise CorruptStreamError(f"medzip header is unreadable: {exc}") from None
        if not isinstance(header, dict):
            raise CorruptStreamError("medzip header is not an object")
        return cls(data, header, end + _CRC.size, (major, minor))

    def section(self, ref: dict, what: str) -> bytes:
        """Return the bytes of one section, checking bounds and CRC-32."""
        try:
            start = self.body_start + int(ref["offset"])
            length = int(ref["length"])
            expected = int(ref["crc32"])
        except (KeyError, TypeError, ValueError):
            raise CorruptStreamError(f"medzip header entry for {what} is malformed") from None
        if start < self.body_start or length < 0 or start + length > len(self._data):
            raise CorruptStreamError(f"truncated medzip file: {what} is missing")
        chunk = self._data[start : start + length]
        if crc32(chunk) != expected:
            raise CorruptStreamError(f"{what} is corrupted (CRC mismatch)")
        return bytes(chunk)

    @property
    def total_size(self) -> int:
        return len(self._data)
