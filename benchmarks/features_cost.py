"""What the features table costs, as a share of each operator's separation time.

    python -m benchmarks.features_cost                 # 30 s of 44.1 kHz stereo, every operator
    python -m benchmarks.features_cost --seconds 60 hpss unet

For each operator: its separation of the signal (best of 3, one thread), then the features of
its stems (``sepops.features.extract_features``, as the pipeline computes them in the unit):
the job's defaults (activity, onsets, loudness) and everything (plus tempo/beats, chroma per
beat and pyin f0 with every stem counted as a rhythm, chroma and pitch stem: the worst case).
Figures only; nothing here asserts on time.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import platform

from benchmarks.common import best_time, print_table, stereo_44k

OPERATORS = ["hpss", "repet", "repet_sim", "nmf", "ica", "unet"]


def run(names: list[str], seconds: float) -> list[dict]:
    import torch

    torch.set_num_threads(1)
    import sepops
    from sepops.features import FeatureSettings, extract_features

    audio, sr = stereo_44k(seconds), 44100
    everything = FeatureSettings(
        rhythm=True, chroma=True, pitch=True, rhythm_stems=("*",), chroma_stems=("*",), pitch_stems=("*",)
    )
    extract_features({"warm": audio[:, : 5 * sr]}, sr, everything)  # numba compiles once, outside the timing
    rows = []
    for name in names:
        op = sepops.get_operator(name)
        stems = op.separate(audio, sr)
        separation = best_time(lambda: op.separate(audio, sr))
        default = best_time(lambda: extract_features(stems, sr, FeatureSettings()))
        full = best_time(lambda: extract_features(stems, sr, everything), repeat=1)
        rows.append({
            "operator": name,
            "stems": len(stems),
            "separation s": f"{separation:.2f}",
            "default features s": f"{default:.3f}",
            "default / separation": f"{100 * default / separation:.1f} %",
            "all features s": f"{full:.2f}",
            "all / separation": f"{100 * full / separation:.0f} %",
        })
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("operators", nargs="*", default=OPERATORS)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    print(f"# features cost: {args.seconds:g} s of 44.1 kHz stereo, one thread; {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print_table(run(args.operators, args.seconds), "feature extraction vs separation, same run")


if __name__ == "__main__":
    main()
