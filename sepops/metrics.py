"""BSS Eval quality metrics (SDR, SIR, SAR in dB) against ground-truth stems.

The numbers are BSS Eval v3 (``mir_eval.separation.bss_eval_sources``: 512-tap distortion
filters, whole signal, no permutation), computed with fast-bss-eval's torch backend, which
agrees with mir_eval to about 1e-10 dB and is far faster. (Its numpy backend fails on
numpy >= 2.4, so the torch backend is always used.)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

__all__ = ["StemScores", "bss_eval", "mean_sdr", "trivial_estimate"]


@dataclass(frozen=True)
class StemScores:
    """BSS Eval scores of one stem, in dB (averaged over channels for multichannel audio)."""

    sdr: float
    sir: float
    sar: float


def _as_channels(x: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.asarray(x, dtype=np.float64))


def bss_eval(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    *,
    filter_length: int = 512,
) -> dict[str, StemScores]:
    """Score estimated stems against the true ones.

    Parameters
    ----------
    references, estimates : mapping of stem name -> np.ndarray, shape (channels, samples)
        Same names, same shapes. Multichannel stems are scored channel by channel and the
        scores averaged.
    filter_length : int
        Length of the allowed distortion filter (512 in BSS Eval v3).

    Returns
    -------
    dict of stem name -> StemScores
        Stems whose reference is silent in every channel score NaN (SDR is undefined there).
    """
    import fast_bss_eval
    import torch

    names = list(references)
    missing = [n for n in names if n not in estimates]
    if missing:
        raise KeyError(f"estimates lack stems {missing}; have {sorted(estimates)}")
    ref = np.stack([_as_channels(references[n]) for n in names])  # (S, C, N)
    est = np.stack([_as_channels(estimates[n]) for n in names])
    if ref.shape != est.shape:
        raise ValueError(f"reference shape {ref.shape} != estimate shape {est.shape}")
    n_src, channels, _ = ref.shape
    sdr = np.full((channels, n_src), np.nan)
    sir = np.full((channels, n_src), np.nan)
    sar = np.full((channels, n_src), np.nan)
    for c in range(channels):
        live = [i for i in range(n_src) if np.any(ref[i, c])]
        if not live:
            continue
        r = torch.from_numpy(ref[live, c])
        e = torch.from_numpy(est[live, c])
        with _one_torch_thread():
            s, i_, a = fast_bss_eval.bss_eval_sources(
                r, e, filter_length=filter_length, compute_permutation=False
            )
        sdr[c, live], sir[c, live], sar[c, live] = s.numpy(), i_.numpy(), a.numpy()
    with np.errstate(all="ignore"), _quiet_nanmean():
        return {
            n: StemScores(
                float(np.nanmean(sdr[:, k])), float(np.nanmean(sir[:, k])), float(np.nanmean(sar[:, k]))
            )
            for k, n in enumerate(names)
        }


class _one_torch_thread:
    """Run torch on one thread: torch 2.13's CPU build fails batched ``linalg.solve``
    (MKL DLASWP "parameter 6 was incorrect", then "Pivots given to lu_solve") whenever it
    uses more than one thread, and fast-bss-eval solves one batched system per stem."""

    def __enter__(self):
        import torch

        self._n = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self._n)


class _quiet_nanmean:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def mean_sdr(scores: Mapping[str, StemScores], stems=None) -> float:
    """Mean SDR over ``stems`` (default: all), ignoring undefined (NaN) stems."""
    stems = list(stems) if stems is not None else list(scores)
    vals = [scores[s].sdr for s in stems if np.isfinite(scores[s].sdr)]
    return float(np.mean(vals)) if vals else float("nan")


def trivial_estimate(mixture: np.ndarray, stems) -> dict[str, np.ndarray]:
    """The baseline every operator must beat: each stem = mixture / number of stems."""
    stems = list(stems)
    mix = np.atleast_2d(np.asarray(mixture, dtype=np.float32))
    return {s: mix / len(stems) for s in stems}
