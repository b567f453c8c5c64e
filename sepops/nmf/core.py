"""The beta-NMF core: ``V ≈ W @ H`` by multiplicative updates (Lee & Seung; Févotte & Idier 2011).

``beta=2`` Euclidean, ``beta=1`` Kullback-Leibler (the operator's default: it suits
magnitude spectra; it has its own in-place path), ``beta=0`` Itakura-Saito, or any real.
Pure numpy on ``(bins, frames)`` arrays; the operator is :mod:`sepops.operators.nmf`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["BETA_NAMES", "NmfResult", "beta_divergence", "init_factors", "nmf"]

#: Named divergences and their beta.
BETA_NAMES = {"euclidean": 2.0, "kl": 1.0, "itakura-saito": 0.0}


def beta_divergence(V: np.ndarray, V_hat: np.ndarray, beta: float, eps: float = 1e-12) -> float:
    """Sum over all bins of the beta divergence ``d_beta(V | V_hat)``.

    ``beta = 2`` is half the squared Euclidean distance, ``beta = 1`` the generalised
    Kullback-Leibler divergence, ``beta = 0`` the Itakura-Saito divergence.

    Parameters
    ----------
    V, V_hat : np.ndarray, same shape, non-negative
        Data and model (``V_hat = W @ H``). Element-wise work stays in the inputs' dtype
        (float32 is twice as fast); sums are accumulated in float64. ``V_hat`` is floored
        at ``eps`` where the divergence takes its logarithm or a negative power.

    Returns
    -------
    float
    """
    dtype = np.result_type(V, V_hat, np.float32)
    V = np.asarray(V, dtype=dtype)
    V_hat = np.asarray(V_hat, dtype=dtype)

    def total(x):
        return float(np.sum(x, dtype=np.float64))

    if beta == 2:
        return 0.5 * total(np.square(V - V_hat))
    V_hat = np.maximum(V_hat, eps)
    if beta == 1:
        # V log(V / V_hat) with 0 log 0 = 0: flooring V inside the log leaves V = 0 terms at 0.
        return total(V * np.log(np.maximum(V, eps) / V_hat)) - total(V) + total(V_hat)
    if beta == 0:
        ratio = np.maximum(V, eps) / V_hat
        return total(ratio - np.log(ratio) - 1)
    return total(V**beta + (beta - 1) * V_hat**beta - beta * V * V_hat ** (beta - 1)) / (beta * (beta - 1))


def _mu_exponent(beta: float) -> float:
    """Exponent of the multiplicative update that guarantees a monotone decrease.

    Févotte & Idier (2011), "Algorithms for nonnegative matrix factorization with the
    beta-divergence", Neural Computation 23(9), Table 2.
    """
    if beta < 1:
        return 1.0 / (2.0 - beta)
    if beta > 2:
        return 1.0 / (beta - 1.0)
    return 1.0


@dataclass
class NmfResult:
    """Output of :func:`nmf`.

    Attributes
    ----------
    W : np.ndarray, shape (bins, components)
        Dictionary (spectral templates), each column summing to 1 when it was learnt.
    H : np.ndarray, shape (components, frames)
        Activations.
    divergences : list of float
        ``beta_divergence(V, W @ H)`` at the start and after each checked iteration.
    n_iter : int
        Iterations run.
    """

    W: np.ndarray
    H: np.ndarray
    divergences: list
    n_iter: int


def _ratio_update(num: np.ndarray, den: np.ndarray, gamma: float, eps: float) -> np.ndarray:
    np.maximum(den, eps, out=den)
    np.divide(num, den, out=num)
    if gamma != 1.0:
        np.power(num, gamma, out=num)
    return num


def _update_H(V, W, H, beta, gamma, eps):
    """One multiplicative update of the activations ``H`` (in place) for ``beta != 1``
    (KL has its own in-place path in :func:`nmf`); returns ``H``."""
    if beta == 2:
        num = W.T @ V
        den = (W.T @ W) @ H
    else:
        V_hat = W @ H
        np.maximum(V_hat, eps, out=V_hat)
        num = W.T @ (V * V_hat ** (beta - 2))
        den = W.T @ V_hat ** (beta - 1)
    H *= _ratio_update(num, den, gamma, eps)
    return H


def _update_W(V, W, H, beta, gamma, eps):
    """One multiplicative update of the dictionary ``W`` (in place) for ``beta != 1``;
    returns ``W``."""
    if beta == 2:
        num = V @ H.T
        den = W @ (H @ H.T)
    else:
        V_hat = W @ H
        np.maximum(V_hat, eps, out=V_hat)
        num = (V * V_hat ** (beta - 2)) @ H.T
        den = V_hat ** (beta - 1) @ H.T
    W *= _ratio_update(num, den, gamma, eps)
    return W


def _normalise(W, H, eps):
    """Scale the columns of ``W`` to unit sum and ``H`` inversely (``W @ H`` is unchanged)."""
    norms = np.maximum(W.sum(axis=0), eps)
    W /= norms
    H *= norms[:, None]


def init_factors(V: np.ndarray, n_components: int, seed: int = 0):
    """Random positive ``(W, H)`` scaled so that ``W @ H`` has the mean of ``V``.

    Returns
    -------
    W : np.ndarray, shape (bins, n_components), columns summing to 1
    H : np.ndarray, shape (n_components, frames)
    """
    # One stream per factor, drawn bin by bin and frame by frame: the values at a bin or a
    # frame depend on the seed and its position only, not on how many bins or frames there
    # are (a copy of a track one frame longer starts from the same factors).
    w_rng, h_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    F, T = V.shape
    W = w_rng.uniform(0.5, 1.5, (F, n_components)).astype(V.dtype)
    W /= W.sum(axis=0)
    # Each column of W sums to 1, so W @ H sums to H's column sums; match V's.
    scale = max(float(V.mean()) * F / n_components, 1e-12)
    H = (h_rng.uniform(0.5, 1.5, (T, n_components)).T * scale).astype(V.dtype)
    return W, H


def nmf(
    V: np.ndarray,
    n_components: int | None = None,
    *,
    W: np.ndarray | None = None,
    H: np.ndarray | None = None,
    beta: float = 1.0,
    n_iter: int = 100,
    tol: float = 1e-4,
    update_W: bool = True,
    check_every: int = 10,
    seed: int = 0,
    eps: float | None = None,
    init: Literal["random", "projection"] = "random",
) -> NmfResult:
    """Factorise ``V ≈ W @ H`` with multiplicative updates for the beta divergence.

    Each update cannot increase the divergence (Févotte & Idier 2011); with
    ``update_W=False`` only the activations are fitted (supervised NMF, fixed dictionary).

    Parameters
    ----------
    V : np.ndarray, shape (bins, frames), non-negative
        Typically a magnitude spectrogram. float64 input is factorised in float64, anything
        else in float32.
    n_components : int, optional
        Number of components; taken from ``W`` when a dictionary is given.
    W : np.ndarray, shape (bins, components), optional
        Initial (or, with ``update_W=False``, fixed) dictionary.
    H : np.ndarray, shape (components, frames), optional
        Initial activations.
    beta : float
        2: Euclidean, 1: Kullback-Leibler, 0: Itakura-Saito, or any other real.
    n_iter : int
        Maximum number of iterations (each updates ``H`` then ``W``).
    tol : float
        Stop when the divergence drops by less than ``tol`` times its initial value over
        ``check_every`` iterations (0: always run ``n_iter``).
    check_every : int
        Iterations between divergence evaluations (they reuse the model ``W @ H`` that the
        next update computes anyway, so they cost only the element-wise divergence); 0: never
        (``divergences`` stays empty and ``tol`` is ignored).
    seed : int
        Seed of the random initialisation.
    eps : float, optional
        Floor of denominators and of the model; defaults to the dtype's ``tiny``-safe 1e-20
        (float64) or 1e-12 (float32).
    init : {"random", "projection"}
        Initial ``H`` when a dictionary ``W`` is given without one: random (seeded), or the
        projection ``W.T @ V`` (the activations' first KL update from a flat start; it
        converges in fewer iterations).

    Returns
    -------
    NmfResult
    """
    dtype = np.float64 if np.asarray(V).dtype == np.float64 else np.float32
    V = np.ascontiguousarray(V, dtype=dtype)
    if V.ndim != 2:
        raise ValueError(f"V must be 2-D (bins, frames), got shape {V.shape}")
    if eps is None:
        eps = 1e-20 if dtype == np.float64 else 1e-12
    if W is None:
        if n_components is None or n_components < 1:
            raise ValueError("give n_components >= 1 or an initial W")
        W0, H0 = init_factors(V, n_components, seed)
        W = W0
        H = H0 if H is None else H
    else:
        W = np.array(W, dtype=dtype)
        if H is None:
            if init == "projection":
                H = W.T @ V + float(V.mean()) * 1e-3 + eps
            else:
                _, H = init_factors(V, W.shape[1], seed)
            # W need not sum to 1 per column: rescale H so that the model's mean fits V's.
            H *= float(V.mean()) / max(float((W @ H).mean()), eps) if V.any() else 1.0
    H = np.array(H, dtype=dtype)
    F, T = V.shape
    K = W.shape[1]
    gamma = _mu_exponent(beta)
    # Work buffers, allocated once: the model W @ H and its element-wise transforms.
    WH = np.empty((F, T), dtype=dtype)
    numH = np.empty((K, T), dtype=dtype)
    numW = np.empty((F, K), dtype=dtype)
    kl = beta == 1
    # KL: the denominator of the H update is the column sums of W (fixed when W is).
    denH_fixed = np.maximum(W.sum(axis=0), eps)[:, None] if (kl and not update_W) else None

    def model(floor=True):
        np.matmul(W, H, out=WH)
        if floor:
            np.maximum(WH, eps, out=WH)
        return WH

    if kl:
        # Factors floored at eps keep W @ H >= eps**2 > 0 without flooring the (much larger)
        # model at every update.
        np.maximum(W, eps, out=W)
        np.maximum(H, eps, out=H)

    divergences = [beta_divergence(V, model(), beta)] if check_every > 0 else []
    fresh = check_every > 0  # WH holds the model of the current W, H
    pending = False  # a divergence is due for the current W, H
    it = 0
    for it in range(1, n_iter + 1):
        if not fresh:
            model(floor=not kl or pending)
        if pending:
            divergences.append(beta_divergence(V, WH, beta))
            pending = False
            if tol > 0 and divergences[-2] - divergences[-1] < tol * divergences[0]:
                it -= 1
                break
        # --- H update
        if kl:
            np.divide(V, WH, out=WH)
            np.matmul(W.T, WH, out=numH)
            numH /= denH_fixed if denH_fixed is not None else np.maximum(W.sum(axis=0), eps)[:, None]
            if gamma != 1.0:
                np.power(numH, gamma, out=numH)
            H *= numH
            np.maximum(H, eps, out=H)
        else:
            _update_H(V, W, H, beta, gamma, eps)
        # --- W update
        if update_W:
            if kl:
                model(floor=False)
                np.divide(V, WH, out=WH)
                np.matmul(WH, H.T, out=numW)
                numW /= np.maximum(H.sum(axis=1), eps)[None, :]
                if gamma != 1.0:
                    np.power(numW, gamma, out=numW)
                W *= numW
                np.maximum(W, eps, out=W)
            else:
                _update_W(V, W, H, beta, gamma, eps)
            _normalise(W, H, eps)
        fresh = False
        if check_every > 0 and (it % check_every == 0 or it == n_iter):
            pending = True
    if pending:
        divergences.append(beta_divergence(V, model(), beta))
    return NmfResult(W, H, divergences, it)
