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

import copy
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..base import Operator, register
from ..blocks import BlockContext
from ..spectral import Analysis

if TYPE_CHECKING:
    from ..stream import AudioStream

__all__ = [
    "FastICASettings", "IcaConfig", "IcaModel", "IcaOperator", "IcaResult", "fastica", "fastica_stream",
    "order_sources", "whiten",
]


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


def _fixed_point_sums(Z, W, g) -> tuple[np.ndarray, np.ndarray]:
    """``(sum g(W z) z^T, sum g'(W z))`` over the columns of whitened ``Z`` (r, n), float64:
    one fixed-point step's statistics, which add up over the blocks of a stream."""
    gwz, g_prime = g(W.astype(Z.dtype) @ Z)
    return (gwz @ Z.T).astype(np.float64), g_prime * Z.shape[1]


def _fixed_point_step(W, sum_gz, sum_g_prime, n) -> tuple[np.ndarray, float]:
    """The next ``W`` from a step's statistics over ``n`` samples, and how far a row turned
    (converged when every row keeps its direction, up to sign)."""
    W_new = _sym_decorrelation(sum_gz / n - (sum_g_prime / n)[:, None] * W)
    return W_new, float(np.max(np.abs(np.abs(np.sum(W_new * W, axis=1)) - 1.0)))


def _fixed_point(Z, W, g, max_iter, tol):
    """Symmetric FastICA iterations on whitened ``Z`` (r, n); returns (W, iterations, converged).

    The r x n work is done in ``Z``'s dtype, the r x r algebra in float64.
    """
    for it in range(1, max_iter + 1):
        W, lim = _fixed_point_step(W, *_fixed_point_sums(Z, W, g), Z.shape[1])
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


@dataclass(frozen=True)
class FastICASettings:
    """How :func:`fastica` and :func:`fastica_stream` fit, declared once for both.

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
    """

    fun: Literal["logcosh", "exp", "cube"] = "logcosh"
    alpha: float = 1.0
    max_iter: int = 200
    tol: float = 1e-4
    max_samples: int = 0
    polish_iterations: int = 0
    seed: int = 0

    @classmethod
    def of(cls, settings: FastICASettings | None, overrides: dict) -> FastICASettings:
        """``settings`` (default: the defaults) with the fields named in ``overrides`` replaced."""
        return dataclasses.replace(settings or cls(), **overrides)


def fastica(
    X: np.ndarray, n_components: int | None = None, settings: FastICASettings | None = None, **overrides
) -> IcaResult:
    """FastICA with symmetric decorrelation, in float64.

    Parameters
    ----------
    X : np.ndarray, shape (channels, samples)
    n_components : int, optional
        Number of sources (default: the rank of ``X``'s covariance, at most ``channels``).
    settings : FastICASettings, optional
        The fit's settings (default: ``FastICASettings()``); keyword ``overrides`` replace
        single fields (``fastica(X, seed=1)``).

    Returns
    -------
    IcaResult
    """
    s = FastICASettings.of(settings, overrides)
    X = np.atleast_2d(np.asarray(X, dtype=np.float64))
    channels, n = X.shape
    mean = X.mean(axis=1, keepdims=True) if n else np.zeros((channels, 1))
    Xc = X - mean
    stride = sample_stride(n, s.max_samples)
    K, K_inv, W, it, converged = _fit_sample(Xc[:, ::stride], n_components, s)
    if K.shape[0] and stride > 1 and s.polish_iterations > 0:
        # All samples, in float32: twice as fast, and precise enough to refine a fixed point.
        Z = (K @ Xc).astype(np.float32)
        W, extra, converged = _fixed_point(Z, W, _nonlinearity(s.fun, s.alpha), s.polish_iterations, s.tol)
        it += extra
    return _result(K, K_inv, W, mean, it, converged)


def sample_stride(n: int, max_samples: int) -> int:
    """Stride of the evenly spaced samples :func:`fastica` fits on (at most ``max_samples``
    of ``n``; 0: all)."""
    return max(1, -(-n // max_samples)) if max_samples and n > max_samples else 1


def _fit_sample(Xc, n_components, s: FastICASettings):
    """Whitening of the centred sample ``Xc`` and the fixed point found on it:
    ``(K, K_inv, W, iterations, converged)``; ``K`` has no rows when the sample is silent."""
    K, K_inv = whiten(Xc, n_components)
    r = K.shape[0]
    if r == 0:
        return K, K_inv, np.zeros((0, 0)), 0, True
    rng = np.random.default_rng(s.seed)
    W = _sym_decorrelation(rng.standard_normal((r, r)))
    W, it, converged = _fixed_point(K @ Xc, W, _nonlinearity(s.fun, s.alpha), s.max_iter, s.tol)
    return K, K_inv, W, it, converged


def _result(K, K_inv, W, mean, it, converged) -> IcaResult:
    if K.shape[0] == 0:
        return IcaResult(np.zeros((0, K.shape[1])), np.zeros((K.shape[1], 0)), mean, 0, True)
    # W is orthogonal, so the pseudo-inverse of W K is K^+ W^T.
    return IcaResult(W @ K, K_inv @ W.T, mean, it, converged)


def fastica_stream(
    passes: Callable[[], AbstractContextManager[AudioStream]],
    n_components: int | None = None,
    settings: FastICASettings | None = None,
    *,
    block: int = 1 << 19,
    **overrides,
) -> tuple[IcaResult, np.ndarray]:
    """:func:`fastica` of a whole stream, in memory bounded by ``block`` frames.

    Reads the stream (each call of ``passes`` opens it again) once for the mean, the
    second moments and the evenly spaced sample the fixed point is found on (twice when
    the container does not give its length), then once per polish iteration. The result
    equals :func:`fastica` of the whole signal up to float rounding.

    Returns
    -------
    result : IcaResult
    second_moments : np.ndarray, shape (channels, channels)
        ``sum_t x(t) x(t)^T`` of the uncentred signal, float64 (the energy of any linear
        combination of the channels follows from it).
    """
    s = FastICASettings.of(settings, overrides)

    def read(stream):
        while (x := stream.read(block)).shape[1]:
            yield x

    with passes() as stream:
        channels, frames = stream.channels, stream.frames
        stride = sample_stride(frames, s.max_samples) if frames else 0
        n, total, moments, sample = 0, np.zeros((channels, 1)), np.zeros((channels, channels)), []
        for x in read(stream):
            x64 = x.astype(np.float64)
            total += x64.sum(axis=1, keepdims=True)
            moments += x64 @ x64.T
            if stride:
                sample.append(x64[:, (-n) % stride :: stride].copy())  # a copy: a view would keep the block
            n += x.shape[1]
    if not stride or stride != sample_stride(n, s.max_samples):
        # The header's length was missing or wrong: one more pass with the true stride.
        stride, sample, seen = sample_stride(n, s.max_samples), [], 0
        with passes() as stream:
            for x in read(stream):
                sample.append(x[:, (-seen) % stride :: stride].astype(np.float64))
                seen += x.shape[1]
    mean = total / max(n, 1)
    Xs = np.concatenate(sample, axis=1) - mean if sample else np.zeros((channels, 0))
    K, K_inv, W, it, converged = _fit_sample(Xs, n_components, s)
    if K.shape[0] and stride > 1:
        g = _nonlinearity(s.fun, s.alpha)
        for _ in range(s.polish_iterations):
            sum_gz, sum_gp = 0.0, 0.0
            with passes() as stream:
                for x in read(stream):
                    Z = (K @ (x - mean)).astype(np.float32)
                    gz, gp = _fixed_point_sums(Z, W, g)
                    sum_gz, sum_gp = sum_gz + gz, sum_gp + gp
            W, lim = _fixed_point_step(W, sum_gz, sum_gp, n)
            it += 1
            converged = lim < s.tol
            if converged:
                break
    return _result(K, K_inv, W, mean, it, converged), moments


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
    fun : FastICA contrast function, "logcosh" (a good general-purpose choice), "exp" (for
        highly super-Gaussian sources) or "cube" (kurtosis; sensitive to outliers).
    alpha : steepness of the logcosh contrast, ``tanh(alpha * u)`` (1 to 2); "exp" and
        "cube" ignore it.
    max_iter : at most this many fixed-point iterations of the fit (it stops earlier once
        converged).
    tol : the fit has converged when no unmixing direction turns by more than this in one
        iteration (``max |1 - |<w_new, w_old>||``).
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

    @property
    def settings(self) -> FastICASettings:
        """The fit's settings: this config's fields of the same names."""
        return FastICASettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(FastICASettings)})


@register
class IcaOperator(Operator):
    """FastICA on the channels of a multichannel mixture; stems are the sources' images,
    which sum to the mixture. See :mod:`sepops.operators.ica`.
    """

    name = "ica"
    Config = IcaConfig
    #: For ``sepflow operators``.
    stems_description = "source_1 .. source_N, one per input channel (or n_sources), loudest first"

    def __init__(self, config=None, /, **params):
        super().__init__(config, **params)
        #: The unmixing fitted to a whole stream (:meth:`fit_stream`); None: fitted per call.
        self.model: IcaModel | None = None

    @property
    def stem_names(self) -> list[str]:
        """``source_1 .. source_N`` when ``n_sources`` is set or the operator is fitted to a
        stream; empty (one per channel) otherwise."""
        n = self.config.n_sources or (self.model.n_stems if self.model is not None else 0)
        return [f"source_{i + 1}" for i in range(n)]

    def block_context(self, sr: int) -> BlockContext | None:
        # Images are instantaneous linear maps of the mixture: once the unmixing is fitted
        # to the whole stream, any block is separated on its own, exactly.
        return None if self.model is None else BlockContext(0)

    def fit_stream(self, passes: Callable[[], AbstractContextManager[AudioStream]]) -> IcaOperator:
        """A copy with the unmixing of the whole stream fixed (:func:`fastica_stream`: one
        pass for the sample and the moments, one per polish iteration); its stems equal
        :meth:`separate` of the whole signal up to float rounding."""
        c = self.config
        with passes() as stream:
            channels = stream.channels
        n_stems = c.n_sources or channels
        fitted = copy.copy(self)
        if channels == 1 and n_stems == 1:
            fitted.model = IcaModel(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), [0], 1)
            return fitted
        res, moments = fastica_stream(passes, min(n_stems, channels), c.settings)
        # The energy of image i is |A_i|^2 times that of source i, u_i^T (sum x x^T) u_i.
        source_energy = np.einsum("ic,cd,id->i", res.unmixing, moments, res.unmixing)
        energies = np.sum(res.mixing**2, axis=0) * source_energy
        fitted.model = IcaModel(
            res.unmixing.astype(np.float32), res.mixing.astype(np.float32),
            list(order_sources(res.mixing, energies, c.order)), n_stems,
        )
        return fitted

    def separate(self, audio: np.ndarray, sr: int, *, analysis: Analysis | None = None) -> dict[str, np.ndarray]:
        x = np.atleast_2d(np.asarray(audio, dtype=np.float32))
        if self.model is not None:
            return self.model.images(x)
        channels = x.shape[0]
        c = self.config
        n_stems = c.n_sources or channels
        if channels == 1 and n_stems == 1:
            return {"source_1": x.copy()}
        res = fastica(x, min(n_stems, channels), c.settings)
        # Sources from the uncentred mixture, so that the images carry the mean too. float32
        # is ample here (the unmixing was estimated in float64) and halves the memory traffic.
        model = IcaModel(res.unmixing.astype(np.float32), res.mixing.astype(np.float32), [], n_stems)
        images = model.source_images(x)
        energies = np.array([np.sum(im * im, dtype=np.float64) for im in images])
        model.order = list(order_sources(res.mixing, energies, c.order))
        return model.images(x, images)


@dataclass
class IcaModel:
    """A fitted unmixing: ``unmixing`` (r, channels) and ``mixing`` (channels, r) float32,
    the stems' ``order`` of the r sources, and the number of stems (silent ones after them)."""

    unmixing: np.ndarray
    mixing: np.ndarray
    order: list[int]
    n_stems: int

    def source_images(self, x: np.ndarray) -> list[np.ndarray]:
        """Each source projected back onto the channels, ``A_i s_i``, unordered."""
        sources = self.unmixing @ x
        return [self.mixing[:, [i]] * sources[i] for i in range(sources.shape[0])]

    def images(self, x: np.ndarray, images: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The stems of ``x``: the ordered images plus an equal share of what they leave."""
        images = self.source_images(x) if images is None else images
        ordered = [images[i] for i in self.order]
        ordered += [np.zeros_like(x)] * (self.n_stems - len(ordered))
        residual = (x - sum(ordered)) / self.n_stems
        return {f"source_{i + 1}": im + residual for i, im in enumerate(ordered)}
