"""Harmonic/percussive source separation by median filtering (HPSS).

Harmonic sounds are horizontal ridges in a magnitude spectrogram, percussive sounds are
vertical ones. A median filter along time keeps the ridges and removes the onsets (harmonic
enhancement); a median filter along frequency does the opposite. Comparing the two gives
per-bin masks (Fitzgerald 2010). A margin ``beta >= 1`` asks one estimate to beat the other
by that factor before a bin counts as harmonic or percussive; what neither claims is the
residual (Driedger, Müller & Disch 2014).

Kernels are given in physical units (seconds along time, hertz along frequency) and turned
into odd numbers of frames and bins for the signal's sample rate and STFT, so the same
settings mean the same thing at 8 kHz and at 96 kHz.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..base import MaskingOperator, StftParams
from ..blocks import BlockContext
from ..dsp import median_filter_axis, strided_time_median
from ..registry import register
from ..spectral import StftConfig

__all__ = ["HpssConfig", "HpssOperator", "hpss_estimates", "kernel_sizes"]


def _odd(n: float) -> int:
    n = max(1, round(n))
    return n if n % 2 else n + 1


def kernel_sizes(
    sr: int, stft: StftConfig, harmonic_kernel_s: float, percussive_kernel_hz: float
) -> tuple[int, int]:
    """Median-filter lengths in STFT units.

    Returns
    -------
    harmonic : int
        Odd number of frames spanning ``harmonic_kernel_s`` seconds (filter along time).
    percussive : int
        Odd number of bins spanning ``percussive_kernel_hz`` hertz (filter along frequency).
    """
    return (
        _odd(harmonic_kernel_s * sr / stft.hop_length),
        _odd(percussive_kernel_hz * stft.n_fft / sr),
    )


def hpss_estimates(
    mag: np.ndarray, harmonic_kernel: int, percussive_kernel: int, *, harmonic_stride: int = 1
) -> dict[str, np.ndarray]:
    """Harmonic and percussive magnitude estimates: median filters along time and frequency.

    Parameters
    ----------
    mag : np.ndarray, shape (..., bins, frames), non-negative
    harmonic_kernel, percussive_kernel : int
        Odd median-filter lengths along time (frames) and frequency (bins).
    harmonic_stride : int
        Take the harmonic (time) median on every n-th frame and interpolate between (see
        :func:`sepops.dsp.strided_time_median`); 1 is exact.

    Returns
    -------
    dict of {"harmonic", "percussive"} -> np.ndarray, float32, shape of ``mag``
        Their masks with a margin (:func:`sepops.masks.masks`) split the mixture.
    """
    mag = np.asarray(mag, dtype=np.float32)
    return {
        "harmonic": strided_time_median(mag, harmonic_kernel, harmonic_stride),
        "percussive": median_filter_axis(mag, percussive_kernel, axis=-2),
    }


@dataclass(frozen=True)
class HpssConfig(StftParams):
    """Settings of :class:`HpssOperator`.

    ``harmonic_kernel_s`` (seconds) and ``percussive_kernel_hz`` (hertz) set the median
    filters; ``kernel_size`` (frames and bins, librosa's convention) overrides both.
    ``channels="joint"`` computes one set of masks from the channel-mean magnitude and
    applies it to every channel (keeps the stereo image, costs the same for any channel
    count); ``"independent"`` filters each channel on its own.
    ``harmonic_stride`` takes the harmonic median on every n-th frame and interpolates
    between (1: exact). The harmonic median is the costliest step, and 2 halves it: the
    operator runs about 1.25x as fast, for 0.04 dB less on 32 rendered training loops
    (8.72 against 8.75 dB).
    A bin is harmonic where ``H > margin * P`` (binary), or by the soft mask of
    ``[H, margin * P]`` with exponent ``power``; likewise percussive. ``residual`` adds a
    third stem, what neither claims. Without it the residual is folded into the percussive
    stem: what is not clearly tonal is mostly the noisy part of drums, and this split scored
    best on drum + bass + melody loops.
    Defaults were tuned on rendered drum + bass + melody loops (not the validation set).

    mask : "soft" (ratio masks with exponent ``power``) or "binary".
    power : soft-mask exponent (2: Wiener-like).
    margin : a bin is harmonic where H > margin * P, percussive where P > margin * H (>= 1).
    residual : add a third stem, "residual", with what neither claims (else it goes to percussive).
    harmonic_kernel_s : length of the harmonic median filter along time, seconds.
    percussive_kernel_hz : height of the percussive median filter along frequency, hertz.
    kernel_size : both filters in frames and bins (librosa's convention); overrides the two above.
    channels : "joint" (one mask from the channel mean, for every channel) or "independent".
    harmonic_stride : take the harmonic median on every n-th frame and interpolate (1: exact).
    """

    mask: Literal["soft", "binary"] = "soft"
    power: float = 2.0
    margin: float = 2.0
    residual: bool = False
    harmonic_kernel_s: float = 0.45
    percussive_kernel_hz: float = 150.0
    kernel_size: int | None = None
    channels: Literal["joint", "independent"] = "joint"
    harmonic_stride: int = 2

    def __post_init__(self):
        super().__post_init__()
        if not self.harmonic_stride >= 1:
            raise ValueError(f"harmonic_stride must be an integer >= 1, got {self.harmonic_stride!r}")
        if not self.power > 0:
            raise ValueError(f"power must be > 0, got {self.power}")
        if not self.margin >= 1:
            raise ValueError(f"margin must be >= 1, got {self.margin}")
        if not (self.harmonic_kernel_s > 0 and self.percussive_kernel_hz > 0):
            raise ValueError(
                "harmonic_kernel_s and percussive_kernel_hz must be > 0, got "
                f"{self.harmonic_kernel_s} and {self.percussive_kernel_hz}"
            )
        if self.kernel_size is not None and (self.kernel_size < 1 or self.kernel_size % 2 == 0):
            raise ValueError(f"kernel_size must be an odd integer >= 1, got {self.kernel_size}")


@register
class HpssOperator(MaskingOperator):
    """Median-filtering harmonic/percussive separation with a margin.

    Stems ``harmonic`` and ``percussive``, plus ``residual`` with ``residual=True``; binary
    and soft masks sum to one, so the stems always sum to the mixture.

    References
    ----------
    .. [1] D. Fitzgerald, "Harmonic/percussive separation using median filtering",
       Proc. DAFx, 2010.
    .. [2] J. Driedger, M. Müller and S. Disch, "Extending harmonic-percussive separation of
       audio signals", Proc. ISMIR, 2014.

    Examples
    --------
    >>> op = get_operator("hpss", margin=2.0, mask="soft")
    >>> stems = op.separate(audio, sr)   # {"harmonic": ..., "percussive": ...}
    """

    name = "hpss"
    Config = HpssConfig

    @property
    def stem_names(self) -> list[str]:
        return ["harmonic", "percussive"] + (["residual"] if self.config.residual else [])

    def kernels(self, sr: int) -> tuple[int, int]:
        """(harmonic frames, percussive bins) used at sample rate ``sr``."""
        c = self.config
        if c.kernel_size is not None:
            return c.kernel_size, c.kernel_size
        return kernel_sizes(sr, self.stft_config_for(sr), c.harmonic_kernel_s, c.percussive_kernel_hz)

    def block_context(self, sr: int) -> BlockContext:
        # A block's first frames see zeros instead of the audio before it (half a window),
        # that error spreads through the harmonic median (half its span, on the strided
        # grid), and each output sample sums frames half a window away: that much context
        # makes a block's output the whole-signal one. Blocks start on the strided grid.
        cfg = self.stft_config_for(sr)
        stride = self.config.harmonic_stride
        harmonic, _ = self.kernels(sr)
        half_window = -(-cfg.n_fft // (2 * cfg.hop_length))
        coarse = max(1, harmonic // stride)
        reach = (coarse // 2 + 1) * stride if stride > 1 else harmonic // 2
        frames = 2 * half_window + reach + 2
        align = cfg.hop_length * stride
        return BlockContext(-(-frames * cfg.hop_length // align) * align, align)

    def estimate(self, spec: np.ndarray, sr: int) -> dict[str, np.ndarray]:
        if self.config.channels == "joint":
            # Channel-mean magnitude, summed channel by channel (no full-size temporary).
            mag = np.abs(spec[:1])
            for ch in spec[1:]:
                mag += np.abs(ch)
            mag *= np.float32(1.0 / spec.shape[0])
        else:
            mag = np.abs(spec)
        harmonic_kernel, percussive_kernel = self.kernels(sr)
        return hpss_estimates(mag, harmonic_kernel, percussive_kernel, harmonic_stride=self.config.harmonic_stride)
