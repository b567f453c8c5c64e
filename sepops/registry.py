"""The registry of operators by name: ``@register``, ``get_operator``, ``list_operators``.

>>> import sepops
>>> sepops.list_operators()
['demucs', 'ensemble', 'hpss', 'ibm', 'ica', 'irm', 'nmf', 'repet', 'repet_sim', 'roformer', 'unet']
>>> op = sepops.get_operator("hpss", margin=2.0)

Each operator is one module of :mod:`sepops.operators` (``sepops/operators/<name>.py``, the
U-Net's in ``operators/unet.py``); importing that package registers them all.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from .errors import OperatorConfigError

if TYPE_CHECKING:
    from .base import Operator

__all__ = ["get_operator", "list_operators", "operator_class", "register"]

_REGISTRY: dict[str, type[Operator]] = {}


def register(cls: type[Operator]) -> type[Operator]:
    """Class decorator adding an operator to the registry under ``cls.name``."""
    if not dataclasses.is_dataclass(cls.Config):
        raise TypeError(f"{cls.__name__}.Config must be a dataclass")
    _REGISTRY[cls.name] = cls
    return cls


def _ensure_loaded() -> None:
    # Importing the operators package runs every @register.
    from . import operators  # noqa: F401


def list_operators() -> list[str]:
    """Names of all registered operators, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def operator_class(name: str) -> type[Operator]:
    """The operator class registered as ``name``.

    Raises
    ------
    OperatorConfigError
        Listing the registered names.
    """
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OperatorConfigError(
            f"unknown operator {name!r}; valid operators: {', '.join(sorted(_REGISTRY))}"
        ) from None


def get_operator(name: str, /, **params: Any) -> Operator:
    """Build a registered operator from keyword parameters.

    >>> op = get_operator("hpss", kernel_size=31, mask="soft")
    >>> stems = op.separate(audio, sr)
    """
    return operator_class(name)(**params)
