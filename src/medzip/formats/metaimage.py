"""MetaImage (ITK): ``.mha`` (header + data in one file) and ``.mhd`` + detached data file.

The ``Key = Value`` header is parsed directly (it ends with the ``ElementDataFile`` line; for
``.mha`` the data follows it), so reading needs neither SimpleITK nor ITK and the voxel offset is
exact. Header bytes, skipped bytes (``HeaderSize``) and trailing bytes are kept verbatim and the
restored file(s) are byte-identical (SHA-256 checked).

``CompressedData = True`` (a zlib stream): the stream is inflated and its voxels are coded. If a
zlib level reproduces the original stream exactly, the file is restored byte-identical. ITK 5.4+
(SimpleITK 2.4+) compresses with zlib-ng, which Python's zlib cannot reproduce: such files are
restored with the same header (except the ``CompressedDataSize`` value) and identical voxels, in a
stream re-deflated at the same level (checked against the SHA-256 of the decoded data), and
``describe`` says so. ASCII data (``BinaryData = False``) is stored verbatim.
Float and 64-bit element types are refused. Multi-channel images (``ElementNumberOfChannels``
> 1, channels fastest) are coded with the channel axis first. See nrrd.py for the shared logic.
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import UnsupportedInputError
from .nrrd import HeaderedImageAdapter, Layout, detached_name, header_lines

# MetaIO's MET_LONG/MET_ULONG are 4 bytes (metaTypes.h), unlike C's long on LP64.
_MET_TYPES = {
    "MET_CHAR": "i1", "MET_UCHAR": "u1", "MET_SHORT": "i2", "MET_USHORT": "u2",
    "MET_INT": "i4", "MET_UINT": "u4", "MET_LONG": "i4", "MET_ULONG": "u4",
    "MET_LONG_LONG": "i8", "MET_ULONG_LONG": "u8", "MET_FLOAT": "f4", "MET_DOUBLE": "f8",
}
_TRUE = ("true", "1", "yes")
_COMPRESSED_SIZE = re.compile(rb"(?im)^(CompressedDataSize\s*=\s*)(\d+)")


class MetaImageAdapter(HeaderedImageAdapter):
    name = "metaimage"
    label = "MetaImage"
    suffixes = (".mha", ".mhd")
    magic = (b"ObjectType", b"NDims")

    def patch_header(self, header: bytes, growth: int) -> bytes:
        def fix(m: re.Match) -> bytes:
            return m.group(1) + str(int(m.group(2)) + growth).encode()
        return _COMPRESSED_SIZE.sub(fix, header, count=1)

    def parse_header(self, blob: bytes, path) -> Layout:
        fields, header_len = {}, None
        for line, end in header_lines(blob, 1 << 16):
            key, sep, value = line.partition("=")
            if not sep:
                if line.strip():
                    break
                continue
            key = key.strip().lower()
            fields[key] = value.strip()
            if key == "elementdatafile":
                header_len = end
                break
        if header_len is None:
            raise UnsupportedInputError(f"{path}: not a MetaImage file (no ElementDataFile line)")
        code = _MET_TYPES.get(fields.get("elementtype", "").upper())
        if code is None:
            raise UnsupportedInputError(
                f"{path}: MetaImage ElementType '{fields.get('elementtype')}' is not supported")
        try:
            dims = [int(s) for s in fields["dimsize"].split()]
            channels = int(fields.get("elementnumberofchannels", 1))
            skip = int(fields.get("headersize", 0))
        except (KeyError, ValueError):
            raise UnsupportedInputError(f"{path}: MetaImage header lacks valid DimSize") from None
        ndims = fields.get("ndims")
        if ndims is not None and ndims.strip().isdigit() and int(ndims) != len(dims):
            raise UnsupportedInputError(f"{path}: MetaImage NDims and DimSize disagree")
        msb = fields.get("elementbyteordermsb", fields.get("binarydatabyteordermsb", "false"))
        dtype = np.dtype((">" if msb.lower() in _TRUE else "<") + code)
        shape = tuple(reversed(dims)) + ((channels,) if channels > 1 else ())
        encoding = "zlib" if fields.get("compresseddata", "false").lower() in _TRUE else "raw"
        if fields.get("binarydata", "true").lower() not in _TRUE:
            encoding = "ascii"
        source = fields["elementdatafile"]
        if source.upper() == "LIST" or "%" in source or len(source.split()) > 1:
            raise UnsupportedInputError(f"{path}: MetaImage data split over several files is not supported")
        data_file = None if source.upper() == "LOCAL" else detached_name(source, path)
        size = "x".join(str(d) for d in dims) + (f" x {channels} channels" if channels > 1 else "")
        order = {"<": " little-endian", ">": " big-endian"}.get(dtype.str[0], "")
        return Layout(dtype=dtype, shape=shape, encoding=encoding, header_len=header_len,
                      data_file=data_file, byte_skip=skip if encoding == "raw" else 0,
                      line_skip=0, channels_last=channels > 1,
                      summary=f"{size} (x, y, z), {dtype.name}{order}, "
                              f"{'compressed (zlib)' if encoding == 'zlib' else encoding} data")


ADAPTER = MetaImageAdapter()
