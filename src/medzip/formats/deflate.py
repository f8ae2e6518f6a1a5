"""gzip/zlib helpers shared by the adapters that restore compressed files byte for byte."""
from __future__ import annotations

import zlib

PROBE = 1 << 20  # bytes deflated before a candidate level is compared with the original


def gzip_header_length(gz: bytes) -> int:
    """Length of a gzip member header (RFC 1952), 0 if it is not one."""
    if len(gz) < 18 or gz[:3] != b"\x1f\x8b\x08":
        return 0
    flg, pos = gz[3], 10
    try:
        if flg & 4:
            pos += 2 + int.from_bytes(gz[pos:pos + 2], "little")
        if flg & 8:
            pos = gz.index(b"\0", pos) + 1
        if flg & 16:
            pos = gz.index(b"\0", pos) + 1
        if flg & 2:
            pos += 2
    except ValueError:
        return 0
    return pos if pos <= len(gz) else 0


def find_deflate_level(raw: bytes, deflate: memoryview, levels) -> int | None:
    """The zlib level whose raw-deflate output of ``raw`` is exactly ``deflate``, if any.

    Output emitted for a prefix of the input is final, so a wrong level is usually rejected
    after deflating only the first MiB.
    """
    for level in levels:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8)
        early = comp.compress(raw[:PROBE])
        if bytes(deflate[:len(early)]) != early:
            continue
        out = early + comp.compress(raw[PROBE:]) + comp.flush()
        if out == deflate:
            return level
    return None


def recompressed_note(encoding: str) -> dict:
    """The storage note (files.CompressReport) of a file whose ``encoding`` stream (gzip, zlib)
    no zlib level reproduces: it restores re-compressed, header and voxels identical."""
    return {"count": 1, "kind": "recompressed",
            "reason": f"its {encoding} stream was not written by zlib"}
