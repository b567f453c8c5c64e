"""Resources the operators load: NMF dictionaries and U-Net models, by shipped name or by URI.

Shipped resources live inside the package, in ``sepops/models/``::

    models/nmf/<name>.npz            NMF dictionaries    (kind "nmf_dictionary")
    models/unet_<name>/config.json   U-Net model folders (kind "unet_model")

:func:`resolve` turns what a user wrote (a shipped name, a local path, any fsspec URI) into
the URI to load, or raises :class:`~sepops.errors.ResourceNotFoundError` listing the shipped
names. Operators resolve their resources when their config is validated, so a misspelt name
stops a job before it starts rather than on its workers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ResourceNotFoundError

__all__ = ["KINDS", "MODELS_DIR", "resolve", "shipped"]

MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class _Kind:
    description: str
    #: Shipped entry of ``name``, relative to MODELS_DIR.
    pattern: str
    #: File that must exist inside a folder resource ("" for file resources).
    marker: str = ""
    #: Whether it loads from any fsspec URI (else: a local path only).
    remote: bool = True

    def shipped_path(self, name: str) -> Path:
        return MODELS_DIR / self.pattern.format(name=name)


KINDS = {
    "nmf_dictionary": _Kind("NMF dictionary", "nmf/{name}.npz"),
    "unet_model": _Kind("U-Net model", "unet_{name}", marker="config.json", remote=False),
}


def _kind(kind: str) -> _Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown resource kind {kind!r}; kinds: {', '.join(KINDS)}") from None


def shipped(kind: str) -> list[str]:
    """Names of the shipped resources of ``kind`` ("nmf_dictionary" or "unet_model"), sorted."""
    k = _kind(kind)
    prefix, suffix = k.pattern.split("{name}")
    names = []
    for p in MODELS_DIR.glob(k.pattern.replace("{name}", "*")):
        rel = p.relative_to(MODELS_DIR).as_posix()
        if not k.marker or (p / k.marker).is_file():
            names.append(rel[len(prefix) : len(rel) - len(suffix)])
    return sorted(names)


def _is_name(value: str) -> bool:
    return "/" not in value and "\\" not in value and "://" not in value


def resolve(kind: str, name_or_uri: str) -> str:
    """The URI to load for a shipped name, a local path or an fsspec URI.

    A bare name (no ``/``) is looked up among the shipped resources first; anything else,
    and a name that is not shipped, must exist as a path or URI (NMF dictionaries load from
    any fsspec URI, U-Net models from a local folder).

    Raises
    ------
    ResourceNotFoundError
        Nothing of that name exists; the message lists the shipped names.
    """
    k = _kind(kind)
    value = str(name_or_uri)
    if _is_name(value):
        path = k.shipped_path(value)
        if path.exists() and (not k.marker or (path / k.marker).is_file()):
            return str(path)
    names = ", ".join(shipped(kind)) or "none"
    if "://" in value and not k.remote:
        raise ResourceNotFoundError(
            f"{k.description} {value!r}: only a shipped name or a local folder can be loaded; shipped: {names}"
        )
    if _exists(value, k.marker):
        return str(Path(value).expanduser()) if "://" not in value else value
    raise ResourceNotFoundError(f"{k.description} {value!r} not found; shipped: {names}")


def _exists(uri: str, marker: str) -> bool:
    if "://" not in uri:
        p = Path(uri).expanduser()
        return (p / marker).is_file() if marker else p.is_file()
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
        return fs.exists(f"{path.rstrip('/')}/{marker}" if marker else path)
    except Exception:  # noqa: BLE001 - unreachable store, missing credentials: not usable either
        return False
