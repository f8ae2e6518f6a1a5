"""The ``.mzp`` container: magic, version, a JSON header and CRC-checked sections.

Layout (all integers little-endian; see docs/FORMAT.md)::

    magic      8 bytes   b"\\x89MZP\\r\\n\\x1a\\n"
    major      u16       incompatible changes bump this; readers refuse a newer major
    minor      u16       compatible additions (new optional header keys)
    hlen       u32       length of the header
    header     hlen      UTF-8 JSON object (1.x); from 2.0 the same JSON as one zstd frame
                         coded with the fixed dictionary in header_dict.py
    hcrc       u32       CRC-32 of every byte before it
    body       ...       sections, addressed from the header by {"offset","length","crc32"}

Sections are opaque byte strings (coded chunks, parameter blobs, file members); each is
checked against its CRC-32 when read, so damage is reported with the section's name.

The writer uses the lowest version that holds the header: 2.0 (compressed header) when that is
smaller or the header needs it, else 1.2, which every 1.x reader parses.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

import zstandard

from .errors import CorruptStreamError, UnsupportedVersionError
from .header_dict import HEADER_DICT_2_0

MAGIC = b"\x89MZP\r\n\x1a\n"
# zstd level of the general-purpose sections (value tables, file members): they are small, so
# the slowest standard level costs little time and changes no coded voxel
SECTION_ZSTD_LEVEL = 19
# Newest version this medzip writes and reads (docs/FORMAT.md): 2.0 compresses the header.
FORMAT_MAJOR = 2
FORMAT_MINOR = 0
# What the writer uses when the plain JSON header is the smaller one (1.1: volume digest
# binding dtype and shape; 1.2: zstd/xz fallback codecs for volumes and members).
JSON_FORMAT = (1, 2)
_PREFIX = struct.Struct("<8sHHI")
_CRC = struct.Struct("<I")
# Largest JSON header a reader parses: parsing costs ~10x its size in Python objects. 32 MiB
# holds ~150,000 chunk or DICOM-file entries, far beyond any real archive.
MAX_HEADER = 32 << 20


def section_refs(node):
    """Every section reference (a dict with ``offset`` and ``length``) anywhere in a header:
    for checks that need no knowledge of what each section holds (truncation, CRCs)."""
    if isinstance(node, dict):
        if "offset" in node and "length" in node:
            yield node
        for value in node.values():
            yield from section_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from section_refs(value)


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

    def finish(self, header: dict, *, compact: bool = False) -> bytes:
        """Header + body. ``compact``: the header uses 2.x-only features, so write 2.0 even
        when the compressed header is not the smaller one."""
        head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
        packed = compress_header(head)
        if compact or len(packed) < len(head):
            version, head = (FORMAT_MAJOR, FORMAT_MINOR), packed
        else:
            version = JSON_FORMAT
        prefix = _PREFIX.pack(MAGIC, *version, len(head)) + head
        return b"".join([prefix, _CRC.pack(crc32(prefix)), *self._parts])


_HEADER_DICT = zstandard.ZstdCompressionDict(HEADER_DICT_2_0,
                                             dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def compress_header(head: bytes) -> bytes:
    # no dictionary id, no checksum (the header CRC checks it); the content size stays so
    # readers know the JSON's length before inflating it
    return zstandard.ZstdCompressor(level=19, dict_data=_HEADER_DICT, write_dict_id=False,
                                    write_checksum=False).compress(head)


def inflate_header(packed) -> bytes:
    """The JSON of a 2.x header, never more than MAX_HEADER bytes of it."""
    try:
        reader = zstandard.ZstdDecompressor(dict_data=_HEADER_DICT).stream_reader(bytes(packed))
        with reader:
            head = reader.read(MAX_HEADER + 1)
            # read() may return less than asked before the end: read on up to the bound
            while len(head) <= MAX_HEADER and (more := reader.read(MAX_HEADER + 1 - len(head))):
                head += more
    except zstandard.ZstdError:
        raise CorruptStreamError("medzip header is corrupted (cannot be decompressed)") from None
    if len(head) > MAX_HEADER:
        raise CorruptStreamError("medzip header is larger than any medzip writes")
    return head


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
        head = data[_PREFIX.size : end]
        if major >= 2:
            head = inflate_header(head)
        try:
            header = json.loads(bytes(head).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:  # CRC passed: a writer bug
            raise CorruptStreamError(f"medzip header is unreadable: {exc}") from None
        if not isinstance(header, dict):
            raise CorruptStreamError("medzip header is not an object")
        return cls(data, header, end + _CRC.size, (major, minor))

    def section(self, ref: dict, what: str) -> bytes:
        """Return the bytes of one section, checking bounds and CRC-32."""
        fields = [ref.get(k) if isinstance(ref, dict) else None
                  for k in ("offset", "length", "crc32")]
        # JSON ints only: a float (Infinity), string or bool is a forged or broken header
        if any(isinstance(v, bool) or not isinstance(v, int) for v in fields):
            raise CorruptStreamError(f"medzip header entry for {what} is malformed")
        offset, length, expected = fields
        start = self.body_start + offset
        if offset < 0 or length < 0 or start + length > len(self._data):
            raise CorruptStreamError(f"truncated medzip file: {what} is missing")
        chunk = self._data[start : start + length]
        if crc32(chunk) != expected:
            raise CorruptStreamError(f"{what} is corrupted (CRC mismatch)")
        return bytes(chunk)

    def holds(self, ref) -> bool:
        """Whether a section reference lies inside the data (no CRC check): cheap truncation
        detection for ``medzip info``."""
        try:
            offset, length = int(ref["offset"]), int(ref["length"])
        except (KeyError, TypeError, ValueError, OverflowError):
            return False
        return offset >= 0 and length >= 0 and self.body_start + offset + length <= len(self._data)

    def __reduce__(self):
        # spawn-started workers receive the container pickled: as bytes, not a memoryview
        return (Container, (bytes(self._data), self.header, self.body_start, self.version))

    @property
    def total_size(self) -> int:
        return len(self._data)
