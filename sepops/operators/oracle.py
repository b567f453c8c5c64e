"""Oracle operators: ideal binary and ideal ratio masks computed from the true stems.

They are the ceiling against which blind operators are measured: the best any mask-based
method with the same STFT could do.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base import MaskingOperator, StftParams
from ..masks import MaskSettings
from ..registry import register
from ..spectral import Analysis


@dataclass(frozen=True)
class IdealMaskConfig(StftParams):
    """Parameters of the oracle operators.

    stems : the true stems' names, in order (default: those passed as references).
    power : exponent of the ratio mask (1: magnitude ratio, 2: Wiener-like).
    """

    stems: tuple[str, ...] | None = None
    power: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        if self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power}")


class _IdealMaskOperator(MaskingOperator):
    Config = IdealMaskConfig
    needs_references = True
    _mask = "soft"

    @property
    def stem_names(self) -> list[str]:
        return list(self.config.stems or ())

    def mask_settings(self) -> MaskSettings:
        return MaskSettings(kind=self._mask, power=self.config.power)

    def separate(
        self,
        audio: np.ndarray,
        sr: int,
        *,
        references: Mapping[str, np.ndarray] | None = None,
        analysis: Analysis | None = None,
    ) -> dict[str, np.ndarray]:
        """Separate with masks built from ``references`` (stem -> array shaped like ``audio``)."""
        if references is None:
            raise ValueError(f"operator {self.name!r} needs the true stems: pass references={{stem: array}}")
        return super().separate(audio, sr, analysis=analysis, references=references)

    def estimate(self, spec: np.ndarray, sr: int, *, references: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The true stems' magnitudes, at the mixture's STFT."""
        cfg = self.stft_config_for(sr)
        estimates = {}
        for n in self.stem_names or list(references):
            ref = np.atleast_2d(np.asarray(references[n], dtype=np.float32))
            ref = np.ascontiguousarray(np.broadcast_to(ref, (spec.shape[0], ref.shape[-1])))
            estimates[n] = np.abs(Analysis(ref, sr).stft(cfg))
        return estimates


@register
class IdealBinaryMaskOperator(_IdealMaskOperator):
    """Ideal binary mask (IBM): each bin goes to the stem with the largest true magnitude."""

    name = "ibm"
    _mask = "binary"


@register
class IdealRatioMaskOperator(_IdealMaskOperator):
    """Ideal ratio mask (IRM): ``|S_i|^p / sum_j |S_j|^p`` from the true stems."""

    name = "irm"
    _mask = "soft"
