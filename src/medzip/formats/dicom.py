"""DICOM adapter: one file or a whole folder becomes one payload, restored byte for byte.

Every DICOM file with native (uncompressed) greyscale integer pixel data is cut into three parts:
the bytes before the PixelData value (preamble, file meta, every attribute, the PixelData tag and
length), the pixel value itself, and the bytes after it (trailing padding, odd-length pad byte,
anything past Rows x Columns x Frames). The first and last parts go verbatim, concatenated for all
files, into one member (``/dicom-headers``) so that zstd sees the near-identical headers of a
series together. The pixel values are the raw stored words (``np.frombuffer`` of the element bytes,
dtype from BitsAllocated, PixelRepresentation and the element's byte order), never ``pixel_array``:
unused high bits (overlays, garbage) survive because the whole word is kept.

Files of one series (SeriesInstanceUID, plus equal geometry and dtype) are stacked into one volume
ordered along the slice normal (ImagePositionPatient . (row x col) of ImageOrientationPatient, else
InstanceNumber), so the codec's 3-D context crosses file boundaries. A series whose positions repeat
the same number of times (fMRI, multi-echo) becomes a 4-D (t, z, y, x) volume. Frames of a
multi-frame file are slices in file order. A Siemens mosaic is un-tiled into its real slices (tiles
beyond NumberOfImagesInMosaic go to the header member) and re-tiled on restore.

Everything else is stored whole as a verbatim member named by its relative path and listed with
the reason in ``meta``: non-DICOM files, encapsulated/compressed transfer syntaxes (JPEG, JPEG-LS,
JPEG 2000, RLE, deflate; restored identical unless transcoded, below), colour, float, 1-bit or
otherwise unusable pixel data. Each file's size and SHA-256 is in ``meta`` and checked before
anything is written on restore.

Transcoding (``read(path, transcode=True)``, ``medzip compress --transcode``): a file whose transfer
syntax is *lossless* and decodable here -- RLE Lossless and Deflated Explicit VR Little Endian with
pydicom; JPEG Lossless (Process 14, any selection value), JPEG-LS Lossless, JPEG 2000 Lossless and
HTJ2K Lossless with ``imagecodecs`` when it is installed -- is decoded at compress time and rewritten
by pydicom as a *new* file: the same dataset with TransferSyntaxUID Explicit VR Little Endian, the
decoded stored words as native PixelData, the file meta (group 2) lengths recomputed and, as
pydicom's writer does, retired group-length elements (gggg,0000) outside group 2 dropped. Those
bytes then take the ordinary path above, so the archive restores the *uncompressed* file byte for
byte, not the original one. Its ``meta`` entry's ``size``/``sha256`` describe the uncompressed file
(the restore check compares against them); ``transcoded_from`` holds the original transfer syntax
UID, ``original_size``/``original_sha256`` the original file. JPEG codecs do not know
PixelRepresentation, so their output is checked (frames x Rows x Columns, values within
BitsStored) and reinterpreted as the DICOM stored word (sign-extended from BitsStored when signed);
RLE and deflate give the stored words as they are. Lossy syntaxes (JPEG baseline/extended,
JPEG-LS near-lossless, JPEG 2000, HTJ2K, ...) are never transcoded, nor is a file whose decoded
image would not be coded as voxels anyway (colour, 1-bit, ...); they stay verbatim, with the reason.
Without ``transcode`` nothing changes.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CorruptStreamError, UnsupportedInputError
from .base import Payload, plain_file_name, strip_archive_suffix

HEADERS_MEMBER = "/dicom-headers"  # a leading "/" can never collide with a relative file path
_META_VERSION = 1
_PIXEL_DATA = 0x7FE00010
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic", ".ima"}
_DESCRIBE_MAX = 20
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_RLE = "1.2.840.10008.1.2.5"
_DEFLATED = "1.2.840.10008.1.2.1.99"
# Lossless encapsulated syntaxes decoded frame by frame with imagecodecs: UID -> decoder name.
_IMAGECODECS = {
    "1.2.840.10008.1.2.4.57": "ljpeg_decode",  # JPEG Lossless, Process 14
    "1.2.840.10008.1.2.4.70": "ljpeg_decode",  # JPEG Lossless, Process 14, Selection Value 1
    "1.2.840.10008.1.2.4.80": "jpegls_decode",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90": "jpeg2k_decode",  # JPEG 2000 (Lossless Only)
    "1.2.840.10008.1.2.4.201": "htj2k_decode",  # HTJ2K (Lossless Only)
    "1.2.840.10008.1.2.4.202": "htj2k_decode",  # HTJ2K with RPCL Options (Lossless Only)
}
_TRANSCODABLE = {_RLE, _DEFLATED, *_IMAGECODECS}


@dataclass
class _Image:
    """One DICOM file whose pixel value is coded as voxels."""

    rel: str
    data: bytes
    start: int  # offset of the pixel value in the file
    dtype: np.dtype  # of the stored words, with the file's byte order
    rows: int
    cols: int
    frames: int
    series_uid: str
    modality: str
    instance: float
    position: np.ndarray | None
    orientation: np.ndarray | None
    mosaic: int = 0  # NumberOfImagesInMosaic, 0 if not a mosaic
    grid: int = 0
    index: int = -1  # position in meta["files"]

    @property
    def nbytes(self) -> int:
        return self.rows * self.cols * self.frames * self.dtype.itemsize

    def words(self) -> np.ndarray:
        raw = np.frombuffer(self.data, self.dtype, self.rows * self.cols * self.frames, self.start)
        return raw.astype(self.dtype.newbyteorder("="))

    def unit(self) -> tuple[np.ndarray, bytes]:
        """Slices this file contributes, (frames, rows, cols) or (n, tile_r, tile_c) for a mosaic,
        and the bytes of the mosaic's blank tiles past the last real slice (kept with the header)."""
        words = self.words().reshape(self.frames, self.rows, self.cols)
        if not self.mosaic:
            return words, b""
        g = self.grid
        tiles = words[0].reshape(g, self.rows // g, g, self.cols // g).swapaxes(1, 2)
        tiles = tiles.reshape(g * g, self.rows // g, self.cols // g)
        return tiles[: self.mosaic], tiles[self.mosaic :].astype(self.dtype).tobytes()


def _pydicom():
    import pydicom  # core dependency; imported lazily to keep `import medzip` light

    return pydicom


def looks_like_dicom(head: bytes) -> bool:
    """Part-10 magic, or a bare dataset starting with a group 0002/0008 tag (no preamble)."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x08")


def _float_list(value, n: int):
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def _geometry(ds):
    """(position, orientation) of the first slice, from the top level or enhanced groups."""
    pos, ori = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    try:
        if pos is None and "PerFrameFunctionalGroupsSequence" in ds:
            pos = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
        if ori is None and "SharedFunctionalGroupsSequence" in ds:
            ori = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    except (AttributeError, IndexError, KeyError):
        pass
    pos = _float_list(pos, 3) if pos is not None else None
    ori = _float_list(ori, 6) if ori is not None else None
    return pos, ori


def _mosaic_count(ds) -> int:
    """NumberOfImagesInMosaic from (0019,xx0A) or, failing that, the Siemens CSA image header."""
    image_type = ds.get("ImageType") or []
    if "MOSAIC" not in [str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)]:
        return 0
    try:
        value = ds.private_block(0x0019, "SIEMENS MR HEADER")[0x0A].value
        if isinstance(value, bytes):
            value = int.from_bytes(value[:2], "little")
        return int(value)
    except (KeyError, ValueError, TypeError):
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel.nicom warns that it is experimental on import
            from nibabel.nicom import csareader
        csa = csareader.read(ds.private_block(0x0029, "SIEMENS CSA HEADER")[0x10].value)
        return int(csareader.get_n_mosaic(csa) or 0)
    except Exception:  # absent or malformed CSA: simply not a mosaic we can un-tile
        return 0


def _classify(rel: str, data: bytes):
    """Return an :class:`_Image`, or the reason (str) the file is stored verbatim."""
    if not looks_like_dicom(data[:132]):
        return "not DICOM"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # odd-but-readable files are normal in a study folder
        try:
            return _inspect(rel, data)
        except Exception as exc:  # pydicom raises many types on damaged files; verbatim is safe
            return f"not readable as DICOM ({type(exc).__name__})"


def _inspect(rel: str, data: bytes):
    ds = _pydicom().dcmread(io.BytesIO(data), force=True)
    elem = ds.get_item(_PIXEL_DATA)
    if elem is None:
        float_pixels = any(t in ds for t in (0x7FE00008, 0x7FE00009))
        return "float pixel data" if float_pixels else "no pixel data"
    ts = _transfer_syntax(ds)
    if getattr(elem, "is_undefined_length", False) or ts.get("compressed"):
        return f"compressed transfer syntax ({ts.get('name') or 'encapsulated pixel data'})"
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel") or 1)
        signed = int(ds.get("PixelRepresentation") or 0) == 1
    except (AttributeError, TypeError, ValueError):
        return "image attributes missing or malformed"
    if samples != 1:
        return f"colour pixel data (SamplesPerPixel={samples})"
    if bits not in (8, 16, 32) or rows < 1 or cols < 1 or frames < 1:
        return f"unsupported pixel layout (BitsAllocated={bits})"
    start, length = getattr(elem, "value_tell", None), getattr(elem, "length", None)
    value = getattr(elem, "value", None)
    if value is not None and length is not None and len(value) < length:
        return "pixel data truncated"
    if start is None or value is None or data[start : start + length] != value:
        return "pixel data not at a plain file offset"
    order = "<" if elem.is_little_endian else ">"
    dtype = np.dtype(f"{order}{'i' if signed else 'u'}{bits // 8}")
    image = _Image(rel, data, start, dtype, rows, cols, frames,
                   series_uid=str(ds.get("SeriesInstanceUID") or ""),
                   modality=str(ds.get("Modality") or ""),
                   instance=_instance_number(ds), position=None, orientation=None)
    if length < image.nbytes:
        return "pixel data shorter than Rows x Columns x Frames"
    image.position, image.orientation = _geometry(ds)
    n = _mosaic_count(ds) if frames == 1 else 0
    grid = math.ceil(math.sqrt(n)) if n > 0 else 0
    if n > 1 and rows % grid == 0 and cols % grid == 0:
        image.mosaic, image.grid = n, grid
    return image


def _transfer_syntax(ds) -> dict:
    uid = getattr(ds, "file_meta", {}).get("TransferSyntaxUID")
    if uid is None:
        return {}
    try:
        compressed = uid.is_compressed or uid.is_deflated
    except ValueError:  # not a known transfer syntax; the pixel offset check below decides
        compressed = False
    return {"name": uid.name, "compressed": compressed}


class _NotTranscoded(Exception):
    """The reason a compressed file stays verbatim even though transcoding was asked for."""


def _transcode(data: bytes):
    """``(bytes of the uncompressed file, original transfer syntax UID)`` for a file in a lossless
    compressed syntax, or the reason (str) it is not transcoded."""
    pydicom = _pydicom()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            uid = str(ds.file_meta.TransferSyntaxUID)
        except Exception as exc:  # noqa: BLE001 (damaged file: verbatim is safe)
            return f"not transcoded: unreadable ({type(exc).__name__})"
        if uid not in _TRANSCODABLE:
            return "lossy or unsupported syntax, never transcoded"
        try:
            pixels = _decode_pixels(ds, uid)
            return _native_file(ds, pixels), uid
        except _NotTranscoded as exc:
            return f"not transcoded: {exc}"
        except Exception as exc:  # noqa: BLE001 (codec errors come in many types)
            return f"not transcoded: decoding failed ({type(exc).__name__}: {exc})"


def _decode_pixels(ds, uid: str) -> bytes | None:
    """The decoded stored words, little endian, frames x rows x cols; None to keep PixelData
    as it is (deflate: pydicom has already inflated the whole dataset)."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        bits = int(ds.BitsAllocated)
        stored = int(ds.get("BitsStored") or bits)
        samples = int(ds.get("SamplesPerPixel") or 1)
        signed = int(ds.get("PixelRepresentation") or 0) == 1
    except (AttributeError, TypeError, ValueError):
        raise _NotTranscoded("image attributes missing or malformed") from None
    if samples != 1:
        raise _NotTranscoded(f"colour pixel data (SamplesPerPixel={samples})")
    if bits not in (8, 16, 32) or not 1 <= stored <= bits or rows < 1 or cols < 1 or frames < 1:
        raise _NotTranscoded(f"unsupported pixel layout (BitsAllocated={bits}, BitsStored={stored})")
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    nbytes = frames * rows * cols * dtype.itemsize
    if uid == _DEFLATED:
        return None
    if uid == _RLE:
        from pydicom.pixels import get_decoder

        buf, _ = get_decoder(uid).as_buffer(ds)
        if len(buf) != nbytes:
            raise _NotTranscoded(f"RLE decoded to {len(buf)} bytes, expected {nbytes}")
        return bytes(buf)
    try:
        import imagecodecs
    except ImportError:
        raise _NotTranscoded("imagecodecs is not installed") from None
    decode = getattr(imagecodecs, _IMAGECODECS[uid], None)
    if decode is None:
        raise _NotTranscoded(f"this imagecodecs has no {_IMAGECODECS[uid]}")
    from pydicom.encaps import generate_frames

    elem = ds[_PIXEL_DATA]
    if not getattr(elem, "is_undefined_length", False):
        raise _NotTranscoded("pixel data is not encapsulated")
    out = []
    for frame in generate_frames(ds.PixelData, number_of_frames=frames):
        arr = np.asarray(decode(frame))
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.shape != (rows, cols):
            raise _NotTranscoded(f"frame decoded to shape {arr.shape}, expected {(rows, cols)}")
        out.append(_stored_words(arr, dtype, stored))
    if len(out) != frames:
        raise _NotTranscoded(f"{len(out)} frame(s) decoded, NumberOfFrames is {frames}")
    return b"".join(a.tobytes() for a in out)


def _stored_words(arr: np.ndarray, dtype: np.dtype, stored: int) -> np.ndarray:
    """A decoded frame as DICOM stored words: codecs ignore PixelRepresentation, so a signed
    image may come back unsigned (BitsStored-bit two's complement) or the other way round."""
    if arr.dtype.kind not in "iu" or arr.dtype.itemsize > dtype.itemsize:
        raise _NotTranscoded(f"codec returned {arr.dtype}, expected at most {dtype}")
    v = arr.astype(np.int64)
    lo = -(1 << (stored - 1)) if (dtype.kind == "i" or arr.dtype.kind == "i") else 0
    if v.size and (v.min() < lo or v.max() >= (1 << stored)):
        raise _NotTranscoded(f"decoded values [{v.min()}, {v.max()}] do not fit BitsStored={stored}")
    v &= (1 << stored) - 1  # the BitsStored-bit pattern
    if dtype.kind == "i":
        sign = 1 << (stored - 1)
        v = (v ^ sign) - sign  # sign-extend to the whole word
    return v.astype(dtype)


def _native_file(ds, pixels: bytes | None) -> bytes:
    """The dataset written as an Explicit VR Little Endian file with native pixel data."""
    from pydicom.uid import ExplicitVRLittleEndian

    if pixels is not None:
        del ds[_PIXEL_DATA]
        for tag in (0x7FE00001, 0x7FE00002):  # extended offset table: encapsulated only
            if tag in ds:
                del ds[tag]
        ds.add_new(_PIXEL_DATA, "OW" if int(ds.BitsAllocated) > 8 else "OB", pixels)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _instance_number(ds) -> float:
    try:
        return float(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        return math.inf


def _group_key(img: _Image) -> tuple:
    # Files without a SeriesInstanceUID stay alone rather than being stacked with strangers.
    uid = img.series_uid or f"file:{img.rel}"
    if img.mosaic:
        return (uid, "mosaic", img.mosaic, img.rows, img.cols, img.dtype.str)
    return (uid, "stack", img.rows, img.cols, img.dtype.str)


def _order(images: list) -> tuple[list, tuple | None]:
    """Volume order of a stack group, and (t, z) when it forms a regular 4-D series."""
    images = sorted(images, key=lambda im: (im.instance, im.rel))
    ori = images[0].orientation
    if ori is None or any(im.position is None for im in images):
        return images, None
    normal = np.cross(ori[:3], ori[3:])
    dist = {im.rel: round(float(np.dot(im.position, normal)), 3) for im in images}
    images.sort(key=lambda im: (dist[im.rel], im.instance, im.rel))
    if all(im.frames == 1 for im in images):
        levels = sorted(set(dist.values()))
        per = [sum(1 for d in dist.values() if d == lv) for lv in levels]
        t, z = per[0], len(levels)
        if t > 1 and z > 1 and all(p == t for p in per):
            # images is sorted by (z, instance); re-read it as t-major (t, z).
            return [images[zi * t + ti] for ti in range(t) for zi in range(z)], (t, z)
    return images, None


def _walk(root: Path) -> list[tuple[str, Path]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file():
                out.append((p.relative_to(root).as_posix(), p))
    return out


def _safe_rel(rel) -> str:
    """Reject archive paths that would escape the output folder (or be ambiguous in it)."""
    text = rel if isinstance(rel, str) else ""
    parts = text.split("/")
    if (not text or "\\" in text or "\0" in text
            or any(part in ("", ".", "..") for part in parts)):
        raise CorruptStreamError(f"DICOM archive lists an unsafe path {rel!r}")
    return text


def _folder_targets(out: Path, rels: list) -> list[Path]:
    """``out / rel`` for every file of a restored folder, all checked before anything is
    written: safe, distinct, and no file doubling as another's folder."""
    rels = [_safe_rel(rel) for rel in rels]
    files, folders = set(), set()
    for rel in rels:
        parts = rel.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        if rel in files:
            raise CorruptStreamError(f"DICOM archive lists the path '{rel}' twice")
        files.add(rel)
    clash = files & folders
    if clash:
        raise CorruptStreamError(f"DICOM archive lists '{min(clash)}' as a file and as a folder")
    return [out / rel for rel in rels]


class DicomAdapter:
    name = "dicom"

    def can_read(self, path: Path) -> bool:
        path = Path(path)
        if path.is_dir():
            return any(self._is_dicom_file(p) for _, p in _walk(path))
        return path.is_file() and self._is_dicom_file(path)

    @staticmethod
    def _is_dicom_file(path: Path) -> bool:
        try:
            with open(path, "rb") as fh:
                head = fh.read(132)
        except OSError:
            return False
        if len(head) >= 132 and head[128:132] == b"DICM":
            return True
        return path.suffix.lower() in _DICOM_SUFFIXES and looks_like_dicom(head)

    supports_transcode = True

    def read(self, path: Path, transcode: bool = False) -> Payload:
        """``transcode``: decode lossless compressed syntaxes and code them as voxels; such a
        file restores as an uncompressed (Explicit VR Little Endian) file (module docstring)."""
        path = Path(path)
        if path.is_dir():
            entries, kind = _walk(path), "dir"
        elif path.is_file():
            entries, kind = [(path.name, path)], "file"
        else:
            raise UnsupportedInputError(f"{path}: no such file or folder")
        files, members, groups = [], {}, {}
        for rel, p in entries:
            try:
                data = p.read_bytes()
            except OSError as exc:
                raise UnsupportedInputError(f"{p}: cannot read ({exc.strerror or exc})") from None
            entry = {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            files.append(entry)
            got = _classify(rel, data)
            if transcode and isinstance(got, str) and got.startswith("compressed transfer syntax"):
                got = self._transcoded(rel, data, entry, got)
            if isinstance(got, str):
                entry["verbatim"] = got
                members[rel] = data
            else:
                got.index = len(files) - 1
                groups.setdefault(_group_key(got), []).append(got)
        volumes, series, blob = [], [], bytearray()
        for group in groups.values():
            volumes.append(self._build_series(group, files, series, blob, len(volumes)))
        if blob:
            members[HEADERS_MEMBER] = bytes(blob)
        meta = {"format": self.name, "version": _META_VERSION, "input": kind, "name": path.name,
                "files": files, "series": series}
        return Payload(volumes, members, meta)

    @staticmethod
    def _transcoded(rel: str, data: bytes, entry: dict, reason: str):
        """The :class:`_Image` of the uncompressed rewrite of ``data`` (``entry`` then describes
        the rewritten file), or the reason the original stays verbatim."""
        got = _transcode(data)
        if isinstance(got, str):
            return f"{reason}; {got}"
        new, uid = got
        image = _classify(rel, new)
        if isinstance(image, str):
            return f"{reason}; not transcoded: decoded file would be verbatim too ({image})"
        entry.update({"size": len(new), "sha256": hashlib.sha256(new).hexdigest(),
                      "transcoded_from": uid, "original_size": len(data),
                      "original_sha256": entry["sha256"]})
        return image

    @staticmethod
    def _build_series(group: list, files: list, series: list, blob: bytearray, vol_index: int):
        first = group[0]
        if first.mosaic:
            ordered, tz = sorted(group, key=lambda im: (im.instance, im.rel)), None
            units = [im.unit() for im in ordered]
            vol = np.stack([u for u, _ in units]) if len(units) > 1 else units[0][0]
            layout = "mosaic"
        else:
            ordered, tz = _order(group)
            units = [im.unit() for im in ordered]
            vol = np.concatenate([u for u, _ in units])
            layout = "stack"
            if tz is not None:
                vol = vol.reshape(tz + vol.shape[1:])
        for im, (_, pad) in zip(ordered, units):
            entry = files[im.index]
            end = im.start + im.nbytes
            entry["series"] = len(series)
            entry["dtype"] = im.dtype.str
            entry["head"] = [len(blob), im.start]
            blob += im.data[: im.start]
            entry["tail"] = [len(blob), len(im.data) - end]
            blob += im.data[end:]
            if im.mosaic:
                entry["pad"] = [len(blob), len(pad)]
                blob += pad
        series.append({
            "uid": first.series_uid, "modality": first.modality, "layout": layout,
            "volume": vol_index, "shape": list(vol.shape), "dtype": vol.dtype.name,
            "rows": first.rows, "cols": first.cols, "mosaic": first.mosaic, "grid": first.grid,
            "frames": [im.frames for im in ordered], "files": [im.index for im in ordered],
        })
        return vol

    def _rebuild(self, payload: Payload) -> list[tuple[str, bytes]]:
        """Every file's bytes, each checked against its recorded size and SHA-256."""
        meta = payload.meta
        try:
            files, series = meta["files"], meta["series"]
            restored = [None] * len(files)
            blob = payload.members.get(HEADERS_MEMBER, b"")
            for s in series:
                self._restore_series(s, files, payload, blob, restored)
            for i, entry in enumerate(files):
                if "verbatim" in entry:
                    restored[i] = payload.members[entry["path"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise CorruptStreamError(
                f"DICOM archive metadata is inconsistent ({type(exc).__name__}: {exc})") from None
        for entry, data in zip(files, restored):
            if data is None or len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise CorruptStreamError(
                    f"{entry['path']}: restored file does not match the original (SHA-256 mismatch)")
        return [(entry["path"], data) for entry, data in zip(files, restored)]

    def verify(self, payload: Payload) -> None:
        """Rebuild every file in memory and check it against its SHA-256."""
        self._rebuild(payload)

    def write(self, payload: Payload, out: Path) -> list[Path]:
        """Restore the file (or the folder's files under ``out``); everything is checked before
        anything is written, so a damaged archive leaves no half-restored study."""
        out = Path(out)
        if payload.meta.get("input") != "file":  # paths first: a crafted archive fails fast
            _folder_targets(out, [f.get("path") if isinstance(f, dict) else None
                                  for f in payload.meta.get("files") or []])
        restored = self._rebuild(payload)
        if payload.meta.get("input") == "file":
            if len(restored) != 1:
                raise CorruptStreamError("DICOM archive of a single file lists several files")
            out.write_bytes(restored[0][1])
            return [out]
        targets = _folder_targets(out, [rel for rel, _ in restored])
        for target, (_, data) in zip(targets, restored):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return targets

    @staticmethod
    def _restore_series(s: dict, files: list, payload: Payload, blob: bytes, restored: list) -> None:
        vol = np.asarray(payload.volumes[s["volume"]])
        if list(vol.shape) != list(s["shape"]):
            raise CorruptStreamError(f"DICOM series {s['uid']}: volume shape {list(vol.shape)} != {s['shape']}")
        rows, cols = s["rows"], s["cols"]
        if s["layout"] == "mosaic":
            g, n = s["grid"], s["mosaic"]
            units = vol.reshape(-1, n, rows // g, cols // g)
        else:
            units = vol.reshape(-1, rows, cols)
        z = 0
        for fi, frames in zip(s["files"], s["frames"]):
            entry = files[fi]
            dtype = np.dtype(entry["dtype"])
            ho, hl = entry["head"]
            to, tl = entry["tail"]
            if s["layout"] == "mosaic":
                po, pl = entry["pad"]
                tiles = np.concatenate([units[z].astype(dtype),
                                        np.frombuffer(blob[po : po + pl], dtype).reshape(-1, rows // g, cols // g)])
                pixels = tiles.reshape(g, g, rows // g, cols // g).swapaxes(1, 2).astype(dtype).tobytes()
                z += 1
            else:
                pixels = units[z : z + frames].astype(dtype).tobytes()
                z += frames
            restored[fi] = b"".join([blob[ho : ho + hl], pixels, blob[to : to + tl]])

    def default_output(self, payload: Payload, archive: Path) -> Path:
        archive = Path(archive)
        name = strip_archive_suffix(archive)
        if name == archive.name:
            name = plain_file_name(payload.meta.get("name") or "restored", "output name")
        return archive.with_name(name)

    def outputs(self, meta: dict, out: Path) -> list[Path]:
        """``out`` (the file, or the folder holding the study), its member paths checked."""
        if meta.get("input") != "file":
            _folder_targets(Path(out), [f.get("path") if isinstance(f, dict) else None
                                        for f in meta.get("files") or []])
        return [Path(out)]

    def storage_notes(self, meta: dict) -> list[dict]:
        """Files stored whole (not coded as voxels), grouped by why: ``{"count", "reason",
        "kind"}`` with kind ``compressed`` (``transcode`` would code lossless ones), ``colour``
        or ``other``; the caller words the advice for its own interface."""
        groups: dict[str, dict] = {}
        for f in meta.get("files") or []:
            reason = str(f.get("verbatim", "")) if isinstance(f, dict) else ""
            if not reason or reason == "not DICOM":
                continue
            key = reason
            kind = ("compressed" if key.startswith("compressed transfer syntax") and ";" not in key
                    else "colour" if key.startswith("colour") else "other")
            groups.setdefault(key, {"count": 0, "reason": key, "kind": kind})["count"] += 1
        return list(groups.values())

    def describe(self, meta: dict) -> list[str]:
        files, series = meta.get("files", []), meta.get("series", [])
        verbatim = [f for f in files if "verbatim" in f]
        transcoded = [f for f in files if "transcoded_from" in f]
        what = "folder" if meta.get("input") == "dir" else "file"
        lines = [f"DICOM {what} '{meta.get('name', '')}': {len(files)} file(s), {len(series)} series "
                 f"coded as volumes, {len(verbatim)} file(s) stored verbatim"
                 + (f", {len(transcoded)} transcoded" if transcoded else "")]
        for i, s in enumerate(series):
            dims = "x".join(str(d) for d in s.get("shape", []))
            kind = {"mosaic": "Siemens mosaic, un-tiled", "stack": "slices"}.get(s.get("layout"), s.get("layout"))
            lines.append(f"  series {i + 1}: {s.get('modality') or '?'} {dims} {s.get('dtype')} ({kind}), "
                         f"{len(s.get('files', []))} file(s), uid {s.get('uid') or '-'}")
        for f in transcoded[:_DESCRIBE_MAX]:
            lines.append(f"  transcoded: {f['path']} (from {_syntax_name(f['transcoded_from'])}; "
                         "restores as Explicit VR Little Endian)")
        if len(transcoded) > _DESCRIBE_MAX:
            lines.append(f"  ... and {len(transcoded) - _DESCRIBE_MAX} more transcoded file(s)")
        for f in verbatim[:_DESCRIBE_MAX]:
            lines.append(f"  verbatim: {f['path']} ({f['verbatim']})")
        if len(verbatim) > _DESCRIBE_MAX:
            lines.append(f"  ... and {len(verbatim) - _DESCRIBE_MAX} more verbatim file(s)")
        return lines


def _syntax_name(uid) -> str:
    try:
        name = _pydicom().uid.UID(str(uid)).name
    except Exception:  # noqa: BLE001 (describe must not fail on odd metadata)
        name = ""
    return f"{name} [{uid}]" if name and name != str(uid) else str(uid)


ADAPTER = DicomAdapter()
