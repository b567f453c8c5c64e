"""The exceptions of sepops, under one root, as librosa has ``LibrosaError``.

``except sepops.SepopsError`` catches every error sepops raises on purpose: unusable audio
(:class:`AudioError`), a bad operator name, parameter or resource (:class:`OperatorConfigError`,
:class:`ResourceNotFoundError`), and a malformed model folder (:class:`CheckpointError`).
Bugs and resource exhaustion (``MemoryError``) stay what Python makes them.
"""
from __future__ import annotations

import re

__all__ = ["AudioError", "CheckpointError", "OperatorConfigError", "ResourceNotFoundError", "SepopsError"]


class SepopsError(Exception):
    """Root of every error sepops raises on purpose."""


class AudioError(SepopsError):
    """A file could not be used as audio. ``kind`` is a short machine-readable cause.

    Kinds: ``not_found``, ``unreadable``, ``empty``, ``unsupported``, ``non_finite``,
    ``too_long``, ``invalid`` (and ``too_short``, raised by the catalog job).
    """

    def __init__(self, uri: str, kind: str, message: str):
        self.uri = uri
        self.kind = kind
        self.message = without_object_reprs(message)
        super().__init__(f"{uri}: {self.message}")


def without_object_reprs(message: str) -> str:
    """The decoder's cause without the in-memory file object it was given: libsndfile's
    ``Error opening <_io.BytesIO object at 0x7f...>: Format not recognised.`` becomes
    ``Format not recognised.`` (a row names its URI already; an address helps nobody)."""
    message = re.sub(r"Error opening <[^<>]* at 0x[0-9a-fA-F]+>:\s*", "", message)
    return re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "the file", message)


class OperatorConfigError(SepopsError, ValueError):
    """An operator name, parameter, or a resource a parameter names, is not valid."""


class ResourceNotFoundError(OperatorConfigError):
    """A shipped resource name or a path / URI (an NMF dictionary, a U-Net model) names nothing.

    The message lists the shipped names of that kind.
    """


class CheckpointError(SepopsError, ValueError):
    """A model file or folder is missing, malformed, unsafe, or does not fit its config.

    ``param`` names the operator parameter at fault when the loader knows it better than
    its caller (a model name not found in a folder is the name's fault, not the folder's).
    """

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.param = param
