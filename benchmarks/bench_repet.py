"""REPET and REPET-SIM: sepops against compact reference implementations.

References, side by side in one run:

* ``reference REPET``: a compact, straightforward numpy port of Rafii's original REPET code
  (Hamming window of ~40 ms, half overlap, beat spectrum, period = beat-spectrum maximum in
  1-6 s, median repeating segment, ``min(W, V) / V`` mask, 100 Hz high-pass), written below.
* ``librosa REPET-SIM example``: librosa's vocal-separation example as written
  (``decompose.nn_filter`` median over cosine neighbours at least 2 s apart, soft masks with
  margins 2 and 10).

Quality: mean SDR (BSS Eval v3) over accompaniment (= background) and lead (= foreground) of
the 6 validation loops (mono). Speed: times real time on 30 s of 44.1 kHz stereo, one thread
(fastest of 5; CPU time, the work done, beside wall time, which on a loaded machine includes
waits).

    python -m benchmarks.bench_repet
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np
import scipy.signal

from benchmarks.common import best_times, load_piece, pieces, print_table, stereo_44k

STEMS = ("accompaniment", "lead")
AS_TASK = {"background": "accompaniment", "foreground": "lead"}


def reference_repet(audio: np.ndarray, sr: int, period_range_s=(1.0, 6.0), cutoff_hz=100.0):
    """REPET as in Rafii's original code, in plain numpy/scipy. Returns background, foreground."""
    audio = np.atleast_2d(audio)
    win = int(2 ** np.ceil(np.log2(0.04 * sr)))  # ~40 ms, power of 2
    hop = win // 2
    _, _, x = scipy.signal.stft(audio, window="hamming", nperseg=win, noverlap=win - hop)
    v = np.abs(x)  # (channels, bins, frames)
    frames = v.shape[-1]
    # Beat spectrum: unbiased autocorrelation of each bin's power, averaged over bins.
    pw = np.mean(v**2, axis=0)
    f = np.fft.rfft(pw, n=2 * frames, axis=1)
    acf = np.fft.irfft(np.abs(f) ** 2, axis=1)[:, :frames] / (frames - np.arange(frames))
    beat = acf.mean(axis=0)
    lo, hi = (round(s * sr / hop) for s in period_range_s)
    hi = min(hi, frames // 2)
    p = lo + int(np.argmax(beat[lo : hi + 1]))
    # Repeating segment: median over the period-long segments (NaN-padded last one).
    r = int(np.ceil(frames / p))
    pad = np.full(v.shape[:-1] + (r * p - frames,), np.nan)
    segs = np.concatenate([v, pad], axis=-1).reshape(v.shape[:-1] + (r, p))
    model = np.nanmedian(segs, axis=-2)
    w = np.minimum(np.tile(model, (1, 1, r))[..., :frames], v)
    mask = (w + 1e-16) / (v + 1e-16)
    cof = int(np.ceil(cutoff_hz * (win - 1) / sr))
    mask[:, 1 : cof + 1, :] = 1.0
    _, bg = scipy.signal.istft(mask * x, window="hamming", nperseg=win, noverlap=win - hop)
    bg = bg[:, : audio.shape[1]].astype(np.float32)
    return {"background": bg, "foreground": audio - bg}


def librosa_repet_sim(audio: np.ndarray, sr: int):
    """librosa's vocal-separation example (REPET-SIM style), as written, channel by channel."""
    import librosa

    out = {"background": [], "foreground": []}
    for y in np.atleast_2d(audio):
        s_full, phase = librosa.magphase(librosa.stft(y))
        s_filter = librosa.decompose.nn_filter(
            s_full, aggregate=np.median, metric="cosine", width=int(librosa.time_to_frames(2, sr=sr))
        )
        s_filter = np.minimum(s_full, s_filter)
        margin_i, margin_v, power = 2, 10, 2
        mask_i = librosa.util.softmask(s_filter, margin_i * (s_full - s_filter), power=power)
        mask_v = librosa.util.softmask(s_full - s_filter, margin_v * s_filter, power=power)
        out["background"].append(librosa.istft(mask_i * s_full * phase, length=len(y)))
        out["foreground"].append(librosa.istft(mask_v * s_full * phase, length=len(y)))
    return {k: np.stack(v) for k, v in out.items()}


def run() -> list[dict]:
    import torch

    import sepops
    from sepops.metrics import bss_eval, mean_sdr, trivial_estimate

    torch.set_num_threads(1)
    repet, repet_sim = sepops.get_operator("repet"), sepops.get_operator("repet_sim")
    methods = {
        "sepops repet": repet.separate,
        "reference REPET (Rafii's code, 1-6 s)": reference_repet,
        "sepops repet_sim": repet_sim.separate,
        "librosa REPET-SIM example": librosa_repet_sim,
        "trivial (mixture / 2)": None,
    }
    loops = [load_piece(p) for p in pieces("loops")]
    audio = stereo_44k(30.0)
    seconds = audio.shape[1] / 44100
    rows = []
    for name, fn in methods.items():
        sdrs = []
        for mix, sr, refs in loops:
            est = trivial_estimate(mix, STEMS) if fn is None else {AS_TASK[k]: v for k, v in fn(mix, sr).items()}
            sdrs.append(mean_sdr(bss_eval(refs, est), STEMS))
        cpu, wall = (np.nan, np.nan) if fn is None else best_times(lambda fn=fn: fn(audio, 44100))
        rows.append({
            "method": name,
            "SDR acc+lead (dB)": float(np.mean(sdrs)),
            "x real time, CPU time (44.1k stereo, 1 thread)": seconds / cpu,
            "x real time, wall time": seconds / wall,
        })
    return rows


if __name__ == "__main__":
    print_table(run(), "REPET: 6 validation loops (mono), 30 s 44.1 kHz stereo for speed")
