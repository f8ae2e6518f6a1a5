"""Model files: versioned ``.npz`` archives of integer weights, identified in streams by
their SHA-256; the built-in ones ship in ``medzip/models`` (earlier versions beside the current
as ``<name>@<sha12>.npz`` so that streams coded with them keep decoding)."""
from __future__ import annotations

import hashlib
import io
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import ModelMismatchError, UnsupportedInputError

MODEL_FORMAT = 1


class ModelFile:
    """A versioned .npz of integer weights; its SHA-256 identifies it in streams."""

    def __init__(self, blob: bytes, origin: str):
        self.blob = blob
        self.sha256 = hashlib.sha256(blob).hexdigest()
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            self.meta = json.loads(bytes(arrays.pop("meta_json")).decode())
        except Exception as exc:  # any unreadable file is the user's input problem
            raise UnsupportedInputError(f"{origin}: not a medzip model file ({exc})") from None
        if self.meta.get("format") != MODEL_FORMAT or self.meta.get("kind") not in ("row-lstm", "paper"):
            raise UnsupportedInputError(f"{origin}: unsupported medzip model (format/kind)")
        self.name = self.meta["name"]
        self.arrays = arrays
        self.origin = origin


# Name -> the file encoders use now. Files of earlier versions stay in models/ as
# "<name>@<sha256 prefix>.npz" so that streams coded with them keep decoding.
BUILTIN_MODELS = {"medzip-lstm": "medzip-lstm.npz", "medzip-blend-lstm": "medzip-blend-lstm.npz",
                  "medzip-paper": "medzip-paper.npz"}


def _models_dir():
    return resources.files("medzip") / "models"


@lru_cache(maxsize=8)
def builtin_model(name: str) -> ModelFile:
    fname = BUILTIN_MODELS[name]
    ref = _models_dir() / fname
    if not ref.is_file():
        raise UnsupportedInputError(f"built-in model '{name}' is not installed ({fname} missing)")
    return ModelFile(ref.read_bytes(), f"built-in model {name}")


@lru_cache(maxsize=16)
def _builtin_by_sha(name: str, sha256: str) -> ModelFile | None:
    """Current or earlier built-in file of this name with this SHA-256, if shipped."""
    current = builtin_model(name)
    if current.sha256 == sha256:
        return current
    ref = _models_dir() / f"{name}@{sha256[:12]}.npz"
    if ref.is_file():
        old = ModelFile(ref.read_bytes(), f"built-in model {name} ({sha256[:12]})")
        if old.sha256 == sha256:
            return old
    return None


def load_model(spec: str) -> ModelFile:
    """A built-in model name, or a path to a model file."""
    if spec in BUILTIN_MODELS:
        return builtin_model(spec)
    path = Path(spec)
    if not path.is_file():
        raise UnsupportedInputError(
            f"unknown model '{spec}': not a built-in ({', '.join(BUILTIN_MODELS)}) nor a file")
    return ModelFile(path.read_bytes(), str(path))


def find_model(entry: dict, user_model: str | None = None) -> ModelFile:
    """Decoder side: the model named by the stream, checked by SHA-256 (the entry's field
    types are checked where the header is read: volume_codec._check_model_entry)."""
    want = entry.get("sha256")
    candidates = []
    if user_model:
        candidates.append(load_model(user_model))
    elif entry.get("name") in BUILTIN_MODELS and isinstance(want, str):
        found = _builtin_by_sha(entry["name"], want)
        if found is not None:
            return found
        candidates.append(builtin_model(entry["name"]))
    for m in candidates:
        if m.sha256 == want:
            return m
    have = f" (supplied model has SHA-256 {candidates[0].sha256[:12]}…)" if candidates else ""
    raise ModelMismatchError(
        f"stream was coded with model '{entry.get('name')}' SHA-256 {str(want)[:12]}…, which is "
        f"not available{have}; pass the same model file with --model")
