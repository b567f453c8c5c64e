"""Unsupervised nmf's repetition rule on training loops: loop period, quality, and the same
stems whatever the format.

    python ../shared/training/render_training_set.py --out /tmp/loops44 --loops 40 --seed 7 \\
        --sr 44100 --seconds 12
    python -m benchmarks.nmf_repetition --data /tmp/loops44

Training loops, never the validation or real sets: 2-bar drum and bass loops with a melody on
top, their true period in the manifest (``source.loop_period_s``). Three tables, each
comparing in the same run:

- **period**: ``sepops.nmf.loop_period`` (fractional candidates) against the former rule
  (whole-frame candidates, kept here as the reference), on the operator's own analysis of
  each loop resampled to 22.05, 44.1 and 48 kHz: loops found within two frames;
- **quality**: mean SDR (plain energy ratio; repeating stem against the accompaniment,
  non-repeating against the lead) of ``repetition_split="periodic"`` (default) and
  ``"components"`` (whole components, the former rule), at 44.1 and 48 kHz;
- **formats**: the first ``--copies`` loops as FLAC 44.1 kHz, WAV 48 kHz, Opus, AAC, MP3
  and Vorbis, decoded as the job decodes, for seeds 0 and 1: per loop and seed, the largest
  difference of the repeating stem's energy share from the FLAC copy's over the five other
  copies; how many are within 0.02, their median and the largest.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.common import print_table
from sepops import get_operator, load_audio
from sepops.audio import resample
from sepops.dsp import beat_spectrum
from sepops.nmf import loop_period
from sepops.spectral import Analysis

RATES = (22050, 44100, 48000)
SPLITS = ("periodic", "components")


def whole_frame_period(V, sr, hop_length, *, min_period_s=1.0, max_fraction=0.75, short_bias=0.3):
    """The former rule: whole-frame candidates, the beat spectrum at whole multiples."""
    b = beat_spectrum(np.square(np.asarray(V, dtype=np.float32)))
    T = len(b)
    lo, hi = max(1, round(min_period_s * sr / hop_length)), int(T * max_fraction)
    if hi <= lo or not b.any():
        return None
    scores = [b[L:hi:L].mean() * (1.0 - short_bias * L / T) for L in range(lo, hi)]
    return lo + int(np.argmax(scores))


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference, estimate = reference.astype(np.float64), estimate.astype(np.float64)
    return float(10 * np.log10((reference**2).sum() / max(((reference - estimate) ** 2).sum(), 1e-20)))


def load_loop(folder: Path):
    """(mixture, sr, {accompaniment, lead}) of one rendered loop."""
    mix, sr = load_audio(str(folder / "mixture.flac"))
    return mix, sr, {s: load_audio(str(folder / "stems" / f"{s}.flac"))[0] for s in ("accompaniment", "lead")}


def period_rows(loops, data: Path) -> list[dict]:
    op, found = get_operator("nmf"), {(sr, rule): 0 for sr in RATES for rule in ("fractional", "whole-frame")}
    for piece in loops:
        mix, source_sr, _ = load_loop(data / piece["id"])
        for sr in RATES:
            cfg = op.stft_config_for(sr)
            V = np.abs(Analysis(resample(mix, source_sr, sr), sr).stft(cfg)).mean(axis=0)
            true = piece["source"]["loop_period_s"] * sr / cfg.hop_length
            for rule, detect in (("fractional", loop_period), ("whole-frame", whole_frame_period)):
                period = detect(V, sr, cfg.hop_length)
                found[sr, rule] += period is not None and abs(period - true) <= 2
    return [{"rate": sr, "rule": rule, "within 2 frames": f"{n}/{len(loops)}"} for (sr, rule), n in found.items()]


def quality_rows(loops, data: Path) -> list[dict]:
    rows = []
    for sr in (44100, 48000):
        scores = {split: [] for split in SPLITS}
        for piece in loops:
            mix, source_sr, refs = load_loop(data / piece["id"])
            mix, refs = resample(mix, source_sr, sr), {k: resample(v, source_sr, sr) for k, v in refs.items()}
            for split in SPLITS:
                stems = get_operator("nmf", repetition_split=split).separate(mix, sr)
                scores[split].append((sdr(refs["accompaniment"], stems["repeating"]) + sdr(refs["lead"], stems["non_repeating"])) / 2)
        rows += [{"rate": sr, "split": s, "loops": len(v), "mean SDR (dB)": float(np.mean(v)), "min SDR (dB)": float(np.min(v))} for s, v in scores.items()]
        print(rows[-2:], flush=True)
    return rows


def format_rows(loops, data: Path, work: Path) -> list[dict]:
    from tests.sepops.test_format_consistency import (  # the test's encoders
        COPIES,
        SUFFIX,
    )

    worst = {split: [] for split in SPLITS}  # per loop and seed: the largest difference
    for piece in loops:
        mix, sr, _ = load_loop(data / piece["id"])
        copies = {}
        for name, encode in COPIES.items():
            path = work / f"{piece['id']}.{SUFFIX[name]}"
            path.write_bytes(encode(resample(mix, sr, 44100)))
            copies[name] = load_audio(str(path))
        for split in SPLITS:
            for seed in (0, 1):
                op = get_operator("nmf", repetition_split=split, seed=seed)
                shares = {}
                for name, (audio, rate) in copies.items():
                    energy = {k: float(np.sum(v.astype(np.float64) ** 2)) for k, v in op.separate(audio, rate).items()}
                    shares[name] = energy["repeating"] / sum(energy.values())
                worst[split].append(max(abs(v - shares["flac 44.1k"]) for v in shares.values()))
    return [
        {"split": s, "loops x seeds": f"{len(loops)} x 2", "within 0.02 of FLAC": f"{sum(d <= 0.02 for d in v)}/{len(v)}",
         "median largest difference": f"{np.median(v):.3f}", "largest difference": f"{max(v):.3f}"}
        for s, v in worst.items()
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a folder rendered by render_training_set.py --loops N")
    parser.add_argument("--copies", type=int, default=10, help="loops encoded in every format (default 10)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sepflow_nmf_copies"), help="folder for the encoded copies")
    args = parser.parse_args(argv)
    loops = [p for p in json.loads((args.data / "manifest.json").read_text())["pieces"] if p["subset"] == "loops"]
    args.work.mkdir(parents=True, exist_ok=True)
    print_table(period_rows(loops, args.data), f"loop period, {len(loops)} training loops")
    print_table(quality_rows(loops, args.data), "unsupervised nmf, repetition rule")
    print_table(format_rows(loops[: args.copies], args.data, args.work), "the same loop in six formats")


if __name__ == "__main__":
    main()
