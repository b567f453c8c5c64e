"""The one ``Operator`` interface, and ``MaskingOperator``, the template of mask-based ones.

Every operator is a small class with a typed config dataclass, registered by name::

    @register
    class HpssOperator(MaskingOperator):
        name = "hpss"
        Config = HpssConfig                      # a frozen dataclass (StftParams for STFT ones)

        @property
        def stem_names(self): ...
        def estimate(self, spec, sr): ...        # magnitude estimate of each stem

``get_operator("hpss", margin=2.0)`` validates the parameters against ``HpssConfig`` and
resolves the resources they name (:meth:`Operator.make_config`; every mistake is an
``OperatorConfigError`` naming the parameter). A :class:`MaskingOperator` implements only
:meth:`~MaskingOperator.estimate`; the path

    audio -> Analysis (STFT) -> magnitude estimates -> masks -> inverse STFT -> stems

is written once, in :meth:`MaskingOperator.separate` and :mod:`sepops.masks`. Operators that
do not work by masking an STFT (ICA, the chunked U-Net) implement ``separate`` themselves.
"""
from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from . import masks as _masks
from . import resources
from .config import build_config
from .errors import OperatorConfigError, ResourceNotFoundError
from .registry import get_operator, list_operators, operator_class, register
from .spectral import Analysis, StftConfig

if TYPE_CHECKING:
    from .blocks import BlockContext
    from .stream import AudioStream

__all__ = [
    "MaskingOperator",
    "Operator",
    "OperatorConfigError",
    "StftParams",
    "get_operator",
    "list_operators",
    "operator_class",
    "register",
]


@dataclass(frozen=True)
class StftParams:
    """The STFT parameters of an operator config, declared once.

    Config dataclasses of STFT operators derive from it and restate a default only where
    theirs differs (``n_fft: int = 5120``). ``n_fft = 0`` means automatic (the operator
    picks per sample rate) for configs that set ``automatic_stft``; ``hop_length = 0`` then
    means a quarter of ``n_fft``.

    n_fft : STFT window and FFT length, samples at ``stft_rate``.
    hop_length : STFT hop, samples at ``stft_rate``.
    window : STFT window (a scipy.signal.get_window name: hann, hamming, blackman ...).
    stft_rate : the sample rate n_fft and hop_length are counted at, Hz; at another rate both scale with it, so the analysis spans the same time and frequency whatever the input's rate (null: samples at each input's own rate).
    """

    n_fft: int = 2048
    hop_length: int = 512
    window: str = "hann"
    stft_rate: int | None = 22050
    #: Whether ``n_fft = 0`` (and ``hop_length = 0``) mean "automatic".
    automatic_stft: ClassVar[bool] = False

    def __post_init__(self):
        if self.automatic_stft:
            if self.n_fft == 0:
                if self.hop_length:
                    raise ValueError("give n_fft together with hop_length (0: automatic)")
                return
            if self.n_fft < 0 or self.hop_length < 0:
                raise ValueError("n_fft and hop_length must be >= 0 (0: automatic)")
        self.stft()

    def stft(self) -> StftConfig:
        """The settings as a checked :class:`StftConfig` (``hop_length`` 0: ``n_fft // 4``)."""
        hop = self.hop_length or (self.n_fft // 4 if self.automatic_stft else 0)
        return StftConfig(self.n_fft, hop, self.window)

    def stft_at(self, sr: int) -> StftConfig:
        """:meth:`stft` at sample rate ``sr``: ``n_fft`` scaled by ``sr / stft_rate`` (up to
        the next size the FFT is fast at, < 1 % more) and ``hop_length`` by the same factor:
        the same window in seconds and bins in hertz at any rate (defaults: 2048 and 512 at
        22.05 kHz, 4096 and 1024 at 44.1 kHz, 4500 and 1125 at 48 kHz)."""
        from scipy.fft import next_fast_len

        cfg = self.stft()
        if not self.stft_rate or sr == self.stft_rate:
            return cfg
        n_fft = max(16, next_fast_len(2 * round(cfg.n_fft * sr / self.stft_rate / 2), real=True))
        n_fft += n_fft % 2
        hop = max(1, round(cfg.hop_length * n_fft / cfg.n_fft))
        return StftConfig(n_fft, hop, cfg.window)


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
    #: True when ``__init__`` loads what :meth:`check_resources` checks (a model file) and
    #: raises the same errors: building the operator then skips the check, which would
    #: load the model a second time.
    loads_resources_when_built: ClassVar[bool] = False
    #: ``(parameter, kind)`` pairs: the config parameters that name a shipped resource, with
    #: its kind in :func:`sepops.resources.resolve` (``(("dictionary", "nmf_dictionary"),)``);
    #: the default :meth:`check_resources` resolves each one that is set.
    resource_params: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, config: Any = None, /, **params: Any):
        if config is None:
            cls = type(self)
            config = (build_config(cls.Config, params, operator=cls.name) if cls.loads_resources_when_built
                      else cls.make_config(**params))
        elif params:
            config = dataclasses.replace(config, **params)
        self.config = config

    @classmethod
    def make_config(cls, **params: Any) -> Any:
        """Validate ``params`` into a ``Config`` and resolve the resources it names.

        Raises
        ------
        OperatorConfigError
            Unknown parameter (listing the valid ones), wrong type or value, or a resource
            (dictionary, model) that does not exist (listing the shipped ones).
        """
        config = build_config(cls.Config, params, operator=cls.name)
        cls.check_resources(config)
        return config

    @classmethod
    def check_resources(cls, config: Any) -> None:
        """Raise ``OperatorConfigError`` naming the parameter if a resource it names is
        missing: by default, ``ResourceNotFoundError`` for each of :attr:`resource_params`
        that is set and does not resolve (none: a no-op)."""
        for param, kind in cls.resource_params:
            value = getattr(config, param)
            if value is None:
                continue
            try:
                resources.resolve(kind, value)
            except ResourceNotFoundError as exc:
                raise ResourceNotFoundError(f"operator {cls.name!r} parameter {param!r}: {exc}") from None

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

    def block_context(self, sr: int) -> BlockContext | None:
        """How the operator separates a long track in blocks
        (:func:`sepops.blocks.separate_blocks`): a :class:`sepops.blocks.BlockContext` of the
        input it needs each side of a block, the grid blocks start on and the cross-fade
        between neighbouring blocks (0: its output in a block equals the whole-signal result).
        ``None`` (the default): the operator needs the whole track, or, for an operator with
        a global model, fitting to it first (:meth:`fit_stream`)."""
        return None

    @property
    def works_in_blocks(self) -> bool:
        """Whether a track of any length can be separated in blocks, in bounded memory (the
        class overrides :meth:`block_context`)."""
        return type(self).block_context is not Operator.block_context

    def fit_stream(self, passes: Callable[[], AbstractContextManager[AudioStream]]) -> Operator:
        """The operator to run block by block over a stream.

        Operators with a global model (ICA's unmixing matrix) fit it here, reading the stream
        as often as they need (each call of ``passes`` opens it again from the start), in
        memory bounded by the block length, and return a copy with the model fixed, whose
        :meth:`block_context` is not ``None``. The default returns the operator itself.
        """
        return self

    def separate_block(self, audio: np.ndarray, sr: int, *, keep: tuple[int, int]) -> dict[str, np.ndarray]:
        """:meth:`separate` for a block with its context: only samples ``keep[0]:keep[1]``
        of the stems are used, so an operator may skip work for the rest (REPET-SIM models
        only those frames). The default separates all of ``audio``."""
        return self.separate(audio, sr)

    def stft_config_for(self, sr: int) -> StftConfig:
        """The STFT used at sample rate ``sr``: the config's, scaled to ``sr`` from its
        ``stft_rate`` (:meth:`StftParams.stft_at`)."""
        c = self.config
        return c.stft_at(sr) if isinstance(c, StftParams) else self.stft_config()

    def stft_config(self) -> StftConfig:
        """The STFT this operator analyses with (at its config's settings, in samples at
        its ``stft_rate``)."""
        c = self.config
        if isinstance(c, StftParams):
            return c.stft()
        # A config that declares the STFT fields itself (an operator written elsewhere).
        return StftConfig(getattr(c, "n_fft", 2048), getattr(c, "hop_length", 512), getattr(c, "window", "hann"))

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


class MaskingOperator(Operator):
    """Template of the operators that separate by masking the mixture STFT.

    ``separate`` = STFT (shared through ``analysis``) -> :meth:`estimate` -> masks ->
    inverse STFT (:func:`sepops.masks.stems_from_estimates`). Subclasses implement only
    :meth:`estimate`, and :meth:`stft_config_for` when their STFT depends on the rate otherwise
    than through ``stft_rate``. How
    estimates become masks comes from the config's ``mask``, ``power`` and, where present,
    ``margin``, ``residual`` and ``wiener_iterations`` (:meth:`mask_settings`).
    """

    def mask_settings(self) -> _masks.MaskSettings:
        c = self.config
        return _masks.MaskSettings(
            kind=c.mask,
            power=c.power,
            margin=getattr(c, "margin", 1.0),
            residual=getattr(c, "residual", False),
            wiener_iterations=getattr(c, "wiener_iterations", 0),
        )

    @abstractmethod
    def estimate(self, spec: np.ndarray, sr: int, **inputs: Any) -> dict[str, np.ndarray]:
        """Magnitude estimate of each stem.

        Parameters
        ----------
        spec : np.ndarray, complex64, shape (channels, bins, frames)
            The mixture STFT at :meth:`stft_config_for` ``(sr)``. Read-only: it may be shared
            with other operators through the track's ``Analysis``.
        sr : int
        **inputs
            What the operator's ``separate`` was given beyond the audio (the oracles' true
            ``references``).

        Returns
        -------
        dict of stem -> np.ndarray, non-negative, shape (channels, bins, frames) or
        (bins, frames), in the order of :attr:`stem_names` (without a margin residual,
        which the masks add). Only the ratios between stems matter to soft masks. The
        arrays must be the operator's own: the masks are written over them.
        """

    def separate(
        self, audio: np.ndarray, sr: int, *, analysis: Analysis | None = None, **inputs: Any
    ) -> dict[str, np.ndarray]:
        an = self._analysis(audio, sr, analysis)
        cfg = self.stft_config_for(sr)
        estimates = self.estimate(an.stft(cfg), sr, **inputs)
        s = self.mask_settings()
        return _masks.stems_from_estimates(
            an, cfg, estimates, mask=s.kind, power=s.power, wiener_iterations=s.wiener_iterations,
            margin=s.margin, residual=s.residual, overwrite_estimates=True,
        )
