"""Codec adapters for ``medzip bench``: medzip itself and the codecs people use instead.

Every adapter turns one integer volume (2-D, 3-D as z,y,x or 4-D as t,z,y,x) into bytes and
back. The runner, not the adapter, decides whether the round trip was exact, so an adapter
never hides a codec's mistake. Optional libraries are imported inside the adapters: a missing
one makes :meth:`Codec.unavailable` return the reason and the codec is reported as skipped.

Conventions shared by all adapters (documented in docs/BENCHMARKS.md):
- one thread everywhere (medzip ``workers=1``, ``numthreads=1``, x265 without thread pools),
  so that speeds compare codecs rather than core counts;
- per-slice image codecs code every 2-D slice of the (t*z) stack as its own image;
- the counted size is the codec's own output; the few bytes of shape, dtype and offset that a
  container would add are not counted for the standard codecs (medzip's size is its whole file).
"""
from __future__ import annotations

import importlib
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np


class Unsupported(Exception):
    """The codec cannot take this input (too many bits, image too small ...): reported as skipped."""


@dataclass
class Encoded:
    """A codec's output: ``parts`` are counted, ``side`` is what a decoder needs besides them."""

    parts: list[bytes]
    side: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    offset: int = 0  # value added to every voxel before coding (signed -> unsigned)

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.parts)


class Codec:
    """Base class. ``family`` groups codecs in reports: medzip, image, video or general."""

    name = "?"
    family = "general"
    label = ""
    requires: tuple[str, ...] = ()  # importable modules the adapter needs
    default = True  # part of the default selection
    memory_note = ""  # what the memory figure cannot see (e.g. a child process)

    def unavailable(self) -> str | None:
        """None when usable, else why not (shown as the skip reason)."""
        for mod in self.requires:
            try:
                importlib.import_module(mod)
            except ImportError as exc:
                return f"python module '{mod}' not importable ({exc})"
        return None

    def encode(self, vol: np.ndarray) -> Encoded:
        raise NotImplementedError

    def decode(self, enc: Encoded) -> np.ndarray:
        raise NotImplementedError

    def describe(self, enc: Encoded) -> list[str]:
        """Extra notes about an encoding, computed outside the timed region."""
        return []


# -- medzip ------------------------------------------------------------------------------------
class MedzipCodec(Codec):
    family = "medzip"

    def __init__(self, level_name: str, model: str | None = None, default: bool = True):
        self.level_name = level_name
        self.model = model
        self.name = f"medzip-{model.removeprefix('medzip-') if model else level_name}"
        self.label = f"medzip model={model}" if model else f"medzip level '{level_name}'"
        self.default = default

    def _level(self) -> int | None:
        from medzip.volume_codec import LEVELS

        return LEVELS.get(self.level_name)

    def unavailable(self) -> str | None:
        try:
            level = self._level()
        except ImportError as exc:
            return f"medzip codec not importable ({exc})"
        if level is None:
            from medzip.volume_codec import LEVELS

            return f"medzip has no level named '{self.level_name}' (has {sorted(LEVELS)})"
        return None

    def encode(self, vol):
        import medzip
        from medzip.errors import MedzipError, UnsupportedInputError

        try:
            data = medzip.compress(vol, level=self._level(), model=self.model, workers=1)
        except UnsupportedInputError as exc:
            raise Unsupported(str(exc)) from None
        except MedzipError as exc:
            if self.model:  # an optional model that is not shipped (yet) is a skip, not a bug
                raise Unsupported(str(exc)) from None
            raise
        return Encoded([data])

    def decode(self, enc):
        import medzip

        return medzip.decompress(enc.parts[0], workers=1)

    def describe(self, enc):
        import medzip

        models = {v.get("model") or "?" for v in medzip.inspect(enc.parts[0])["volumes"]}
        return [f"medzip model {', '.join(sorted(models))}"]


# -- helpers for codecs that take unsigned 8/16-bit images -------------------------------------
def _bits(top: int) -> int:
    return max(1, int(top).bit_length())


def to_image_ints(vol: np.ndarray, *, signed_ok: bool = False, max_bits: int = 16):
    """Map stored integers to what an image codec takes; returns (array, offset, notes).

    8-bit data (values spanning at most 256 levels) goes in as uint8; signed data is shifted by
    ``offset = -min`` when the codec needs unsigned input (``signed_ok`` codecs take int16 as is).
    """
    vmin, vmax = int(vol.min()), int(vol.max())
    offset = -vmin if vmin < 0 else 0
    top = vmax + offset
    notes = []
    if top <= 0xFF:
        work = np.uint8
    elif signed_ok and vol.dtype.kind == "i" and vol.dtype.itemsize <= 2:
        return vol.astype(np.int16, copy=False), 0, notes
    elif _bits(top) <= max_bits:
        work = np.uint16
    else:
        raise Unsupported(f"values span {_bits(top)} bits; this codec takes at most {max_bits}")
    if offset:
        notes.append("signed input shifted to unsigned by +offset")
    if np.dtype(work) != vol.dtype:
        notes.append(f"{vol.dtype}->{np.dtype(work)}")
    # Integer casts and adds wrap modulo 2**bits, and v + offset fits the target type, so the
    # shift is done in the target type itself: no int64 temporary (8 bytes/voxel) in the figures.
    work_arr = vol.astype(work)
    if offset:
        work_arr += _wrapped(offset, work)
    return work_arr, offset, notes


def _wrapped(value: int, dtype) -> np.ndarray:
    return np.array(value, dtype=np.int64).astype(dtype)


def from_image_ints(arr: np.ndarray, offset: int, dtype, shape) -> np.ndarray:
    out = arr.astype(dtype)
    if offset:
        out -= _wrapped(offset, dtype)  # wraps back exactly, as in to_image_ints
    return out.reshape(shape)


def _frames(vol: np.ndarray) -> np.ndarray:
    """Stack of 2-D slices: 4-D (t,z,y,x) becomes t*z slices."""
    if vol.ndim < 2:
        raise Unsupported(f"{vol.ndim}-D array: per-slice codecs need at least 2 axes")
    return np.ascontiguousarray(vol.reshape(-1, *vol.shape[-2:]))


class SliceCodec(Codec):
    """Per-slice image codec from imagecodecs."""

    family = "image"
    requires = ("imagecodecs",)
    signed_ok = False
    codec_attr = ""  # imagecodecs.<CODEC>.available tells whether this build has it

    def unavailable(self):
        reason = super().unavailable()
        if reason is None:
            import imagecodecs

            if not getattr(getattr(imagecodecs, self.codec_attr), "available", False):
                reason = f"imagecodecs {imagecodecs.__version__} built without {self.codec_attr}"
        return reason

    def encode_slice(self, img: np.ndarray, bits: int) -> bytes:
        raise NotImplementedError

    def decode_slice(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def encode(self, vol):
        frames = _frames(vol)
        work, offset, notes = to_image_ints(frames, signed_ok=self.signed_ok)
        bits = _bits(int(work.max())) if work.dtype.kind == "u" else 16
        parts = [self.encode_slice(img, bits) for img in work]
        side = {"shape": vol.shape, "dtype": vol.dtype, "offset": offset, "work": work.dtype}
        return Encoded(parts, side, notes, offset)

    def decode(self, enc):
        s = enc.side
        stack = np.stack([self.decode_slice(p) for p in enc.parts])
        return from_image_ints(stack, s["offset"], s["dtype"], s["shape"])


class JpegXL(SliceCodec):
    codec_attr = "JPEGXL"

    def __init__(self, effort: int):
        self.effort = effort
        self.name = f"jpegxl-e{effort}"
        self.label = f"JPEG-XL lossless (libjxl, distance 0, effort {effort}), per slice"

    def encode_slice(self, img, bits):
        import imagecodecs

        return imagecodecs.jpegxl_encode(img, lossless=True, effort=self.effort, numthreads=1,
                                         bitspersample=bits)

    def decode_slice(self, data):
        import imagecodecs

        return imagecodecs.jpegxl_decode(data, numthreads=1)


class JpegLS(SliceCodec):
    name = "jpegls"
    label = "JPEG-LS lossless (CharLS, NEAR=0), per slice"
    codec_attr = "JPEGLS"

    def encode_slice(self, img, bits):
        import imagecodecs

        return imagecodecs.jpegls_encode(img, level=0)

    def decode_slice(self, data):
        import imagecodecs

        return imagecodecs.jpegls_decode(data)


class Jpeg2000(SliceCodec):
    name = "jpeg2k"
    label = "JPEG 2000 lossless (OpenJPEG, reversible 5/3, J2K codestream), per slice"
    codec_attr = "JPEG2K"
    signed_ok = True

    def encode_slice(self, img, bits):
        import imagecodecs

        return imagecodecs.jpeg2k_encode(img, level=0, reversible=True, codecformat="J2K",
                                         bitspersample=bits if img.dtype.kind == "u" else None,
                                         numthreads=1)

    def decode_slice(self, data):
        import imagecodecs

        return imagecodecs.jpeg2k_decode(data, numthreads=1)


class HTJ2K(SliceCodec):
    name = "htj2k"
    label = "High-throughput JPEG 2000 lossless (OpenJPH, reversible), per slice"
    codec_attr = "HTJ2K"
    signed_ok = True

    def encode_slice(self, img, bits):
        import imagecodecs

        return imagecodecs.htj2k_encode(img, reversible=True)

    def decode_slice(self, data):
        import imagecodecs

        return imagecodecs.htj2k_decode(data)


# -- HEVC through the ffmpeg command line -------------------------------------------------------
class HevcX265(Codec):
    """Slices as frames of one lossless HEVC stream (libx265, gray 8- or 12-bit).

    Preset ultrafast: measurements.md found veryfast..medium failing the round trip on real MR.
    Data above 12 bits is split into a low 12-bit stream and a high 8-bit stream.
    """

    name = "hevc-x265"
    family = "video"
    label = "HEVC lossless (ffmpeg/libx265, preset ultrafast), slices as frames"
    preset = "ultrafast"
    memory_note = "excludes the ffmpeg child process"

    def unavailable(self):
        if shutil.which("ffmpeg") is None:
            return "ffmpeg not found on PATH"
        return None

    def _run(self, args: list[str], data: bytes) -> bytes:
        cmd = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", *args]
        proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
        if proc.returncode:
            msg = proc.stderr.decode(errors="replace").strip().splitlines()
            text = msg[0] if msg else f"ffmpeg exited with {proc.returncode}"
            if "too small" in text:  # x265 refuses tiny pictures; not a round-trip failure
                raise Unsupported(text.split("] ", 1)[-1])
            raise RuntimeError(text)
        return proc.stdout

    def _encode_stream(self, frames: np.ndarray, pix_fmt: str) -> bytes:
        n, h, w = frames.shape
        params = "lossless=1:log-level=error:pools=none:frame-threads=1"
        return self._run(["-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{w}x{h}", "-r", "25",
                          "-i", "-", "-c:v", "libx265", "-preset", self.preset,
                          "-x265-params", params, "-threads", "1", "-pix_fmt", pix_fmt,
                          "-f", "hevc", "-"], frames.tobytes())

    def _decode_stream(self, data: bytes, pix_fmt: str, dtype, shape) -> np.ndarray:
        raw = self._run(["-threads", "1", "-f", "hevc", "-i", "-", "-f", "rawvideo",
                         "-pix_fmt", pix_fmt, "-"], data)
        out = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        if out.size != int(np.prod(shape)):
            raise RuntimeError(f"ffmpeg returned {out.size} samples, expected {int(np.prod(shape))}")
        return out.reshape(shape)

    def encode(self, vol):
        frames = _frames(vol)
        work, offset, notes = to_image_ints(frames)
        side = {"shape": vol.shape, "dtype": vol.dtype, "offset": offset, "fshape": work.shape}
        if work.dtype == np.uint8:
            side["layout"] = "gray8"
            parts = [self._encode_stream(work, "gray")]
        elif _bits(int(work.max())) <= 12:
            side["layout"] = "gray12"
            parts = [self._encode_stream(work.astype("<u2"), "gray12le")]
        else:
            side["layout"] = "split"
            notes.append("values above 12 bits split into low 12-bit and high 8-bit streams")
            parts = [self._encode_stream((work & 0xFFF).astype("<u2"), "gray12le"),
                     self._encode_stream((work >> 12).astype(np.uint8), "gray")]
        return Encoded(parts, side, notes, offset)

    def decode(self, enc):
        s = enc.side
        if s["layout"] == "gray8":
            work = self._decode_stream(enc.parts[0], "gray", np.uint8, s["fshape"])
        else:
            work = self._decode_stream(enc.parts[0], "gray12le", np.uint16, s["fshape"])
            if s["layout"] == "split":
                high = self._decode_stream(enc.parts[1], "gray", np.uint8, s["fshape"])
                work = work | (high.astype(np.uint16) << 12)
        return from_image_ints(work, s["offset"], s["dtype"], s["shape"])


# -- general-purpose byte compressors on the raw little-endian bytes ----------------------------
class ByteCodec(Codec):
    family = "general"

    def compress(self, raw: bytes) -> bytes:
        raise NotImplementedError

    def decompress(self, data: bytes, size: int) -> bytes:
        raise NotImplementedError

    def encode(self, vol):
        le = vol.dtype.newbyteorder("<")
        raw = np.ascontiguousarray(vol, dtype=le).tobytes()
        return Encoded([self.compress(raw)], {"shape": vol.shape, "dtype": vol.dtype,
                                             "le": le, "size": len(raw)})

    def decode(self, enc):
        s = enc.side
        raw = self.decompress(enc.parts[0], s["size"])
        if len(raw) != s["size"]:
            raise RuntimeError(f"decompressor returned {len(raw)} bytes, expected {s['size']}")
        return np.frombuffer(raw, dtype=s["le"]).astype(s["dtype"]).reshape(s["shape"])


class Gzip(ByteCodec):
    name = "gzip-6"
    label = "gzip level 6 (what .nii.gz uses)"

    def compress(self, raw):
        import gzip

        return gzip.compress(raw, compresslevel=6, mtime=0)

    def decompress(self, data, size):
        import gzip

        return gzip.decompress(data)


class Zstd(ByteCodec):
    name = "zstd-19"
    label = "Zstandard level 19 (zstandard)"
    requires = ("zstandard",)

    def compress(self, raw):
        import zstandard

        return zstandard.ZstdCompressor(level=19, threads=0).compress(raw)

    def decompress(self, data, size):
        import zstandard

        return zstandard.ZstdDecompressor().decompress(data, max_output_size=size)


class Xz(ByteCodec):
    name = "xz-9e"
    label = "xz preset 9 | EXTREME (lzma)"
    requires = ("lzma",)

    def compress(self, raw):
        import lzma

        return lzma.compress(raw, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME)

    def decompress(self, data, size):
        import lzma

        return lzma.decompress(data)


class Bzip2(ByteCodec):
    name = "bzip2-9"
    label = "bzip2 level 9 (bz2)"
    requires = ("bz2",)

    def compress(self, raw):
        import bz2

        return bz2.compress(raw, 9)

    def decompress(self, data, size):
        import bz2

        return bz2.decompress(data)


class Ppmd(ByteCodec):
    """PPMd variant H (7-Zip's), order 6, 16 MiB model memory, via pyppmd.

    pyppmd 1.3.1 loses bytes when one ``encode`` call produces more output than its internal
    buffer (seen on 3 of the 23 shared volumes: short or corrupt decode). Feeding the encoder
    16 KiB at a time keeps each call's output small and round-trips all of them; the one-shot
    call is kept as the opt-in codec ``ppmd-h6-oneshot`` to show the failure.
    """

    requires = ("pyppmd",)
    order, mem = 6, 16 << 20

    def __init__(self, piece: int | None = 16 << 10):
        self.piece = piece
        self.name = "ppmd-h6" if piece else "ppmd-h6-oneshot"
        self.default = bool(piece)
        how = f"fed {piece >> 10} KiB per call" if piece else "one encode call (pyppmd bug)"
        self.label = f"PPMd variant H order 6, 16 MiB (pyppmd), {how}"

    def compress(self, raw):
        import pyppmd

        enc = pyppmd.Ppmd7Encoder(self.order, self.mem)
        step = self.piece or max(1, len(raw))
        out = [enc.encode(raw[i:i + step]) for i in range(0, len(raw), step)]
        return b"".join(out) + enc.flush(endmark=False)

    def decompress(self, data, size):
        import pyppmd

        # Variant H has no end marker here: the decoder is told the size (pyppmd.decompress
        # cannot do that for variant H, so the decoder class is used directly).
        return pyppmd.Ppmd7Decoder(self.order, self.mem).decode(data, size)


def all_codecs() -> dict[str, Codec]:
    """Every known adapter, in report order (fresh instances)."""
    codecs = [
        MedzipCodec("default"), MedzipCodec("fast"), MedzipCodec("strong"),
        MedzipCodec("default", model="medzip-paper", default=False),
        JpegXL(7), JpegXL(9), JpegLS(), Jpeg2000(), HTJ2K(), HevcX265(),
        Ppmd(), Ppmd(piece=None), Gzip(), Zstd(), Xz(), Bzip2(),
    ]
    return {c.name: c for c in codecs}


def select(spec: str | list[str] | None) -> list[Codec]:
    """Codecs named by a comma list; 'default' (the default set) and 'all' expand."""
    known = all_codecs()
    items = spec.split(",") if isinstance(spec, str) else list(spec or ["default"])
    chosen: list[str] = []
    for item in (s.strip() for s in items):
        if not item:
            continue
        if item == "default":
            names = [n for n, c in known.items() if c.default]
        elif item == "all":
            names = list(known)
        elif item in known:
            names = [item]
        else:
            raise KeyError(f"unknown codec '{item}' (known: default, all, {', '.join(known)})")
        chosen += [n for n in names if n not in chosen]
    return [known[n] for n in chosen]
