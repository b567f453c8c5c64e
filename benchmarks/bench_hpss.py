"""HPSS: sepops ``hpss`` against ``librosa.decompose.hpss`` (librosa's defaults).

Quality: mean SDR (BSS Eval v3) over the percussive and harmonic stems of the 6 validation
loops (mono). Speed: times real time on 30 s of 44.1 kHz stereo on one thread (fastest of 5;
CPU time, the work done, beside wall time, which on a loaded machine includes waits), STFT and
inverse STFT included for both.

    python -m benchmarks.bench_hpss
"""
from __future__ import annotations

import os

# One thread everywhere, set before numpy/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np

from benchmarks.common import best_times, load_piece, pieces, print_table, stereo_44k

STEMS = ("percussive", "harmonic")


def librosa_hpss(audio: np.ndarray, sr: int) -> dict[str, np.ndarray]:
    """The reference: librosa's STFT, ``decompose.hpss`` and ISTFT, all at their defaults."""
    import librosa

    spec = librosa.stft(audio)
    harm, perc = librosa.decompose.hpss(spec)
    n = audio.shape[-1]
    return {"harmonic": librosa.istft(harm, length=n), "percussive": librosa.istft(perc, length=n)}


def run() -> list[dict]:
    import torch

    import sepops
    from sepops.metrics import bss_eval, mean_sdr, trivial_estimate

    torch.set_num_threads(1)
    ours = sepops.get_operator("hpss")
    methods = {
        "sepops hpss": lambda x, sr: ours.separate(x, sr),
        "librosa hpss (defaults)": librosa_hpss,
        "trivial (mixture / 2)": lambda x, sr: trivial_estimate(x, STEMS),
    }
    loops = [load_piece(p, stems_key="hpss_stems") for p in pieces("loops")]
    audio = stereo_44k(30.0)
    seconds = audio.shape[1] / 44100
    rows = []
    for name, fn in methods.items():
        sdrs = [mean_sdr(bss_eval(refs, fn(mix, sr)), STEMS) for mix, sr, refs in loops]
        cpu, wall = (
            best_times(lambda fn=fn: fn(audio, 44100)) if "trivial" not in name else (np.nan, np.nan)
        )
        rows.append({
            "method": name,
            "SDR perc+harm (dB)": float(np.mean(sdrs)),
            "x real time, CPU time (44.1k stereo, 1 thread)": seconds / cpu,
            "x real time, wall time": seconds / wall,
        })
    return rows


if __name__ == "__main__":
    print_table(run(), "HPSS: 6 validation loops (mono), 30 s 44.1 kHz stereo for speed")
