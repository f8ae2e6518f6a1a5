"""Argument types shared by ``medzip``'s command line and its sub-command modules (batch,
orthanc, bench, ...), so that those never import ``medzip.cli`` itself."""
from __future__ import annotations

import argparse

from .errors import MedzipError
from .predictors.registry import parse_level


def level_arg(text: str) -> int:
    """``1``..``9`` or a level name (``fast``, ``default``, ``strong``)."""
    try:
        return parse_level(text)
    except MedzipError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def threads_arg(text: str) -> int:
    """A worker count; 0 means every usable core."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a worker count >= 0, got '{text}'")
    return n
