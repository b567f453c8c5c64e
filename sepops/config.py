"""Operator parameters: typed config dataclasses built from loose values (YAML, ``--set``).

:func:`build_config` checks names and types against the dataclass's annotations, once, for
every operator and for the catalog job's own settings: ``int``, ``float``, ``bool``, ``str``,
``Literal[...]`` (the allowed values), ``X | None``, and ``tuple``/``list`` of those. Strings
are parsed as a command line would give them (``"31"``, ``"true"``, ``"a,b"``). Range checks
that annotations cannot express live in each dataclass's ``__post_init__``.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

import numpy as np

from .errors import OperatorConfigError

__all__ = ["build_config", "coerce"]


def coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as type ``tp``; ``where`` names the parameter in the error message.

    Raises
    ------
    OperatorConfigError
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, where)
            except OperatorConfigError:
                pass
        raise OperatorConfigError(f"{where}: {value!r} does not match {tp}")
    if origin is Literal:
        if value in args:
            return value
        raise OperatorConfigError(f"{where}: {value!r} is not one of {list(args)}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise OperatorConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return origin(coerce(v, inner, where) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise OperatorConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise OperatorConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, (int, np.integer)):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise OperatorConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise OperatorConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(value, (int, float, np.number)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise OperatorConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise OperatorConfigError(f"{where}: expected a string, got {value!r}")
    return value


def build_config(config_cls: type, params: dict[str, Any], *, operator: str = "") -> Any:
    """Validate ``params`` against a config dataclass and build it.

    Raises
    ------
    OperatorConfigError
        For unknown keys (listing the valid ones), wrong types, or values the dataclass's
        ``__post_init__`` rejects.
    """
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    prefix = f"operator {operator!r}" if operator else config_cls.__name__
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise OperatorConfigError(
            f"{prefix}: unknown parameter(s) {', '.join(unknown)}; "
            f"valid parameters: {', '.join(fields)}"
        )
    values = {k: coerce(v, hints[k], f"{prefix} parameter {k!r}") for k, v in params.items()}
    try:
        return config_cls(**values)
    except (ValueError, TypeError) as exc:
        raise OperatorConfigError(f"{prefix}: {exc}") from exc
