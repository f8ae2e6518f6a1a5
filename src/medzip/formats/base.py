"""What a file format adapter hands to the codec, and the adapter registry.

A file (or a folder of files) becomes a :class:`Payload`: integer volumes that the voxel codec
compresses, plus verbatim byte members (headers, DICOM attributes, non-image files) that are
stored with a general-purpose codec, plus a JSON-able ``meta`` dict that tells the same adapter
how to rebuild the original bytes.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import CorruptStreamError, UnsupportedInputError

ARCHIVE_SUFFIX = ".mzp"
TEMP_SUFFIX = ".medzip-tmp"  # staging files/folders beside an output; see files.py


@dataclass
class Payload:
    volumes: list[np.ndarray]
    members: dict[str, bytes] = field(default_factory=dict)
    meta: dict = field(default_factory=lambda: {"format": "array"})


class FormatAdapter(Protocol):
    name: str  # stored as payload.meta["format"]

    def can_read(self, path: Path) -> bool: ...

    def read(self, path: Path) -> Payload: ...

    def write(self, payload: Payload, out: Path) -> list[Path]:
        """Rebuild the original file(s) at ``out``; raise MedzipError if any hash mismatches."""
        ...

    def default_output(self, payload: Payload, archive: Path) -> Path:
        """Output path used by ``medzip decompress`` when ``-o`` is not given."""
        ...

    # Optional: ``outputs(meta, out) -> list[Path]``, every path ``write`` creates for ``out``
    # when that is more than ``out`` itself (a detached data file), known from ``meta`` alone so
    # that every output is checked before anything is decoded or written.


def strip_archive_suffix(archive) -> str:
    """``x.nii.gz.mzp`` -> ``x.nii.gz``; a name without the suffix is returned unchanged."""
    name = Path(archive).name
    n = len(ARCHIVE_SUFFIX)
    return name[:-n] if name.lower().endswith(ARCHIVE_SUFFIX) and len(name) > n else name


def plain_file_name(name, what: str) -> str:
    """``name`` if it is a plain, visible file name in one folder; else CorruptStreamError.

    Names that come from an archive (a detached data file, the original file name) decide where
    a restore writes: no folders, no ``..``, no hidden files (``.bashrc``), no NUL, no names
    that look like medzip's own staging files.
    """
    ok = (isinstance(name, str) and 0 < len(name.encode("utf-8", "surrogateescape")) <= 255
          and not name.startswith(".") and not any(c in name for c in "/\\\0")
          and not name.endswith(TEMP_SUFFIX))
    if not ok:
        raise CorruptStreamError(f"archive names an unsafe {what} {name!r}: only a plain file "
                                 "name in the output's folder may be written")
    return name


# Modules defining ``ADAPTER``; probed in this order by ``adapter_for_path``.
_ADAPTER_MODULES = ["dicom", "nifti", "npy", "nrrd", "metaimage", "stored"]


def adapters() -> list[FormatAdapter]:
    return [importlib.import_module(f"{__package__}.{m}").ADAPTER for m in _ADAPTER_MODULES]


def adapter_for_path(path: Path) -> FormatAdapter:
    for adapter in adapters():
        if adapter.can_read(path):
            return adapter
    raise UnsupportedInputError(f"{path}: unrecognised input format (expected a DICOM file or "
                                f"folder, .npy, .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd)")


def adapter_by_name(name: str) -> FormatAdapter:
    for adapter in adapters():
        if adapter.name == name:
            return adapter
    raise UnsupportedInputError(f"archive holds format '{name}', which this medzip cannot restore")
