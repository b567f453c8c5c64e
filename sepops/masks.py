"""Time-frequency masks: binary, soft (ratio), and multichannel Wiener filtering.

For two sources with magnitude estimates ``F1``, ``F2`` the reference definitions are the
binary mask ``M1 = (F1 > F2)`` and the soft mask ``M1 = F1 / (F1 + F2)``; both generalise
to N sources below. Masks of one call sum to 1 in every bin, so the masked stems sum back to
the mixture exactly.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MASK_KINDS", "binary_masks", "masks", "soft_masks", "wiener"]

MASK_KINDS = ("binary", "soft")
_EPS = 1e-10


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


def soft_masks(estimates: Sequence[np.ndarray], power: float = 1.0) -> list[np.ndarray]:
    """Ratio masks ``M_i = F_i^p / sum_j F_j^p``.

    With ``power=1`` and two sources this is ``M1 = F1 / (F1 + F2)``; ``power=2`` gives the
    single-channel Wiener gain. Bins where every estimate is zero are shared equally.
    """
    stack = np.stack([np.asarray(e, dtype=np.float32) for e in estimates])
    if power == 2.0:
        np.square(stack, out=stack)
    elif power != 1.0:
        np.power(stack, np.float32(power), out=stack)
    total = stack.sum(axis=0)
    empty = total <= _EPS
    np.maximum(total, _EPS, out=total)
    stack /= total
    if empty.any():
        stack[:, empty] = 1.0 / stack.shape[0]
    return list(stack)


def masks(estimates: Sequence[np.ndarray], kind: str = "soft", power: float = 1.0) -> list[np.ndarray]:
    """Dispatch to :func:`binary_masks` or :func:`soft_masks` by name."""
    if kind == "binary":
        return binary_masks(estimates)
    if kind == "soft":
        return soft_masks(estimates, power)
    raise ValueError(f"unknown mask kind {kind!r}; choose one of {MASK_KINDS}")


def wiener(
    mix_stft: np.ndarray,
    magnitudes: Sequence[np.ndarray],
    iterations: int = 1,
    eps: float = 1e-10,
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
    channels, bins, frames = x.shape
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
