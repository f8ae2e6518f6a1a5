"""General-purpose codings of byte strings (zstd, xz) and their bounded inflation.

Used wherever an LZ coder can beat (or stand in for) the predictive coder: file members,
value tables, and whole volumes whose bytes code smaller with zstd or xz than with the
predictor (synthetic, palette and label images; see docs/FORMAT.md, "fallback").

"xz" here is a raw LZMA2 stream (the filter that .xz files carry, without the .xz container:
the section CRC-32 and the SHA-256 digests already check it, and the container would cost
~60 bytes on every small part). Dictionary: at most 8 MiB (xz preset 6's), so the encoder's match
finder stays near 100 MiB whatever the input (preset 9's 64 MiB took ~700 MiB on a CT-sized
volume that reached the fallback); readers accept up to 64 MiB.
"""
from __future__ import annotations

import lzma

import zstandard

from .errors import CorruptStreamError

__all__ = ["CODECS", "ZSTD_LEVEL", "zstd", "xz", "smallest", "inflate"]

#: Codecs a reader inflates (members: all three; volumes: "zstd" and "xz").
CODECS = ("raw", "zstd", "xz")
# The slowest standard zstd level: the parts it codes are small or chosen where it wins.
ZSTD_LEVEL = 19
_XZ_PRESET = 9 | lzma.PRESET_EXTREME
_XZ_DICT_MAX = 8 << 20  # preset 6's dictionary: the largest this writer uses
_XZ_READ_DICT_MAX = 64 << 20  # preset 9's: what streams of earlier writers may need
_XZ_DICT_MIN = 4096  # liblzma's smallest


def _xz_dict(size: int, largest: int = _XZ_DICT_MAX) -> int:
    """A dictionary just large enough for ``size`` bytes, up to ``largest``: below that the
    coded stream is the same as with a larger one (no match reaches further back than the
    data), but the encoder does not set up ~700 MiB of match finder for a 300-byte file, and
    the decoder of a ``size``-byte output never needs more."""
    return min(largest, max(_XZ_DICT_MIN, size))


_PIECE = 1 << 20  # inflation proceeds in pieces: memory follows the real data


def zstd(data, level: int = ZSTD_LEVEL, checksum: bool = False) -> bytes:
    """One zstd frame (content size in its header; ``checksum``: XXH64 of the content, which
    the decoder checks)."""
    return zstandard.ZstdCompressor(level=level, write_checksum=checksum).compress(data)


def xz(data) -> bytes:
    size = memoryview(data).nbytes
    filters = [{"id": lzma.FILTER_LZMA2, "preset": _XZ_PRESET,
                "dict_size": _xz_dict(1 << max(0, size - 1).bit_length())}]
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


def smallest(data, codecs=CODECS) -> tuple[str, bytes]:
    """``(codec, coded)`` with the fewest bytes among ``codecs``; ties keep the earlier one
    (raw before zstd before xz: the cheaper decode)."""
    best = None
    for codec in codecs:
        coded = bytes(data) if codec == "raw" else zstd(data) if codec == "zstd" else xz(data)
        if best is None or len(coded) < len(best[1]):
            best = (codec, coded)
    return best


def inflate(codec: str, raw, size: int, what: str, writable: bool = False):
    """Decode ``raw`` coded with ``codec`` into exactly ``size`` bytes, never producing more
    than ``size + 1`` bytes: a forged size or a decompression bomb costs only what the data
    really expands to, up to that size. Damage raises CorruptStreamError naming ``what``.
    Returns bytes, or a bytearray when ``writable`` (arrays built on it can be modified)."""
    if codec == "raw":
        out = bytearray(raw)
    elif codec == "zstd":
        out = _inflate_zstd(raw, size, what)
    elif codec == "xz":
        out = _inflate_xz(raw, size, what)
    else:
        raise CorruptStreamError(f"{what} uses an unknown codec")
    if len(out) != size:
        raise CorruptStreamError(f"{what} is corrupted (wrong size)")
    return out if writable else bytes(out)


def _inflate_zstd(raw, size: int, what: str) -> bytes:
    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            while len(out) <= size:
                piece = reader.read(min(_PIECE, size + 1 - len(out)))
                if not piece:
                    break
                out += piece
    except zstandard.ZstdError:
        raise CorruptStreamError(f"{what} is corrupted") from None
    return out


def _inflate_xz(raw, size: int, what: str) -> bytes:
    out = bytearray()
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW,
                                filters=[{"id": lzma.FILTER_LZMA2,
                                          "dict_size": _xz_dict(size, _XZ_READ_DICT_MAX)}])
    pending = bytes(raw)
    try:
        while len(out) <= size and not dec.eof:
            piece = dec.decompress(pending, max_length=min(_PIECE, size + 1 - len(out)))
            pending = b""
            if not piece and dec.needs_input:
                break  # the data ended before the stream did
            out += piece
    except lzma.LZMAError:
        raise CorruptStreamError(f"{what} is corrupted") from None
    if not dec.eof or dec.unused_data:
        raise CorruptStreamError(f"{what} is corrupted (incomplete stream)")
    return out
