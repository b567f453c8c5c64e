"""Oracle operators: ideal binary and ideal ratio masks computed from the true stems.

They are the ceiling against which blind operators are measured: the best any mask-based
method with the same STFT could do.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..base import Operator, register, stems_from_estimates
from ..spectral import Analysis, StftConfig


@dataclass(frozen=True)
class IdealMaskConfig:
    """``power`` is the exponent of the ratio mask (1: magnitude ratio, 2: Wiener-like)."""

    stems: tuple[str, ...] | None = None
    power: float = 1.0
    n_fft: int = 2048
    hop_length: int = 512
    window: str = "hann"

    def __post_init__(self):
        StftConfig(self.n_fft, self.hop_length, self.window)
        if self.power <= 0:
            raise ValueError(f"power must be > 0, got {self.power}")


class _IdealMaskOperator(Operator):
    Config = IdealMaskConfig
    needs_references = True
    _mask = "soft"

    @property
    def stem_names(self) -> list[str]:
        return list(self.config.stems or ())

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
        names = self.stem_names or list(references)
        an = self._analysis(audio, sr, analysis)
        cfg = self.stft_config()
        estimates = {}
        for n in names:
            ref = np.atleast_2d(np.asarray(references[n], dtype=np.float32))
            ref = np.broadcast_to(ref, an.audio.shape)
            estimates[n] = np.abs(Analysis(np.ascontiguousarray(ref), sr).stft(cfg))
        return stems_from_estimates(an, cfg, estimates, mask=self._mask, power=self.config.power)


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
