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
import scipy.ndimage

from ..base import Operator, register
from ..masks import _EPS, binary_masks
from ..spectral import Analysis, StftConfig
from .repet import median_of

__all__ = ["HpssConfig", "HpssOperator", "hpss_masks", "kernel_sizes", "median_filter_axis", "strided_time_median"]


def median_filter_axis(x: np.ndarray, size: int, axis: int = -1) -> np.ndarray:
    """Exact running median of odd length ``size`` along one axis, reflecting at the edges.

    Equals ``scipy.ndimage.median_filter(x, size=(1, ..., size, ..., 1), mode="reflect")``
    but runs about 7x faster: every line along ``axis`` is padded by reflection, the lines
    are laid end to end into one 1-D array, and scipy's 1-D running median (a double-heap,
    ``O(log size)`` per sample) filters them all in one call. The padding keeps every window
    inside its own line, so no value leaks between lines.

    Parameters
    ----------
    x : np.ndarray, any shape, real
    size : int
        Odd window length in samples of ``axis``; 1 returns a copy.
    axis : int

    Returns
    -------
    np.ndarray, same shape and dtype as ``x``
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"median filter size must be odd and >= 1, got {size}")
    x = np.asarray(x)
    if size == 1 or x.size == 0:
        return x.copy()
    if size <= _NETWORK_MAX_SIZE:
        return _median_network(x, size, axis)
    half = size // 2
    lines = np.moveaxis(x, axis, -1)
    pad = [(0, 0)] * (lines.ndim - 1) + [(half, half)]
    # numpy's "symmetric" (edge sample repeated) is scipy.ndimage's "reflect".
    padded = np.ascontiguousarray(np.pad(lines, pad, mode="symmetric"))
    flat = scipy.ndimage.median_filter(padded.reshape(-1), size=size, mode="reflect")
    out = flat.reshape(padded.shape)[..., half : half + lines.shape[-1]]
    return np.ascontiguousarray(np.moveaxis(out, -1, axis))


# Up to this length a min/max selection network beats the double heap (~5x at 7).
_NETWORK_MAX_SIZE = 9


def _median_network(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """:func:`median_filter_axis` for short windows: window ``j`` of every line along
    ``axis`` is the padded slice ``P[j : j + n]``, so the filter is the element-wise median
    of the ``size`` shifted slices, taken by :func:`~sepops.operators.repet.median_of`'s
    min/max selection network (exact: only comparisons)."""
    lines = np.moveaxis(x, axis, 0)
    n, half = lines.shape[0], size // 2
    padded = np.pad(lines, [(half, half)] + [(0, 0)] * (lines.ndim - 1), mode="symmetric")
    out = median_of([padded[j : j + n] for j in range(size)])
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def strided_time_median(x: np.ndarray, size: int, stride: int = 1) -> np.ndarray:
    """Running median along the last axis (time), optionally on every ``stride``-th frame.

    ``stride=1`` is :func:`median_filter_axis` (exact). With ``stride`` s > 1 the median of
    each window is taken over every s-th frame of it (an odd ``~size / s`` of them, on the
    frames ``0, s, 2s, ...``) and interpolated linearly to the frames between: s times less
    work, for a model that is smooth in time anyway (the harmonic median of HPSS).

    Parameters
    ----------
    x : np.ndarray, shape (..., frames)
    size : int
        Odd window length in frames.
    stride : int >= 1

    Returns
    -------
    np.ndarray, shape and dtype of ``x``
    """
    x = np.asarray(x)
    frames = x.shape[-1]
    if stride <= 1 or frames < 2 * stride:
        return median_filter_axis(x, size, axis=-1)
    k = max(1, size // stride)
    k = k if k % 2 else k + 1
    coarse = median_filter_axis(np.ascontiguousarray(x[..., ::stride]), k, axis=-1)
    # Frame t lies between coarse frames t // s and t // s + 1 (the last is held).
    t = np.arange(frames)
    i0 = t // stride
    i1 = np.minimum(i0 + 1, coarse.shape[-1] - 1)
    w = ((t % stride) / stride).astype(x.dtype)
    return coarse[..., i0] * (1 - w) + coarse[..., i1] * w


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


def _soft_mask_pair(a: np.ndarray, b: np.ndarray, power: float) -> np.ndarray:
    """``soft_masks([a, b], power)[0]`` for two sources, with fewer temporaries (float32,
    in place; ``b`` is overwritten)."""
    out = np.empty(a.shape, dtype=np.float32)
    # Worked through blocks along axis -2 so that the intermediates stay in cache.
    step = max(1, (1 << 15) // max(1, a.shape[-1]))
    for b0 in range(0, a.shape[-2], step):
        sl = (..., slice(b0, b0 + step), slice(None))
        num, den = out[sl], b[sl]
        if power == 2.0:
            np.square(a[sl], out=num)
            np.square(den, out=den)
        else:
            np.power(a[sl], np.float32(power), out=num)
            if power != 1.0:
                np.power(den, np.float32(power), out=den)
        den += num
        empty = den <= _EPS  # bins where both estimates vanish are shared equally
        np.maximum(den, _EPS, out=den)
        num /= den
        num[empty] = 0.5
    return out


def hpss_masks(
    mag: np.ndarray,
    harmonic_kernel: int,
    percussive_kernel: int,
    *,
    margin: float = 1.0,
    mask: str = "soft",
    power: float = 2.0,
    residual: bool = False,
    harmonic_stride: int = 1,
) -> dict[str, np.ndarray]:
    """Harmonic, percussive (and residual) masks of a magnitude spectrogram.

    Parameters
    ----------
    mag : np.ndarray, shape (..., bins, frames), non-negative
    harmonic_kernel, percussive_kernel : int
        Odd median-filter lengths along time (frames) and frequency (bins).
    margin : float >= 1
        A bin is harmonic where ``H > margin * P`` (binary), and percussive where
        ``P > margin * H``; soft masks use ``H^p / (H^p + (margin P)^p)`` and likewise.
    mask : {"soft", "binary"}
    power : float
        Exponent ``p`` of the soft masks (2: Wiener-like).
    harmonic_stride : int
        Take the harmonic (time) median on every n-th frame and interpolate between (see
        :func:`strided_time_median`); 1 is exact.
    residual : bool
        Return a third mask ``1 - M_h - M_p``. Without it the residual is folded into the
        percussive mask (``M_p = 1 - M_h``): what is not clearly tonal is mostly the noisy
        part of drums, and this split scored best on drum + bass + melody loops.

    Returns
    -------
    dict of {"harmonic", "percussive"[, "residual"]} -> np.ndarray, float32, shape of ``mag``
        The masks sum to 1 in every bin.
    """
    mag = np.asarray(mag, dtype=np.float32)
    harm = strided_time_median(mag, harmonic_kernel, harmonic_stride)
    perc = median_filter_axis(mag, percussive_kernel, axis=-2)

    def claim(winner: np.ndarray, loser: np.ndarray) -> np.ndarray:
        # Mask of bins where ``winner`` beats ``margin * loser``; ties go to the loser.
        if mask == "binary":
            return binary_masks([winner, margin * loser])[0]
        return _soft_mask_pair(winner, margin * loser, power)

    m_h = claim(harm, perc)
    if not residual:
        return {"harmonic": m_h, "percussive": 1.0 - m_h}
    m_p = claim(perc, harm)
    # With margin >= 1 the two claims never overlap by more than the whole bin.
    m_r = np.clip(1.0 - m_h - m_p, 0.0, 1.0)
    return {"harmonic": m_h, "percussive": m_p, "residual": m_r}


@dataclass(frozen=True)
class HpssConfig:
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
    Defaults were tuned on rendered drum + bass + melody loops (not the validation set).
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
    n_fft: int = 2048
    hop_length: int = 512
    window: str = "hann"

    def __post_init__(self):
        StftConfig(self.n_fft, self.hop_length, self.window)
        if not (isinstance(self.harmonic_stride, int) and self.harmonic_stride >= 1):
            raise ValueError(f"harmonic_stride must be an integer >= 1, got {self.harmonic_stride!r}")
        if self.mask not in ("soft", "binary"):
            raise ValueError(f"mask must be 'soft' or 'binary', got {self.mask!r}")
        if self.channels not in ("joint", "independent"):
            raise ValueError(f"channels must be 'joint' or 'independent', got {self.channels!r}")
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
class HpssOperator(Operator):
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
        return kernel_sizes(sr, self.stft_config(), c.harmonic_kernel_s, c.percussive_kernel_hz)

    def separate(
        self, audio: np.ndarray, sr: int, *, analysis: Analysis | None = None
    ) -> dict[str, np.ndarray]:
        c = self.config
        an = self._analysis(audio, sr, analysis)
        cfg = self.stft_config()
        spec = an.stft(cfg)  # (channels, bins, frames)
        if c.channels == "joint":
            # Channel-mean magnitude, summed channel by channel (no full-size temporary).
            mag = np.abs(spec[:1])
            for ch in spec[1:]:
                mag += np.abs(ch)
            mag *= np.float32(1.0 / spec.shape[0])
        else:
            mag = np.abs(spec)
        harmonic_kernel, percussive_kernel = self.kernels(sr)
        masks = hpss_masks(
            mag, harmonic_kernel, percussive_kernel,
            margin=c.margin, mask=c.mask, power=c.power, residual=c.residual,
            harmonic_stride=c.harmonic_stride,
        )
        names = self.stem_names
        stems = {name: an.istft(masks[name] * spec, cfg) for name in names if name != "percussive"}
        # The masks sum to one and the STFT inverts exactly, so the last stem is the rest:
        # one inverse STFT saved, and the stems sum to the mixture to float precision.
        stems["percussive"] = an.audio - sum(stems.values())
        return {name: stems[name] for name in names}
