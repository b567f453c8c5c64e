"""Signal-processing helpers shared by the operators: fast medians and the beat spectrum.

Operators never import each other; what two of them need lives here.

- :func:`median_of`: element-wise median of a few equal arrays (REPET's segment median,
  HPSS's short-window filters), by a min/max selection network;
- :func:`median_last`: median over the last axis, by partial sort (REPET-SIM);
- :func:`median_filter_axis`: exact running median along one axis (HPSS);
- :func:`strided_time_median`: the same along time on every n-th frame, interpolated (HPSS);
- :func:`beat_spectrum`: mean autocorrelation of a spectrogram along time (REPET's period,
  NMF's loop period).
"""
from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.ndimage

__all__ = ["beat_spectrum", "median_filter_axis", "median_last", "median_of", "strided_time_median"]


def median_last(x: np.ndarray, *, overwrite_input: bool = False) -> np.ndarray:
    """Median over the last axis, float32 (a partial sort of a contiguous copy beats
    ``np.median``, which sorts along a strided axis and upcasts).

    ``overwrite_input`` lets a C-ordered float32 ``x`` be partitioned in place (no copy).
    """
    n = x.shape[-1]
    if n == 1:
        return x[..., 0].astype(np.float32)
    if overwrite_input and x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable:
        s = x
        s.partition(n // 2, axis=-1)
    else:
        s = np.partition(np.ascontiguousarray(x, dtype=np.float32), n // 2, axis=-1)
    if n % 2:
        return s[..., n // 2].copy()
    # The lower middle value is the largest of the lower half: one partition and a maximum
    # are 4x faster than numpy's partition at two kth values (the same result).
    return 0.5 * (s[..., : n // 2].max(axis=-1) + s[..., n // 2])


def median_of(arrays: list[np.ndarray], block_elems: int = 1 << 14) -> np.ndarray:
    """Element-wise median of a few equally shaped arrays, equal to :func:`median_last` of
    them stacked on a last axis.

    A min/max selection network (``k // 2`` bubble passes carry the largest values up, then
    a maximum of what is left) needs no transposed copy and no per-element partition, and is
    worked through blocks of ``block_elems`` elements so that the intermediates stay in cache.
    Only comparisons, so the result keeps the arrays' dtype (float32 for an even number of
    integer arrays, whose median is a mean). Beyond a couple of dozen arrays the network's
    ``O(k^2)`` passes lose to a partition, which works in float32.
    """
    k = len(arrays)
    if k > 24:
        return median_last(np.stack(arrays, axis=-1))
    first = np.asarray(arrays[0])
    shape = first.shape
    dtype = np.dtype(first.dtype if k % 2 or np.issubdtype(first.dtype, np.floating) else np.float32)
    if k == 1:
        return np.array(first, dtype=dtype)
    last = shape[-1] if shape else 1
    flat = [np.asarray(a, dtype=dtype).reshape(-1, last) for a in arrays]
    out = np.empty((flat[0].shape[0], last), dtype=dtype)
    rows = max(1, block_elems // max(1, last))
    full = k // 2
    for r0 in range(0, out.shape[0], rows):
        v = [a[r0 : r0 + rows] for a in flat]
        for p in range(full):
            for i in range(k - 1 - p):
                v[i], v[i + 1] = np.minimum(v[i], v[i + 1]), np.maximum(v[i], v[i + 1])
        m = v[0]
        for i in range(1, k - full):
            m = np.maximum(m, v[i])
        if k % 2 == 0:  # mean of the two middle values, as np.median
            m = dtype.type(0.5) * (m + v[k - full])
        out[r0 : r0 + rows] = m
    return out.reshape(shape)


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
    of the ``size`` shifted slices, taken by :func:`median_of`'s
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
    # np.take keeps the C layout (indexing the last axis with an array would give a
    # transposed one, slowing every later pass over the result).
    out = np.take(coarse, i0, axis=-1)
    out *= 1 - w
    out += np.take(coarse, i1, axis=-1) * w
    return out


def beat_spectrum(power: np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """Beat spectrum: mean over frequency of each bin's autocorrelation along time.

    Parameters
    ----------
    power : np.ndarray, shape (bins, frames)
        Power spectrogram.
    max_lag : int, optional
        Longest lag wanted (default: all, ``frames - 1``). Fewer lags need shorter FFTs.

    Returns
    -------
    np.ndarray, float64, shape (min(frames, max_lag + 1),)
        Lag 0 first, normalised to 1 at lag 0 (all zeros for silence). Each lag is divided
        by its number of overlapping frames (unbiased), so long lags are not penalised.
    """
    power = np.asarray(power, dtype=np.float32)  # float32 FFTs: half the work of float64
    frames = power.shape[-1]
    lags = frames if max_lag is None else max(1, min(frames, max_lag + 1))
    # Zero-padding to frames + lags makes the FFT's circular correlation a linear one for
    # every lag below ``lags`` (longer lags wrap around, and are not returned).
    n = scipy.fft.next_fast_len(frames + lags, real=True)
    spec = scipy.fft.rfft(power, n=n, axis=-1, workers=1)
    # The inverse FFT is linear: the mean over bins of the autocorrelations is the inverse
    # FFT of the mean power spectrum, so one inverse FFT replaces one per bin.
    psd = np.einsum("ij,ij->j", spec.real, spec.real, dtype=np.float64)
    psd += np.einsum("ij,ij->j", spec.imag, spec.imag, dtype=np.float64)
    acf = scipy.fft.irfft(psd / power.shape[0], n=n)[:lags]
    b = acf / (frames - np.arange(lags))
    return b / b[0] if b[0] > 0 else np.zeros_like(b)
