"""Splitting NMF activations into what repeats at the loop period and the rest.

Given templates ``W`` and activations ``H`` of ``V ≈ W @ H`` and the loop period ``P``
(frames, fractional), the activations are refitted as the sum of a periodic part, one
pattern of ``round(P)`` phases tiled over the track, and a free part::

    V ≈ W @ (H_periodic + H_free),   H_periodic[:, t] = pattern at phase (t mod P)

minimising the KL divergence plus L1 penalties on both parts, per component: a component
whose activation already correlates with itself one period later (its repetition score,
:func:`sepops.nmf.grouping.repetition_scores`) pays more for free activations, one that does
not pays more for periodic ones. With ``W`` fixed the problem is convex, so the split depends
smoothly on the music, unlike a yes/no decision per component, which small changes of the
factorisation (a codec's noise, another sample rate, the seed) flip: see
:mod:`sepops.operators.nmf` for what it measured.

Phases are read between frames (a period is rarely a whole number of frames: whole-frame
tying would drift a frame every few periods). Frames whose phase occurs only once (audio
shorter than two periods) carry no evidence of repetition: they are split in the proportion
each component shows on the frames that repeat.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse

__all__ = ["PhaseMap", "repetition_penalties", "split_periodic"]

#: Penalty the free part always pays per unit of activation: with none, a periodic pattern
#: and a free part that sum to the same activation would cost the same.
BASE_PENALTY = 0.02
#: Penalty added at the far end of the prior (score well above or below the threshold). The
#: KL gradient of an activation is dimensionless (templates sum to 1), so penalties are too.
PRIOR_PENALTY = 0.15


class PhaseMap:
    """Each frame's phase ``t mod period`` on ``round(period)`` points around the cycle,
    as circular linear-interpolation weights.

    Parameters
    ----------
    frames : np.ndarray of int, shape (n,)
        The frame indices mapped.
    period : float
        Loop period in frames, >= 1.

    Attributes
    ----------
    weights : scipy.sparse.csr_matrix, float32, shape (n_phases, n)
        ``pattern @ weights`` tiles a (components, n_phases) pattern over the frames
        (:meth:`tile`).
    nearest : np.ndarray of int, shape (n,)
        Each frame's nearest phase.
    """

    def __init__(self, frames: np.ndarray, period: float):
        frames = np.asarray(frames)
        self.n_phases = max(1, round(period))
        u = (frames % period) * self.n_phases / period
        left = np.floor(u).astype(int) % self.n_phases
        right_weight = (u - np.floor(u)).astype(np.float32)
        columns = np.arange(len(frames))
        # Two phases per frame: sparse (the dense matrix would cost as much as the model).
        self.weights = scipy.sparse.csr_matrix(
            (np.concatenate([1 - right_weight, right_weight]),
             (np.concatenate([left, (left + 1) % self.n_phases]), np.concatenate([columns, columns]))),
            shape=(self.n_phases, len(frames)), dtype=np.float32,
        )
        self.nearest = np.rint(u).astype(int) % self.n_phases

    def tile(self, pattern: np.ndarray) -> np.ndarray:
        """(components, n_phases) -> (components, n): the pattern at each frame's phase."""
        return np.asarray((self.weights.T @ pattern.T).T)

    def fold(self, x: np.ndarray) -> np.ndarray:
        """(components, n) -> (components, n_phases): the adjoint of :meth:`tile`."""
        return np.asarray((self.weights @ x.T).T)

    def recurring(self) -> np.ndarray:
        """Boolean (n,): frames whose nearest phase occurs at least twice."""
        return np.bincount(self.nearest, minlength=self.n_phases)[self.nearest] >= 2


def repetition_penalties(scores: np.ndarray, threshold: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-component L1 penalties (free, periodic) from repetition scores.

    A linear ramp of ``width`` centred on ``threshold`` takes each score to a side in
    [0, 1] (1: repeats); the free part pays ``BASE_PENALTY + PRIOR_PENALTY * side``, the
    periodic part ``PRIOR_PENALTY * (1 - side)``.

    scores : (components,) -> two arrays of shape (components, 1)
    """
    side = np.clip((np.asarray(scores, dtype=np.float64) - (threshold - width / 2)) / max(width, 1e-9), 0.0, 1.0)
    side = side[:, None].astype(np.float32)
    return BASE_PENALTY + PRIOR_PENALTY * side, PRIOR_PENALTY * (1 - side)


def _fit(V, W, H, phases: PhaseMap, free_penalty, periodic_penalty, n_iter, eps):
    """Multiplicative KL updates of the periodic pattern and the free part (``W`` fixed),
    started from the phase-wise minimum of ``H`` (REPET's repeating model) and the rest."""
    K = H.shape[0]
    pattern = np.full((K, phases.n_phases), np.inf, dtype=V.dtype)
    np.minimum.at(pattern.T, phases.nearest, H.T)
    pattern[~np.isfinite(pattern)] = eps
    np.maximum(pattern, eps, out=pattern)
    free = np.maximum(H - phases.tile(pattern), eps).astype(V.dtype)
    template_sums = W.sum(axis=0)[:, None]
    phase_sums = np.maximum(np.asarray(phases.weights.sum(axis=1)).ravel(), 1e-6)[None, :]
    model = np.empty_like(V)
    for _ in range(n_iter):
        np.matmul(W, phases.tile(pattern) + free, out=model)
        np.maximum(model, eps, out=model)
        np.divide(V, model, out=model)
        gradient = W.T @ model  # (K, frames): the KL update's numerator
        free *= gradient / (template_sums + free_penalty)
        pattern *= phases.fold(gradient) / ((template_sums + periodic_penalty) * phase_sums)
        np.maximum(free, eps, out=free)
        np.maximum(pattern, eps, out=pattern)
    return phases.tile(pattern), free


def split_periodic(
    V: np.ndarray,
    W: np.ndarray,
    H: np.ndarray,
    period: float,
    *,
    free_penalty: np.ndarray | float = BASE_PENALTY,
    periodic_penalty: np.ndarray | float = 0.0,
    n_iter: int = 200,
    eps: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray]:
    """Refit ``V ≈ W @ (H_periodic + H_free)`` (see the module docstring).

    Parameters
    ----------
    V : np.ndarray, shape (bins, frames), non-negative
    W : np.ndarray, shape (bins, components), columns summing to 1 (fixed)
    H : np.ndarray, shape (components, frames)
        The factorisation's activations: the starting point.
    period : float
        Loop period in frames (:func:`sepops.nmf.grouping.fractional_loop_period`).
    free_penalty, periodic_penalty : float or np.ndarray of shape (components, 1)
        L1 penalties (:func:`repetition_penalties`).
    n_iter : int
        Multiplicative updates.

    Returns
    -------
    (H_periodic, H_free) : two np.ndarray of shape (components, frames), non-negative
    """
    dtype = np.float64 if V.dtype == np.float64 else np.float32
    V, W, H = (np.ascontiguousarray(a, dtype=dtype) for a in (V, W, H))
    phases = PhaseMap(np.arange(V.shape[1]), period)
    recurring = phases.recurring()
    if recurring.all() or recurring.sum() < 2:
        return _fit(V, W, H, phases, free_penalty, periodic_penalty, n_iter, eps)
    frames = np.flatnonzero(recurring)
    periodic_part, free_part = _fit(
        np.ascontiguousarray(V[:, frames]), W, np.ascontiguousarray(H[:, frames]),
        PhaseMap(frames, period), free_penalty, periodic_penalty, n_iter, eps,
    )
    # Frames without a repetition: each component's periodic share on the frames with one.
    total = periodic_part.sum(axis=1) + free_part.sum(axis=1)
    share = (periodic_part.sum(axis=1) / np.maximum(total, eps))[:, None]
    periodic, free = share * H, (1 - share) * H
    periodic[:, frames], free[:, frames] = periodic_part, free_part
    return periodic, free
