"""BSS Eval quality metrics (SDR, SIR, SAR in dB) against ground-truth stems.

The numbers are BSS Eval v3 (``mir_eval.separation.bss_eval_sources``: 512-tap distortion
filters, whole signal, no permutation), computed with fast-bss-eval's torch backend, which
agrees with mir_eval to about 1e-10 dB and is far faster. (Its numpy backend fails on
numpy >= 2.4, so the torch backend is always used.)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "StemScores", "align", "best_assignment", "bss_eval", "frame_scores", "mean_sdr", "pair_sdr", "score_stems",
    "si_sdr", "trivial_estimate",
]


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


def align(
    references: Mapping[str, tuple[np.ndarray, int]], estimates: Mapping[str, tuple[np.ndarray, int]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Bring references and estimates to one rate, channel count and length.

    Estimates are resampled to the references' rate (the first reference's, when they
    differ). When the channel counts differ (a stereo run against mono stems) everything is
    downmixed to mono; when equal, the channels are kept and scored one by one. All signals
    are trimmed to the shortest.

    Returns
    -------
    references, estimates : dict of name -> np.ndarray (channels, samples), float64
    sample_rate : int
    """
    from .audio import resample

    sr = next(iter(references.values()))[1]
    refs = {k: resample(a, r, sr) for k, (a, r) in references.items()}
    ests = {k: resample(a, r, sr) for k, (a, r) in estimates.items()}
    signals = list(refs.values()) + list(ests.values())
    if len({a.shape[0] for a in signals}) > 1:
        refs = {k: a.mean(axis=0, keepdims=True) for k, a in refs.items()}
        ests = {k: a.mean(axis=0, keepdims=True) for k, a in ests.items()}
    n = min(a.shape[1] for a in list(refs.values()) + list(ests.values()))
    refs = {k: np.asarray(a[:, :n], dtype=np.float64) for k, a in refs.items()}
    ests = {k: np.asarray(a[:, :n], dtype=np.float64) for k, a in ests.items()}
    return refs, ests, sr


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), averaged over channels; NaN when the
    reference is silent in every channel."""
    values = []
    for r, e in zip(np.atleast_2d(reference), np.atleast_2d(estimate)):
        energy = float(np.dot(r, r))
        if energy == 0.0:
            continue
        target = (float(np.dot(e, r)) / energy) * r
        noise = float(np.sum((e - target) ** 2))
        values.append(10 * np.log10(float(np.sum(target**2)) / noise) if noise > 0 else np.inf)
    return float(np.mean(values)) if values else float("nan")


def pair_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """BSS Eval v3 SDR of one estimate against one reference (channel mean). SDR depends on
    the target reference alone, so a matrix of these ranks every assignment."""
    import fast_bss_eval
    import torch

    live = [c for c in range(reference.shape[0]) if np.any(reference[c])]
    if not live:
        return float("nan")
    with _one_torch_thread():
        # sdr_loss, not sdr: sdr also solves a permutation, which for one source is the
        # identity and fails on an infinite score (an estimate exact in float32).
        values = -fast_bss_eval.sdr_loss(
            torch.from_numpy(estimate[live][:, None, :]), torch.from_numpy(reference[live][:, None, :]), pairwise=True
        )[..., 0, 0].numpy()
    return float(np.mean(values))


def frame_scores(
    references: Sequence[np.ndarray], estimates: Sequence[np.ndarray], sr: int, frame_s: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BSS Eval v3 over consecutive frames of ``frame_s`` seconds (museval's framing).

    A frame where a stem's reference or estimate is silent scores NaN for that stem (the
    other stems of the frame are scored against the live references only).

    Returns
    -------
    sdr, sir, sar : np.ndarray, shape (stems, frames)
        Averaged over channels.
    """
    import fast_bss_eval
    import torch

    ref = np.stack(references)  # (S, C, N)
    est = np.stack(estimates)
    n_src, channels, n = ref.shape
    win = round(frame_s * sr)
    n_frames = max(1, n // win) if n >= win else 1
    win = min(win, n)
    out = np.full((3, channels, n_src, n_frames), np.nan)
    framed_ref = ref[:, :, : n_frames * win].reshape(n_src, channels, n_frames, win)
    framed_est = est[:, :, : n_frames * win].reshape(n_src, channels, n_frames, win)
    ref_live = np.any(framed_ref, axis=-1)  # (S, C, F)
    est_live = np.any(framed_est, axis=-1)
    with _one_torch_thread():
        for c in range(channels):
            # Frames where every reference sounds are scored in one batched call (the common
            # case); the others one by one, against their live references only.
            full = np.flatnonzero(ref_live[:, c].all(axis=0))
            batches = [(full, list(range(n_src)))] if full.size else []
            batches += [(np.array([f]), [i for i in range(n_src) if ref_live[i, c, f]])
                        for f in range(n_frames) if not ref_live[:, c, f].all()]
            for frames, live in batches:
                if not live:
                    continue
                r = np.ascontiguousarray(framed_ref[live, c][:, frames].transpose(1, 0, 2))  # (F, S, W)
                e = np.ascontiguousarray(framed_est[live, c][:, frames].transpose(1, 0, 2))
                try:
                    s, i_, a = fast_bss_eval.bss_eval_sources(
                        torch.from_numpy(r), torch.from_numpy(e), compute_permutation=False
                    )
                except RuntimeError:  # a near-silent frame's singular system: no score
                    continue
                for k, i in enumerate(live):
                    out[0, c, i, frames] = s[:, k].numpy()
                    out[1, c, i, frames] = i_[:, k].numpy()
                    out[2, c, i, frames] = a[:, k].numpy()
    # A silent estimate's frame has no defined score (museval leaves it out of the median).
    out[:, ~np.broadcast_to(est_live.transpose(1, 0, 2), (channels, n_src, n_frames))] = np.nan
    with _quiet_nanmean():
        sdr, sir, sar = (np.nanmean(out[m], axis=0) for m in range(3))
    return sdr, sir, sar


def score_stems(references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray], sr: int) -> dict[str, dict]:
    """Every score ``sepflow evaluate`` records, for aligned stems (see :func:`align`).

    Parameters
    ----------
    references, estimates : mapping of reference stem -> np.ndarray (channels, samples)
        Estimates keyed by the reference stem they are scored against; the references are
        the whole group (BSS Eval's interference is measured against the group's others).
    sr : int

    Returns
    -------
    dict of reference stem -> dict of sdr, sir, sar, the frame medians, si_sdr, frames, duration_s
    """
    names = list(references)
    whole = bss_eval(references, estimates)
    f_sdr, f_sir, f_sar = frame_scores([references[n] for n in names], [estimates[n] for n in names], sr)
    scores = {}
    with _quiet_nanmean():
        for k, name in enumerate(names):
            finite = np.isfinite(f_sdr[k])
            scores[name] = {
                "sdr": whole[name].sdr,
                "sir": whole[name].sir,
                "sar": whole[name].sar,
                "sdr_frames_median": float(np.median(f_sdr[k][finite])) if finite.any() else float("nan"),
                "sir_frames_median": float(np.median(f_sir[k][finite])) if finite.any() else float("nan"),
                "sar_frames_median": float(np.median(f_sar[k][finite])) if finite.any() else float("nan"),
                "si_sdr": si_sdr(references[name], estimates[name]),
                "frames": int(finite.sum()),
                "duration_s": references[name].shape[-1] / sr,
            }
    return scores


def best_assignment(
    references: Mapping[str, np.ndarray], estimates: Mapping[str, np.ndarray], groups: Sequence[Sequence[str]]
) -> dict[str, str]:
    """Estimate stem -> reference stem: over the candidate ``groups`` of reference stems (each
    as many as the estimates) and their permutations, the one with the highest mean SDR.

    Parameters
    ----------
    references, estimates : mapping of name -> np.ndarray (channels, samples), aligned
    groups : sequence of sequences of reference names

    Returns
    -------
    dict of estimate name -> reference name
    """
    import itertools

    names = list(estimates)
    needed = sorted({s for g in groups for s in g})
    # An undefined SDR (silent reference) must never win an assignment.
    sdr = {
        (e, r): np.nan_to_num(pair_sdr(references[r], estimates[e]), nan=-1e3, posinf=1e3, neginf=-1e3)
        for e in names for r in needed
    }
    best, best_score = None, -np.inf
    for group in groups:
        for perm in itertools.permutations(group):
            score = float(np.mean([sdr[(e, r)] for e, r in zip(names, perm)]))
            if score > best_score:
                best, best_score = dict(zip(names, perm)), score
    return best


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
