"""ICA operator vs scikit-learn's FastICA: SDR on the stereo validation loops, speed at 1 thread.

    python -m benchmarks.bench_ica

Quality: the 6 validation loops' ``mixture_stereo.flac`` (a determined 2 x 2 instantaneous
mix of accompaniment and lead), scored (BSS Eval v3, whole 12 s) against the stereo reference
images, each estimate matched to a stem by the best permutation. sklearn's
``FastICA(2, whiten="unit-variance")`` sources are turned into images the same way
(``mixing_[:, i] * s_i``, plus half the mean each).

Speed: 30 s of 44.1 kHz stereo, one thread, whole operator (fit + images) vs sklearn's
``fit_transform``. x real time = 30 s / best time (wall clock, and process CPU time).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import warnings

import numpy as np

from benchmarks.common import best_times, load_piece, pieces, print_table, stereo_44k
from sepops import get_operator
from sepops.metrics import best_assignment, bss_eval, mean_sdr


def matched_sdr(refs: dict, estimates: list) -> float:
    """Mean SDR of the estimates, each scored against the stem :func:`best_assignment` gives it."""
    named = {f"estimate_{j}": e for j, e in enumerate(estimates)}
    match = best_assignment(refs, named, [list(refs)])
    return mean_sdr(bss_eval(refs, {match[e]: x for e, x in named.items()}))


def sklearn_images(mix: np.ndarray) -> list:
    from sklearn.decomposition import FastICA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ica = FastICA(mix.shape[0], whiten="unit-variance", random_state=0)
        S = ica.fit_transform(mix.T.astype(np.float64))
    n = S.shape[1]
    return [(np.outer(ica.mixing_[:, i], S[:, i]) + ica.mean_[:, None] / n).astype(np.float32) for i in range(n)]


def quality_rows() -> list[dict]:
    op = get_operator("ica")
    ours, ref = [], []
    for piece in pieces("loops"):
        mix, sr, refs = load_piece(piece, stereo=True)
        ours.append(matched_sdr(refs, list(op.separate(mix, sr).values())))
        ref.append(matched_sdr(refs, sklearn_images(mix)))
    return [{"task": "stereo loops (2 x 2), 6 pieces", "ours SDR dB": float(np.mean(ours)),
             "sklearn SDR dB": float(np.mean(ref)), "ours min dB": float(np.min(ours))}]


def speed_rows(seconds: float = 30.0) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    x = stereo_44k(seconds)
    op = get_operator("ica")
    ours_cpu, ours_wall = best_times(lambda: op.separate(x, 44100), repeat=3)
    ref_cpu, ref_wall = best_times(lambda: sklearn_images(x), repeat=3)
    return [{"task": f"{seconds:.0f} s 44.1 kHz stereo", "ours x RT (wall)": seconds / ours_wall,
             "ours x RT (CPU)": seconds / ours_cpu, "sklearn x RT (wall)": seconds / ref_wall,
             "sklearn x RT (CPU)": seconds / ref_cpu}]


def run() -> list[dict]:
    """Quality row then speed row (two tables in ``__main__``)."""
    return quality_rows() + speed_rows()


if __name__ == "__main__":
    rows = run()
    print_table([r for r in rows if "ours SDR dB" in r], "ICA quality (validation stereo loops)")
    print_table([r for r in rows if "ours x RT (wall)" in r], "ICA speed (1 thread)")
    print(f"\nload average: {os.getloadavg()[0]:.1f}")
