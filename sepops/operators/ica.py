"""Independent component analysis (FastICA) of multichannel mixtures.

A mixture of ``M`` channels that are instantaneous (gain-only, no delay or reverb) mixes
``x = A s`` of up to ``M`` independent sources is unmixed by FastICA (Hyvärinen & Oja 2000):
the channels are centred and whitened (PCA), then a rotation that makes the sources as
non-Gaussian as possible is found by fixed-point iterations with symmetric decorrelation::

    W <- E{g(W z) z^T} - diag(E{g'(W z)}) W,    W <- (W W^T)^(-1/2) W

with ``g`` the derivative of ``log cosh`` (default), ``exp(-u^2/2)`` or ``u^4 / 4``.

ICA leaves each source's scale, sign and order undetermined. The operator removes the first
two by returning source *images*: source ``i`` projected back onto the mixture's channels,
``A[:, i] * s_i`` (what the mixture would be with only that source playing, as in the
stereo references of the validation set). Images do not depend on scale or sign, and for a
determined mix they sum to the mixture exactly (``A`` is the inverse of the unmixing matrix).
Order is made deterministic by ``order``:

- ``"energy"`` (default): loudest image first;
- ``"pan"``: by position across the channels, left (channel 0) first: the energy-weighted
  mean channel index of each source's column of ``A``;
- ``"none"``: FastICA's own order (fixed by ``seed``).

Stems are named ``source_1 .. source_N`` with ``N = n_sources``, by default one per channel.
Special cases, none of which raises:

- mono input: the mixture is returned as the single source ``source_1``;
- rank-deficient input (fewer independent sources than channels, e.g. silence or identical
  channels): only as many sources as the channel covariance has rank are estimated, the
  remaining stems are silent;
- whatever the estimated sources do not explain (nothing in a determined mix; the dropped
  dimensions when ``n_sources < channels``) is shared equally among the stems, so that they
  always sum to the mixture.

The fixed point is found on at most ``max_samples`` samples spread evenly over the track
(a 2 x 2 mix needs far fewer), then ``polish_iterations`` iterations on every sample refine it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..base import Operator, register
from ..spectral import Analysis

__all__ = ["IcaConfig", "IcaOperator", "IcaResult", "fastica", "order_sources", "whiten"]


def whiten(X: np.ndarray, n_components: int | None = None, rank_tol: float = 1e-8):
    """PCA whitening of centred data.

    Parameters
    ----------
    X : np.ndarray, shape (channels, samples), centred
    n_components : int, optional
        Keep at most this many principal components.
    rank_tol : float
        Components with variance below ``rank_tol`` times the largest are dropped (they are
        numerical noise of a rank-deficient mixture, and whitening would blow them up).

    Returns
    -------
    K : np.ndarray, shape (r, channels)
        Whitening matrix: ``K @ X`` has identity covariance; ``r`` is the kept rank (may be 0).
    K_inv : np.ndarray, shape (channels, r)
        Its pseudo-inverse (``K_inv @ K`` projects onto the kept subspace).
    """
    n = max(X.shape[1], 1)
    cov = (X @ X.T) / n
    d, E = np.linalg.eigh(cov)
    d, E = d[::-1], E[:, ::-1]  # largest variance first
    keep = d > rank_tol * max(d[0], 0.0) if d.size and d[0] > 0 else np.zeros(d.shape, bool)
    r = int(keep.sum()) if n_components is None else min(int(keep.sum()), n_components)
    d, E = d[:r], E[:, :r]
    return (E / np.sqrt(d)).T, E * np.sqrt(d)


def _nonlinearity(fun: str, alpha: float):
    """``(g, mean g')`` for FastICA's contrast function ``fun``."""

    # Means are accumulated in float64 whatever the dtype of u.
    def logcosh(u):
        g = np.tanh(alpha * u)
        return g, alpha * (1.0 - np.mean(g * g, axis=1, dtype=np.float64))

    def exp(u):
        e = np.exp(-0.5 * u * u)
        return u * e, np.mean((1.0 - u * u) * e, axis=1, dtype=np.float64)

    def cube(u):
        return u**3, 3.0 * np.mean(u * u, axis=1, dtype=np.float64)

    try:
        return {"logcosh": logcosh, "exp": exp, "cube": cube}[fun]
    except KeyError:
        raise ValueError(f"unknown FastICA function {fun!r}; choose logcosh, exp or cube") from None


def _sym_decorrelation(W: np.ndarray) -> np.ndarray:
    """``(W W^T)^(-1/2) W``: the nearest orthogonal matrix, treating all rows alike."""
    d, E = np.linalg.eigh(W @ W.T)
    d = np.maximum(d, np.finfo(W.dtype).tiny)
    return (E / np.sqrt(d)) @ E.T @ W


def _fixed_point(Z, W, g, max_iter, tol):
    """Symmetric FastICA iterations on whitened ``Z`` (r, n); returns (W, iterations, converged).

    The r x n work is done in ``Z``'s dtype, the r x r algebra in float64.
    """
    n = Z.shape[1]
    for it in range(1, max_iter + 1):
        gwz, g_prime = g(W.astype(Z.dtype) @ Z)
        W_new = _sym_decorrelation((gwz @ Z.T).astype(np.float64) / n - g_prime[:, None] * W)
        # Converged when every row keeps its direction (up to sign).
        lim = np.max(np.abs(np.abs(np.sum(W_new * W, axis=1)) - 1.0))
        W = W_new
        if lim < tol:
            return W, it, True
    return W, max_iter, False


@dataclass
class IcaResult:
    """Output of :func:`fastica`.

    Attributes
    ----------
    unmixing : np.ndarray, shape (r, channels)
        Sources are ``unmixing @ (x - mean)``; ``r`` is the number of sources found.
    mixing : np.ndarray, shape (channels, r)
        Pseudo-inverse of ``unmixing``: column ``i`` is source ``i``'s gain in each channel.
    mean : np.ndarray, shape (channels, 1)
    n_iter : int
    converged : bool
    """

    unmixing: np.ndarray
    mixing: np.ndarray
    mean: np.ndarray
    n_iter: int
    converged: bool


def fastica(
    X: np.ndarray,
    n_components: int | None = None,
    *,
    fun: str = "logcosh",
    alpha: float = 1.0,
    max_iter: int = 200,
    tol: float = 1e-4,
    max_samples: int = 0,
    polish_iterations: int = 0,
    seed: int = 0,
) -> IcaResult:
    """FastICA with symmetric decorrelation, in float64.

    Parameters
    ----------
    X : np.ndarray, shape (channels, samples)
    n_components : int, optional
        Number of sources (default: the rank of ``X``'s covariance, at most ``channels``).
    fun : {"logcosh", "exp", "cube"}
        Contrast function; ``alpha`` (1..2) scales ``logcosh``.
    max_iter, tol : int, float
        Fixed-point iterations and convergence threshold on ``1 - |<w_new, w>|``.
    max_samples : int
        Fit on at most this many samples, taken at an even stride (0: all).
    polish_iterations : int
        Further iterations on all samples after the subsampled fit (when subsampling).
    seed : int
        Seed of the random initial rotation.

    Returns
    -------
    IcaResult
    """
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    channels, n = X.shape
    mean = X.mean(axis=1, keepdims=True) if n else np.zeros((channels, 1))
    Xc = X - mean
    stride = max(1, -(-n // max_samples)) if max_samples and n > max_samples else 1
    K, K_inv = whiten(Xc[:, ::stride], n_components)
    r = K.shape[0]
    if r == 0:
        return IcaResult(np.zeros((0, channels)), np.zeros((channels, 0)), mean, 0, True)
    g = _nonlinearity(fun, alpha)
    rng = np.random.default_rng(seed)
    W = _sym_decorrelation(rng.standard_normal((r, r)))
    W, it, converged = _fixed_point(K @ Xc[:, ::stride], W, g, max_iter, tol)
    if stride > 1 and polish_iterations > 0:
        # All samples, in float32: twice as fast, and precise enough to refine a fixed point.
        Z = (K @ Xc).astype(np.float32)
        W, extra, converged = _fixed_point(Z, W, g, polish_iterations, tol)
        it += extra
    # W is orthogonal, so the pseudo-inverse of W K is K^+ W^T.
    return IcaResult(W @ K, K_inv @ W.T, mean, it, converged)


def order_sources(mixing: np.ndarray, energies: np.ndarray, rule: str) -> np.ndarray:
    """Order of the sources under ``rule`` ("energy", "pan" or "none"; see the module docstring).

    Parameters
    ----------
    mixing : np.ndarray, shape (channels, r)
    energies : np.ndarray, shape (r,)
        Energy of each source's image.

    Returns
    -------
    np.ndarray of int, shape (r,)
    """
    r = mixing.shape[1]
    if rule == "none" or r < 2:
        return np.arange(r)
    if rule == "energy":
        return np.argsort(-energies, kind="stable")
    if rule == "pan":
        power = mixing**2
        position = (np.arange(mixing.shape[0]) @ power) / np.maximum(power.sum(axis=0), 1e-300)
        return np.argsort(position, kind="stable")
    raise ValueError(f"unknown order {rule!r}")


@dataclass(frozen=True)
class IcaConfig:
    """Parameters of the ``ica`` operator.

    n_sources : number of stems ``source_1 .. source_N`` (default: one per input channel).
    fun, alpha : FastICA contrast, "logcosh" (alpha in [1, 2]), "exp" or "cube".
    max_iter, tol : fixed-point iterations and convergence threshold.
    max_samples : fit on at most this many evenly spaced samples (0: all).
    polish_iterations : iterations on all samples after a subsampled fit.
    order : stem order, "energy" (loudest first), "pan" (left first) or "none".
    seed : seed of the initial rotation (results are deterministic).
    """

    n_sources: int | None = None
    fun: Literal["logcosh", "exp", "cube"] = "logcosh"
    alpha: float = 1.0
    max_iter: int = 200
    tol: float = 1e-4
    max_samples: int = 100_000
    polish_iterations: int = 1
    order: Literal["energy", "pan", "none"] = "energy"
    seed: int = 0

    def __post_init__(self):
        if self.n_sources is not None and self.n_sources < 1:
            raise ValueError(f"n_sources must be >= 1, got {self.n_sources}")
        if not 1.0 <= self.alpha <= 2.0:
            raise ValueError(f"alpha must be in [1, 2], got {self.alpha}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
        if self.tol <= 0:
            raise ValueError(f"tol must be > 0, got {self.tol}")
        if self.max_samples < 0 or self.polish_iterations < 0:
            raise ValueError("max_samples and polish_iterations must be >= 0")


@register
class IcaOperator(Operator):
    """FastICA on the channels of a multichannel mixture; stems are the sources' images,
    which sum to the mixture. See :mod:`sepops.operators.ica`.
    """

    name = "ica"
    Config = IcaConfig

    @property
    def stem_names(self) -> list[str]:
        """``source_1 .. source_N`` when ``n_sources`` is set; empty (one per channel) otherwise."""
        n = self.config.n_sources
        return [f"source_{i + 1}" for i in range(n)] if n else []

    def separate(self, audio: np.ndarray, sr: int, *, analysis: Analysis | None = None) -> dict[str, np.ndarray]:
        x = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        channels = x.shape[0]
        c = self.config
        n_stems = c.n_sources or channels
        names = [f"source_{i + 1}" for i in range(n_stems)]
        if channels == 1 and n_stems == 1:
            return {names[0]: x.copy()}
        res = fastica(
            x, min(n_stems, channels), fun=c.fun, alpha=c.alpha, max_iter=c.max_iter, tol=c.tol,
            max_samples=c.max_samples, polish_iterations=c.polish_iterations, seed=c.seed,
        )
        # Sources from the uncentred mixture, so that the images carry the mean too. float32
        # is ample here (the unmixing was estimated in float64) and halves the memory traffic.
        sources = res.unmixing.astype(np.float32) @ x
        mixing = res.mixing.astype(np.float32)
        images = [mixing[:, [i]] * sources[i] for i in range(sources.shape[0])]
        energies = np.array([np.sum(im * im, dtype=np.float64) for im in images])
        ordered = [images[i] for i in order_sources(res.mixing, energies, c.order)]
        ordered += [np.zeros_like(x)] * (n_stems - len(ordered))
        residual = (x - sum(ordered)) / n_stems
        return {name: im + residual for name, im in zip(names, ordered)}
