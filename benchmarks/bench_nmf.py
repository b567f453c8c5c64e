"""NMF operator vs scikit-learn's NMF: SDR on the validation set, speed at 1 thread.

    python -m benchmarks.bench_nmf

Quality (BSS Eval v3, whole 12 s, mean SDR over the task's stems, 6 pieces each):

- unsupervised, loops accompaniment/lead: ours (KL, 30 components, periodic repetition split; its
  stems ``repeating`` and ``non_repeating`` scored as accompaniment and lead, ``AS_LOOPS``) vs
  sklearn ``NMF(beta_loss="kullback-leibler", solver="mu")`` with 20 components grouped by
  k-means on the log templates (the two clusters named by the better of the two assignments,
  which favours the reference);
- supervised, loops and chorales with the shipped dictionaries: ours vs sklearn's
  ``non_negative_factorization(update_H=False)`` fitting the activations over the same fixed
  dictionary, same masks;
- the trivial estimate (mixture / number of stems).

Speed: 30 s of 44.1 kHz stereo, one thread (``torch.set_num_threads(1)`` and the BLAS
variables), whole operator (STFT, factorisation, masks, inverse STFT) for ours at its defaults
(unsupervised 100 iterations, supervised 40, fitted below 11.025 kHz, tol 1e-4) and at 100
iterations with tol 0, and the factorisation alone (100 iterations, tol 0, all bins) for sklearn,
all in the same run. x real time = 30 s / best-of-3 time (wall clock, and process
CPU time, which is less disturbed by other load on a shared machine).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import warnings

import numpy as np

from benchmarks.common import best_times, load_piece, pieces, print_table, stereo_44k
from sepops import get_operator
from sepops.masks import stems_from_estimates
from sepops.metrics import bss_eval, mean_sdr, trivial_estimate
from sepops.spectral import Analysis, StftConfig

CFG = StftConfig(2048, 512)
#: The unsupervised (repetition-grouped) stems as the loops' references: the repeating loop
#: is their accompaniment, the non-repeating melody their lead.
AS_LOOPS = {"repeating": "accompaniment", "non_repeating": "lead"}


def _sklearn_unsupervised(mix, sr, refs):
    """sklearn KL NMF, 20 components, k-means (2) on log templates; the better naming."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import NMF

    an = Analysis(mix, sr)
    V = np.abs(an.stft(CFG)).mean(axis=0)
    model = NMF(20, beta_loss="kullback-leibler", solver="mu", max_iter=200, init="random", random_state=0)
    H = model.fit_transform(V.T).T  # sklearn factorises (frames, bins)
    W = model.components_.T
    feats = np.log(W / W.sum(axis=0) + 1e-9).T
    labels = KMeans(2, n_init=10, random_state=0).fit_predict(feats)
    names = list(refs)
    best = -np.inf
    for order in ([0, 1], [1, 0]):
        est = {n: W[:, labels == k] @ H[labels == k] + 1e-12 for n, k in zip(names, order)}
        best = max(best, mean_sdr(bss_eval(refs, stems_from_estimates(an, CFG, est, power=2.0))))
    return best


def _sklearn_supervised(op, mix, sr, refs):
    """sklearn fits the activations over our fixed dictionary; same masks as ours."""
    from sklearn.decomposition import non_negative_factorization

    d = op.dictionary
    an = Analysis(mix, sr)
    V = np.abs(an.stft(CFG)).mean(axis=0)
    W = np.concatenate([d.templates[s] for s in d.stems], axis=1)
    H, _, _ = non_negative_factorization(
        V.T, H=W.T.copy(), W=None, n_components=W.shape[1], update_H=False, init="custom",
        beta_loss="kullback-leibler", solver="mu", max_iter=op.config.n_iter or 100, random_state=0,
    )
    H = H.T
    est, start = {}, 0
    for s in d.stems:
        k = d.templates[s].shape[1]
        est[s] = d.templates[s] @ H[start : start + k]
        start += k
    return mean_sdr(bss_eval(refs, stems_from_estimates(an, CFG, est, power=2.0)))


def quality_rows() -> list[dict]:
    rows = []
    tasks = [
        ("unsupervised", "loops", {}),
        ("supervised", "loops", {"dictionary": "loops_accompaniment_lead"}),
        ("supervised", "chorales", {"dictionary": "chorales_satb"}),
    ]
    for mode, subset, params in tasks:
        op = get_operator("nmf", **params)
        ours, ref, triv = [], [], []
        for piece in pieces(subset):
            mix, sr, refs = load_piece(piece)
            est = op.separate(mix, sr)
            if mode == "unsupervised":
                est = {AS_LOOPS[k]: v for k, v in est.items()}
            ours.append(mean_sdr(bss_eval(refs, est)))
            triv.append(mean_sdr(bss_eval(refs, trivial_estimate(mix, refs))))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning
                if mode == "unsupervised":
                    ref.append(_sklearn_unsupervised(mix, sr, refs))
                else:
                    ref.append(_sklearn_supervised(op, mix, sr, refs))
        rows.append({
            "task": f"{mode} {subset}", "ours SDR dB": float(np.mean(ours)),
            "sklearn SDR dB": float(np.mean(ref)), "trivial SDR dB": float(np.mean(triv)),
        })
    return rows


def speed_rows(seconds: float = 30.0) -> list[dict]:
    import torch
    from sklearn.decomposition import NMF

    torch.set_num_threads(1)
    x = stereo_44k(seconds)
    sr = 44100
    rows = []
    for label, params in [("unsupervised", {}), ("supervised loops", {"dictionary": "loops_accompaniment_lead"})]:
        op = get_operator("nmf", **params)
        ours_cpu, ours_wall = best_times(lambda op=op: op.separate(x, sr), repeat=3)
        op100 = get_operator("nmf", n_iter=100, tol=0, **params)
        c100, w100 = best_times(lambda op=op100: op.separate(x, sr), repeat=3)
        cfg = op.stft_config_for(sr)
        V = np.abs(Analysis(x, sr).stft(cfg)).mean(axis=0)
        k = op.config.n_components if not params else sum(W.shape[1] for W in op.dictionary.templates.values())

        def reference(V=V, k=k):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                NMF(k, beta_loss="kullback-leibler", solver="mu", max_iter=100, tol=0, init="random",
                    random_state=0).fit_transform(V.T)

        ref_cpu, ref_wall = best_times(reference, repeat=1)
        rows.append({
            "task": f"{label}, {seconds:.0f} s 44.1 kHz stereo, {k} components",
            "ours x RT (wall)": seconds / ours_wall, "ours x RT (CPU)": seconds / ours_cpu,
            "ours 100 it x RT (wall)": seconds / w100, "ours 100 it x RT (CPU)": seconds / c100,
            "sklearn x RT (wall)": seconds / ref_wall, "sklearn x RT (CPU)": seconds / ref_cpu,
        })
    return rows


def run() -> list[dict]:
    """Quality rows then speed rows (two tables in ``__main__``)."""
    return quality_rows() + speed_rows()


if __name__ == "__main__":
    rows = run()
    print_table([r for r in rows if "ours SDR dB" in r], "NMF quality (validation set, mean SDR)")
    print_table([r for r in rows if "ours x RT (wall)" in r], "NMF speed (1 thread; ours at defaults and at 100 iterations, sklearn 100)")
    print(f"\nload average: {os.getloadavg()[0]:.1f}")
