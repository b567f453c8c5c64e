"""Grouping NMF components into stems without ground truth.

Rules (see :mod:`sepops.operators.nmf` for what each is for and how it measured):
``"repetition"`` (components whose activation repeats at the loop period, and the rest),
``"percussive"`` (flat templates are drums) and ``"pitch"`` (k-means on the templates'
spectral centroids).

No rule leaves a group without a sounding component while two or more components sound:
a group the rule leaves empty takes the nearest group's component that is closest to it by
the rule's own score (:func:`_fill_empty_groups`), so no stem of a non-silent mixture is
silent.
"""
from __future__ import annotations

import numpy as np

from ..dsp import beat_spectrum

__all__ = ["ACTIVE_SHARE", "component_energy", "fractional_loop_period", "group_components", "loop_period", "repetition_scores", "spectral_centroid", "spectral_flatness"]


def loop_period(V: np.ndarray, sr: int, hop_length: int, **options) -> int | None:
    """:func:`fractional_loop_period` rounded to whole frames (``None`` likewise)."""
    period = fractional_loop_period(V, sr, hop_length, **options)
    return None if period is None else int(np.floor(period + 0.5))


def fractional_loop_period(
    V: np.ndarray,
    sr: int,
    hop_length: int,
    *,
    min_period_s: float = 1.0,
    max_fraction: float = 0.75,
    short_bias: float = 0.3,
    step: float = 0.1,
) -> float | None:
    """Period of the repeating part of a spectrogram, in frames (fractional).

    Each candidate lag ``L`` scores the mean of the beat spectrum at its multiples
    ``L, 2L, ...`` (a loop repeats at every multiple of its period, while a bar or a beat
    inside the loop does not correlate at every multiple of itself), times
    ``1 - short_bias * L / frames``, so that twice the period, whose single multiple scores
    as high as the period's, loses. Candidates step by ``step`` frames and the beat spectrum
    is read between frames by linear interpolation: a period is rarely a whole number of
    frames, and the k-th multiple of a rounded one lands up to k/2 frames off its peak,
    which made the detection depend on the sample rate (hop 1024 at 48 kHz: 33 of 40
    training loops within two frames, against 39 of 40 at 44.1 kHz; with fractional
    candidates 38 and 40 of 40; ``benchmarks/loop_period.py``).

    Parameters
    ----------
    V : np.ndarray, shape (bins, frames)
    sr, hop_length : int
        Sample rate and hop of ``V``, to express ``min_period_s`` in frames.
    min_period_s : float
        Shortest period considered, in seconds.
    max_fraction : float
        Longest period considered, as a fraction of the length.
    step : float
        Spacing of the candidate periods, in frames.

    Returns
    -------
    float or None
        The best candidate, a multiple of ``step``; ``None`` when the spectrogram is too
        short to hold a repetition.
    """
    b = beat_spectrum(np.square(np.asarray(V, dtype=np.float32)))  # REPET's, on power
    T = len(b)
    lo = max(1, round(min_period_s * sr / hop_length))
    hi = int(T * max_fraction)
    if hi <= lo or not b.any():
        return None
    lags = np.arange(lo, hi, step)
    total, count = np.zeros_like(lags), np.zeros_like(lags)
    for k in range(1, -(-hi // lo)):  # every multiple below hi of every candidate
        multiple = k * lags
        below = multiple < hi
        total[below] += np.interp(multiple[below], np.arange(T), b)
        count[below] += 1
    scores = total / count * (1.0 - short_bias * lags / T)
    return float(lags[np.argmax(scores)])


def repetition_scores(H: np.ndarray, period: int) -> np.ndarray:
    """Cosine similarity of each activation with itself ``period`` frames later.

    Parameters
    ----------
    H : np.ndarray, shape (components, frames)
    period : int, 1 <= period < frames

    Returns
    -------
    np.ndarray, shape (components,), in [0, 1] (0 for silent components)
    """
    a, b = H[:, :-period].astype(np.float64), H[:, period:].astype(np.float64)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(den > 0, (a * b).sum(axis=1) / np.maximum(den, 1e-300), 0.0)


#: A component sounds when its energy (sum of template times sum of activation) is at least
#: this fraction of the largest component's.
ACTIVE_SHARE = 1e-6


def component_energy(W: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Each component's total magnitude in ``W @ H``: sum of its template times sum of its
    activation. W : (bins, components), H : (components, frames) -> (components,)."""
    return np.asarray(W, dtype=np.float64).sum(axis=0) * np.asarray(H, dtype=np.float64).sum(axis=1)


def _fill_empty_groups(labels: np.ndarray, key: np.ndarray, energy: np.ndarray, n_groups: int) -> np.ndarray:
    """Give every group at least one sounding component, when enough components sound.

    The rules order their groups by decreasing ``key`` (repetition score, flatness, centroid),
    so an empty group ``g`` takes, from the nearest group holding two or more sounding
    components, the one whose key is nearest to ``g``'s side: the lowest-keyed of a group
    before ``g``, the highest-keyed of a group after it. Groups that were not empty keep
    their components but the one given away.
    """
    labels = np.asarray(labels).copy()
    active = energy > ACTIVE_SHARE * energy.max() if energy.size and energy.max() > 0 else np.zeros(len(labels), bool)
    if active.sum() < 2:
        return labels
    for _ in range(n_groups):
        counts = np.bincount(labels[active], minlength=n_groups)
        empty = np.flatnonzero(counts == 0)
        donors = np.flatnonzero(counts >= 2)
        if not empty.size or not donors.size:
            break
        g = int(empty[0])
        donor = int(donors[np.argmin(np.abs(donors - g))])
        members = np.flatnonzero(active & (labels == donor))
        pick = members[np.argmin(key[members])] if donor < g else members[np.argmax(key[members])]
        labels[pick] = g
    return labels


def _kmeans_1d(x: np.ndarray, k: int, n_iter: int = 50) -> np.ndarray:
    """Lloyd's k-means on scalars; labels ordered by increasing cluster centre."""
    x = np.asarray(x, dtype=np.float64)
    k = max(1, min(k, len(x)))
    centres = np.quantile(x, (np.arange(k) + 0.5) / k)
    labels = np.zeros(len(x), dtype=int)
    for _ in range(n_iter):
        labels = np.argmin(np.abs(x[:, None] - centres[None, :]), axis=1)
        new = np.array([x[labels == j].mean() if np.any(labels == j) else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    rank = np.argsort(np.argsort(centres))
    return rank[labels]


def spectral_flatness(W: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Geometric over arithmetic mean of each template: near 1 for noise, near 0 for a comb.

    W : np.ndarray, shape (bins, components) -> np.ndarray, shape (components,)
    """
    W = np.asarray(W, dtype=np.float64) + eps
    return np.exp(np.log(W).mean(axis=0)) / W.mean(axis=0)


def spectral_centroid(W: np.ndarray, sr: int, n_fft: int) -> np.ndarray:
    """Centre of mass of each template in Hz. W : (bins, components) -> (components,)."""
    freqs = np.arange(W.shape[0]) * sr / n_fft
    W = np.asarray(W, dtype=np.float64)
    return (freqs @ W) / np.maximum(W.sum(axis=0), 1e-300)


def group_components(
    W: np.ndarray,
    H: np.ndarray,
    rule: str,
    n_groups: int,
    *,
    V: np.ndarray | None = None,
    sr: int = 22050,
    n_fft: int = 2048,
    hop_length: int = 512,
    repetition_threshold: float = 0.65,
) -> np.ndarray:
    """Assign each NMF component to a stem without ground truth (see the module docstring).

    Parameters
    ----------
    W : np.ndarray, shape (bins, components)
    H : np.ndarray, shape (components, frames)
    rule : {"repetition", "percussive", "pitch"}
    n_groups : int
        Number of stems (2 for "repetition" and "percussive").
    V : np.ndarray, shape (bins, frames)
        The factorised spectrogram; needed by "repetition" (its loop period).

    Returns
    -------
    np.ndarray of int, shape (components,)
        Stem index per component: "repetition" 0 = repeating, 1 = non-repeating;
        "percussive" 0 = percussive, 1 = harmonic; "pitch" 0 = highest. When two or more
        components sound, every group holds at least one of them (:func:`_fill_empty_groups`).
    """
    K = W.shape[1]
    energy = component_energy(W, H)
    if rule == "repetition":
        period = loop_period(V if V is not None else W @ H, sr, hop_length)
        if period is None:
            # Too short for a loop period: all is non-repeating, but for the component that
            # changes least from frame to frame (self-similarity at a lag of one frame).
            key = repetition_scores(H, 1) if H.shape[1] > 1 else np.zeros(K)
            labels = np.ones(K, dtype=int)
        else:
            key = repetition_scores(H, period)
            labels = (key < repetition_threshold).astype(int)
        return _fill_empty_groups(labels, key, energy, 2)
    if rule == "percussive":
        log_flat = np.log(spectral_flatness(W))
        if np.ptp(log_flat) == 0:
            return _fill_empty_groups(np.ones(K, dtype=int), log_flat, energy, 2)
        # _kmeans_1d ranks clusters by increasing flatness: the flatter one is percussive.
        return _fill_empty_groups(1 - _kmeans_1d(log_flat, 2), log_flat, energy, 2)
    if rule == "pitch":
        log_c = np.log(np.maximum(spectral_centroid(W, sr, n_fft), 1.0))
        return _fill_empty_groups((n_groups - 1) - _kmeans_1d(log_c, n_groups), log_c, energy, n_groups)
    raise ValueError(f"unknown grouping rule {rule!r}")
