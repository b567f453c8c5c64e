"""The one ``Operator`` interface and the registry of operators by name.

An operator is a small class with a typed config dataclass::

    @register
    class HpssOperator(Operator):
        name = "hpss"
        Config = HpssConfig

        @property
        def stem_names(self): ...
        def separate(self, audio, sr, *, analysis=None): ...

``get_operator("hpss", kernel_size=31)`` validates the parameters against ``HpssConfig``
(unknown names and wrong types raise ``OperatorConfigError`` listing the valid ones).
"""
from __future__ import annotations

import dataclasses
import json
import typing
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np

from .spectral import Analysis, StftConfig

__all__ = [
    "Operator",
    "OperatorConfigError",
    "build_config",
    "get_operator",
    "list_operators",
    "operator_class",
    "register",
]

_REGISTRY: dict[str, type[Operator]] = {}


class OperatorConfigError(ValueError):
    """An operator name or parameter is not valid."""


class Operator(ABC):
    """Base class of every separation operator.

    Subclasses set ``name`` and ``Config`` (a dataclass) and implement ``stem_names`` and
    ``separate``. Instances are cheap to call repeatedly: heavy state (models, dictionaries)
    is loaded once in ``__init__``.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    #: True for operators that need the true stems (oracle masks).
    needs_references: ClassVar[bool] = False

    def __init__(self, config: Any = None, **params: Any):
        if config is None:
            config = build_config(self.Config, params, operator=self.name)
        elif params:
            config = dataclasses.replace(config, **params)
        self.config = config

    @property
    @abstractmethod
    def stem_names(self) -> list[str]:
        """Names of the stems ``separate`` returns, in order."""

    @abstractmethod
    def separate(
        self, audio: np.ndarray, sr: int, *, analysis: Analysis | None = None
    ) -> dict[str, np.ndarray]:
        """Separate one track.

        Parameters
        ----------
        audio : np.ndarray, shape (channels, samples), float32
        sr : int
            Sample rate in Hz.
        analysis : Analysis, optional
            Shared STFT cache for this track (lets several operators reuse one STFT).

        Returns
        -------
        dict of str -> np.ndarray, each shaped like ``audio``
        """

    # --- helpers shared by STFT-domain operators -------------------------------------------
    def stft_config(self) -> StftConfig:
        c = self.config
        return StftConfig(
            getattr(c, "n_fft", 2048), getattr(c, "hop_length", 512), getattr(c, "window", "hann")
        )

    @staticmethod
    def _analysis(audio: np.ndarray, sr: int, analysis: Analysis | None) -> Analysis:
        audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        if analysis is not None and analysis.audio.shape == audio.shape and analysis.sr == sr:
            return analysis
        return Analysis(audio, sr)

    def params(self) -> dict[str, Any]:
        """The config as a JSON-friendly dict."""
        return {f.name: _jsonable(getattr(self.config, f.name)) for f in dataclasses.fields(self.config)}

    def params_json(self) -> str:
        return json.dumps(self.params(), sort_keys=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


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
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OperatorConfigError(
            f"unknown operator {name!r}; valid operators: {', '.join(sorted(_REGISTRY))}"
        ) from None


def get_operator(name: str, **params: Any) -> Operator:
    """Build a registered operator from keyword parameters.

    >>> op = get_operator("hpss", kernel_size=31, mask="soft")
    >>> stems = op.separate(audio, sr)
    """
    return operator_class(name)(**params)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except OperatorConfigError as exc:
                errors.append(str(exc))
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
        return origin(_coerce(v, inner, where) for v in value)
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
    values = {k: _coerce(v, hints[k], f"{prefix} parameter {k!r}") for k, v in params.items()}
    try:
        return config_cls(**values)
    except (ValueError, TypeError) as exc:
        raise OperatorConfigError(f"{prefix}: {exc}") from exc


def stems_from_estimates(
    analysis: Analysis,
    stft_config: StftConfig,
    estimates: dict[str, np.ndarray],
    *,
    mask: str = "soft",
    power: float = 1.0,
    wiener_iterations: int = 0,
) -> dict[str, np.ndarray]:
    """Turn per-stem magnitude estimates into time-domain stems.

    Masks (binary or soft, see :mod:`sepops.masks`) are applied to the mixture STFT and
    inverted; with ``wiener_iterations > 0`` a multichannel Wiener filter refines them.

    Parameters
    ----------
    estimates : dict of stem -> np.ndarray, shape (channels, bins, frames) or (bins, frames)

    Returns
    -------
    dict of stem -> np.ndarray, shape (channels, samples); stems sum to the mixture for
    binary and soft masks.
    """
    from . import masks as _masks

    spec = analysis.stft(stft_config)
    names = list(estimates)
    if wiener_iterations > 0:
        specs = _masks.wiener(spec, [estimates[n] for n in names], iterations=wiener_iterations)
    else:
        ms = _masks.masks([estimates[n] for n in names], kind=mask, power=power)
        # The masks sum to one and the STFT inverts exactly, so the last stem is the rest of
        # the mixture: one inverse STFT saved, and the stems sum to the mixture exactly.
        stems = {n: analysis.istft(m * spec, stft_config) for n, m in zip(names[:-1], ms)}
        stems[names[-1]] = analysis.audio - sum(stems.values()) if stems else analysis.audio.copy()
        return stems
    return {n: analysis.istft(s, stft_config) for n, s in zip(names, specs)}
