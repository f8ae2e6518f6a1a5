"""Exceptions whose message is a complete one-line explanation for the user.

The CLI prints ``str(error)`` and exits 1 for any :class:`MedzipError`; anything else is a bug.
"""


class MedzipError(Exception):
    """Base class: an expected failure with a user-facing message."""


class CorruptStreamError(MedzipError):
    """The compressed data is damaged, truncated, or not a medzip stream."""


class UnsupportedVersionError(CorruptStreamError):
    """The stream was written by a newer, incompatible format version."""


class UnsupportedInputError(MedzipError):
    """The input cannot be compressed (wrong dtype, unreadable file, ...)."""


class ModelMismatchError(MedzipError):
    """The stream needs a model that is not the one supplied / available."""
