"""Whole files stored as one member (zstd or xz), for inputs that no adapter codes smaller.

A tiny NIfTI, a DICOM structured report or a synthetic test image can cost more as a coded
payload (volume entries, per-file index, digests) than its bytes do under xz. The encoder
keeps this form when it is the smaller archive (``api.compress_smallest``); restoring writes
the bytes back, checked by the member's own check (docs/FORMAT.md, "stored files").
"""
from __future__ import annotations

from pathlib import Path

from ..errors import CorruptStreamError
from .base import Payload

MEMBER = "file"


def stored_payload(data: bytes) -> Payload:
    return Payload([], {MEMBER: bytes(data)}, {"format": "stored"})


class StoredAdapter:
    """Restores a stored file; never chosen for reading (``can_read`` is False): the encoder
    builds stored payloads itself when they are smaller."""

    name = "stored"

    def can_read(self, path: Path) -> bool:
        return False

    def read(self, path: Path) -> Payload:
        return stored_payload(Path(path).read_bytes())

    def _bytes(self, payload: Payload) -> bytes:
        if payload.volumes or set(payload.members) != {MEMBER}:
            raise CorruptStreamError("stored-file archive holds something other than one file")
        return payload.members[MEMBER]

    def write(self, payload: Payload, out: Path) -> list[Path]:
        data = self._bytes(payload)
        with open(out, "wb") as f:
            f.write(data)
        return [Path(out)]

    def verify(self, payload: Payload) -> None:
        """The member's check (done on decode) is the file's check: nothing else to compare."""
        self._bytes(payload)

    def default_output(self, payload: Payload, archive: Path) -> Path:
        name = Path(archive).name
        stem = name[:-4] if name.lower().endswith(".mzp") else name + ".out"
        return Path(archive).with_name(stem or "restored")

    def describe(self, meta: dict) -> list[str]:
        return ["file stored whole (raw, zstd or xz: smaller than coding its voxels)"]


ADAPTER = StoredAdapter()
