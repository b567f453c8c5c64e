"""Time-frequency masks, and the one path from magnitude estimates to stems.

Every mask-based operator ends the same way: per-stem magnitude estimates ``E_i`` (or any
non-negative numbers whose ratios say how a bin is shared) become masks, the masks multiply
the mixture STFT, and the inverse STFT gives the stems (:func:`stems_from_estimates`). This
module is the only place that does it.

Definitions (the reference ones for two sources, generalised to N):

- **binary**: ``M_i = 1`` where ``E_i`` is the strict maximum. *Tie rule*: a tie goes to
  the later source (for two, ``M_1 = (E_1 > E_2)``).
- **soft** (ratio) with power ``p``: ``M_i = (E_i + ε)^p / sum_j (E_j + ε)^p``; ``p = 1`` is
  the magnitude ratio, ``p = 2`` the single-channel Wiener gain. ``ε`` is :data:`MASK_EPS`,
  the one epsilon of every mask: far below any audible estimate, it changes nothing there,
  and it is the *tie rule* of silent bins, shared equally (no division by zero anywhere).
- **margin** ``beta >= 1`` (Driedger, Müller & Disch 2014, two sources): source ``i`` claims
  a bin where it beats ``beta`` times the other (binary), or by the soft mask of
  ``[E_i, beta E_j]``. With ``residual`` what neither claims is a third mask; without, it
  goes to the last source.
- **Wiener** (multichannel, EM): :func:`wiener`.

Binary and soft masks sum to 1 in every bin, so the last stem is the rest of the mixture
(one inverse STFT saved) and the stems sum to the mixture exactly.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .spectral import Analysis, StftConfig

__all__ = [
    "MASK_EPS",
    "MASK_KINDS",
    "MaskSettings",
    "binary_masks",
    "masks",
    "ratio_mask_pair",
    "soft_masks",
    "stems_from_estimates",
    "stems_from_masks",
    "wiener",
]

MASK_KINDS = ("binary", "soft")
#: Added to every estimate of a soft mask: silent bins are shared equally (see above).
MASK_EPS = 1e-10
# Elements per block of the two-source kernel: its temporaries stay in cache (~2x faster).
_BLOCK_ELEMS = 1 << 15


def binary_masks(estimates: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Winner-takes-all masks: 1 where a source's estimate is the strict maximum.

    For two sources this is ``M1 = (F1 > F2)``, ``M2 = 1 - M1`` (ties go to the last source,
    as in the reference definition).

    Parameters
    ----------
    estimates : sequence of np.ndarray, all the same shape
        Non-negative magnitude (or power) estimates per source.

    Returns
    -------
    list of np.ndarray, float32, same shape as the estimates
    """
    stack = np.stack([np.asarray(e, dtype=np.float32) for e in estimates])
    # argmax over the reversed stack picks the last source among ties.
    winner = stack.shape[0] - 1 - np.argmax(stack[::-1], axis=0)
    return [(winner == i).astype(np.float32) for i in range(stack.shape[0])]


def ratio_mask_pair(
    a: np.ndarray, b: np.ndarray, power: float = 1.0, *, b_scale: float = 1.0, out: np.ndarray | None = None
) -> np.ndarray:
    """The soft mask of ``a`` against ``b``: ``(a + ε)^p / ((a + ε)^p + (s b + ε)^p)``, in float32.

    ``ε`` is :data:`MASK_EPS`; it makes silent bins (both estimates far below it) shared
    equally, and costs nothing elsewhere. Computed as ``1 / (1 + ((s b + ε) / (a + ε))^p)``:
    one power instead of two, squares and square roots instead of ``pow`` for ``p`` = 2 and
    0.5, and the work goes through blocks of the second-to-last axis so that its temporaries
    stay in cache. Equals ``soft_masks([a, s * b], power)[0]``.

    Parameters
    ----------
    a, b : np.ndarray, shape (..., bins, frames), non-negative, broadcastable
    power : float > 0
    b_scale : float > 0
        ``s``: the margin of HPSS (``b`` must be beaten ``s`` times over).
    out : np.ndarray, float32, optional
        Receives the mask; may be ``a`` itself (saves a full-size array).

    Returns
    -------
    np.ndarray, float32, the broadcast shape of ``a`` and ``b``
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    shape = np.broadcast_shapes(a.shape, b.shape)
    m = np.empty(shape, dtype=np.float32) if out is None else out
    step = max(1, _BLOCK_ELEMS // max(1, shape[-1]))
    eps = np.float32(MASK_EPS)
    # (s b + ε) / (a + ε) = (b + ε / s) / ((a + ε) / s): the scale costs one pass, on a.
    b_eps, inv_scale = np.float32(MASK_EPS / b_scale), np.float32(1.0 / b_scale)
    for b0 in range(0, shape[-2], step):
        sl = (..., slice(b0, b0 + step), slice(None))
        dest = m[sl]
        # The denominator goes into the output block (it may be a's own block: read first).
        np.add(a[sl], eps, out=dest)
        if b_scale != 1.0:
            dest *= inv_scale
        r = np.add(b[sl], b_eps)
        r /= dest
        if power == 0.5:
            np.sqrt(r, out=r)
        elif power == 2.0:
            np.square(r, out=r)
        elif power != 1.0:
            r **= np.float32(power)
        r += 1.0
        np.reciprocal(r, out=dest)
    return m


def soft_masks(estimates: Sequence[np.ndarray], power: float = 1.0) -> list[np.ndarray]:
    """Ratio masks ``M_i = (F_i + ε)^p / sum_j (F_j + ε)^p``, ``ε`` = :data:`MASK_EPS`.

    With ``power=1`` and two sources this is ``M1 = F1 / (F1 + F2)``; ``power=2`` gives the
    single-channel Wiener gain. ``ε`` makes bins where every estimate is zero shared
    equally. Two sources go through :func:`ratio_mask_pair`.
    """
    if len(estimates) == 2:
        m = ratio_mask_pair(estimates[0], estimates[1], power)
        return [m, 1.0 - m]
    stack = np.stack([np.asarray(e, dtype=np.float32) for e in estimates])
    stack += np.float32(MASK_EPS)
    if power == 2.0:
        np.square(stack, out=stack)
    elif power != 1.0:
        np.power(stack, np.float32(power), out=stack)
    stack /= stack.sum(axis=0)
    return list(stack)


def masks(
    estimates: Sequence[np.ndarray],
    kind: str = "soft",
    power: float = 1.0,
    *,
    margin: float = 1.0,
    residual: bool = False,
) -> list[np.ndarray]:
    """Masks of one kind for the given estimates (see the module docstring).

    Parameters
    ----------
    estimates : sequence of np.ndarray, all the same shape
    kind : {"soft", "binary"}
    power : float
        Soft-mask exponent.
    margin : float >= 1
        Two sources only: each must beat ``margin`` times the other to claim a bin.
    residual : bool
        With a margin: return a third mask, what neither source claims.

    Returns
    -------
    list of np.ndarray, float32; one per estimate (plus the residual). They sum to 1.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"unknown mask kind {kind!r}; choose one of {MASK_KINDS}")
    if margin == 1.0 and not residual:
        return binary_masks(estimates) if kind == "binary" else soft_masks(estimates, power)
    if len(estimates) != 2:
        raise ValueError(f"margin and residual masks are defined for two sources, got {len(estimates)}")
    first, second = estimates

    def claim(winner: np.ndarray, loser: np.ndarray) -> np.ndarray:
        if kind == "binary":
            return binary_masks([winner, margin * np.asarray(loser, dtype=np.float32)])[0]
        return ratio_mask_pair(winner, loser, power, b_scale=margin)

    m_1 = claim(first, second)
    if not residual:
        return [m_1, 1.0 - m_1]
    m_2 = claim(second, first)
    # With margin >= 1 the two claims never overlap by more than the whole bin.
    return [m_1, m_2, np.clip(1.0 - m_1 - m_2, 0.0, 1.0)]


@dataclass(frozen=True)
class MaskSettings:
    """How estimates become stems: mask ``kind`` and ``power``, HPSS's ``margin`` and
    ``residual``, and ``wiener_iterations`` of the multichannel Wiener filter (0: off)."""

    kind: str = "soft"
    power: float = 1.0
    margin: float = 1.0
    residual: bool = False
    wiener_iterations: int = 0


def stems_from_masks(
    spec: np.ndarray,
    leading_masks: Sequence[np.ndarray],
    mixture: np.ndarray,
    inverse,
) -> list[np.ndarray]:
    """Masked mixture STFTs back to audio: one stem per mask, plus the rest of the mixture.

    The masks of one call sum to one and the STFT inverts exactly, so the last stem needs no
    mask: it is the mixture minus the others (one inverse STFT saved, and the stems sum to
    the mixture to float precision).

    Parameters
    ----------
    spec : np.ndarray, complex, shape (channels, bins, frames)
    leading_masks : sequence of np.ndarray, broadcastable to ``spec``
        The masks of every stem but the last.
    mixture : np.ndarray, shape (channels, samples)
        The audio ``spec`` is the STFT of.
    inverse : callable
        ``inverse(masked_spec) -> audio`` shaped like ``mixture``.

    Returns
    -------
    list of np.ndarray, float32, shape of ``mixture``; ``len(leading_masks) + 1`` of them
    """
    stems = [inverse(m * spec) for m in leading_masks]
    rest = mixture - sum(stems) if stems else mixture.copy()
    return [*stems, np.asarray(rest, dtype=np.float32)]


def _leading_masks(estimates: list, kind: str, power: float, margin: float, residual: bool,
                   overwrite: bool) -> list[np.ndarray]:
    """The masks of all stems but the last (which is the rest of the mixture)."""
    if kind == "soft" and not residual and len(estimates) == 2:
        # The common case, HPSS, REPET and 2-stem NMF: one blocked kernel, no second mask,
        # written over the first estimate when the caller allows it.
        a = estimates[0]
        own = (overwrite and isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.writeable
               and a.flags.c_contiguous)  # a mask in another layout would slow its multiply
        shape_ok = own and a.shape == np.broadcast_shapes(a.shape, np.shape(estimates[1]))
        return [ratio_mask_pair(a, estimates[1], power, b_scale=margin, out=a if shape_ok else None)]
    return masks(estimates, kind, power, margin=margin, residual=residual)[:-1]


def stems_from_estimates(
    analysis: Analysis,
    stft_config: StftConfig,
    estimates: dict[str, np.ndarray],
    *,
    mask: str = "soft",
    power: float = 1.0,
    wiener_iterations: int = 0,
    margin: float = 1.0,
    residual: bool = False,
    overwrite_estimates: bool = False,
) -> dict[str, np.ndarray]:
    """Per-stem magnitude estimates -> time-domain stems (the one implementation).

    Masks (see :func:`masks`) are applied to the mixture STFT and inverted; with
    ``wiener_iterations > 0`` the multichannel Wiener filter of :func:`wiener` replaces them.

    Parameters
    ----------
    analysis : Analysis
        The track (its audio and its cached STFTs).
    stft_config : StftConfig
    estimates : dict of stem -> np.ndarray, shape (channels, bins, frames) or (bins, frames)
        In stem order. With ``residual`` a stem ``"residual"`` is added after them.
    overwrite_estimates : bool
        Let the masks be written over the estimates (saves a full-size array).

    Returns
    -------
    dict of stem -> np.ndarray, shape (channels, samples); they sum to the mixture for binary
    and soft masks.
    """
    spec = analysis.stft(stft_config)
    names = list(estimates)

    def inverse(s):
        return analysis.istft(s, stft_config)

    if wiener_iterations > 0:
        specs = wiener(spec, [estimates[n] for n in names], iterations=wiener_iterations)
        return {n: inverse(s) for n, s in zip(names, specs)}
    leading = _leading_masks([estimates[n] for n in names], mask, power, margin, residual, overwrite_estimates)
    if residual:
        names.append("residual")
    return dict(zip(names, stems_from_masks(spec, leading, analysis.audio, inverse)))


def wiener(
    mix_stft: np.ndarray,
    magnitudes: Sequence[np.ndarray],
    iterations: int = 1,
    eps: float = MASK_EPS,
) -> list[np.ndarray]:
    """Multichannel Wiener filtering with expectation-maximisation (Nugraha et al. 2016).

    Starting from the soft-masked estimates, each iteration fits per source a power spectral
    density ``v_j(f, t)`` and a spatial covariance ``R_j(f)`` (C x C), then applies the
    multichannel Wiener gain ``v_j R_j (sum_k v_k R_k)^-1`` to the mixture. This is the
    post-filter Open-Unmix uses (``norbert``).

    Parameters
    ----------
    mix_stft : np.ndarray, complex, shape (channels, bins, frames)
    magnitudes : sequence of np.ndarray, shape (channels, bins, frames) or (bins, frames)
        Magnitude estimate per source.
    iterations : int
        EM iterations; 0 returns the power-2 soft-mask estimates.

    Returns
    -------
    list of np.ndarray, complex64, shape (channels, bins, frames)
        Source STFTs; they sum to the mixture when ``iterations == 0`` and approximately after.
    """
    x = np.asarray(mix_stft)
    channels = x.shape[0]
    mags = [np.broadcast_to(np.asarray(m, dtype=np.float32), x.shape) for m in magnitudes]
    gains = soft_masks(mags, power=2.0)
    y = [(g * x).astype(np.complex64) for g in gains]
    if iterations <= 0:
        return y
    # Work in (bins, frames, channels) for batched C x C algebra.
    xt = np.ascontiguousarray(x.transpose(1, 2, 0)).astype(np.complex128)
    eye = np.eye(channels, dtype=np.complex128)
    for _ in range(iterations):
        v_list, r_list = [], []
        for yj in y:
            yt = yj.transpose(1, 2, 0).astype(np.complex128)
            v = np.mean(np.abs(yt) ** 2, axis=-1)  # (F, T)
            r = np.einsum("ftc,ftd->fcd", yt, yt.conj())
            r /= np.maximum(v.sum(axis=1), eps)[:, None, None]
            v_list.append(v)
            r_list.append(r)
        cxx = sum(v[..., None, None] * r[:, None] for v, r in zip(v_list, r_list))
        cxx = cxx + eps * eye
        inv = np.linalg.inv(cxx)  # (F, T, C, C)
        new_y = []
        for v, r in zip(v_list, r_list):
            gain = v[..., None, None] * np.einsum("fcd,ftde->ftce", r, inv)
            yt = np.einsum("ftce,fte->ftc", gain, xt)
            new_y.append(yt.transpose(2, 0, 1).astype(np.complex64))
        y = new_y
    return y
