"""An hour-long track through `sepflow run`: peak memory of the process and x real time,
and the cost of separating in blocks, for every operator.

    python -m benchmarks.long_track                            # 60 min, every operator, streamed
    python -m benchmarks.long_track --operator hpss --modes streamed,whole --minutes 20
    python -m benchmarks.long_track --operator repet,nmf --songs 60      # blocks vs whole, seams
    python -m benchmarks.long_track --operator hpss --seams 60           # 12 s pieces (exact ones)

The track is 44.1 kHz stereo FLAC made of the validation pieces (loops and chorales),
resampled, each with a random gain between -12 and 0 dB, end to end until the length is
reached; it is written block by block, so making it needs no more memory than running it.
Each mode runs `sepflow run` in a fresh process (in-process runner) and reads its peak RSS
from the kernel (``ru_maxrss`` of the child):

- ``streamed``: ``--set job.stream_above_mb=0`` (the default streams tracks over 64 MB or
  600 s): decoded, separated and written in blocks of ``block_s`` seconds;
- ``whole``: ``--set job.stream_above_mb=null --set job.stream_above_s=null``: decoded
  whole, separated whole.

Operators (``--operator``, comma-separated, or ``all``): hpss, repet, repet_sim, nmf
(unsupervised), nmf_sup (the shipped loops dictionary), ica, unet.

``--songs MINUTES``: the cost of blocks. Songs of ``--song-s`` seconds (default 180) are made
from the validation loops (:func:`benchmarks.common.loop_song`: a loop that repeats under
melodies that do not, 22.05 kHz, mono; stereo for ica), one after the other until the length
is reached; each song separated whole is compared with the same song cut from the streamed
concatenation (blocks of 60 s), by SDR against its true stems. This measures windowed
operators' cost (REPET, unsupervised NMF), any seam, and the effect of the neighbouring
song at each change. ``--seams MINUTES``: the same with the validation loops themselves
(12 s pieces), for the exact operators. Figures only, nothing here asserts.
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import DATA_DIR, manifest, print_table

ROOT = Path(__file__).resolve().parents[1]

#: name -> (operator, its parameters): what --operator accepts.
PRESETS = {
    "hpss": ("hpss", {}),
    "repet": ("repet", {}),
    "repet_sim": ("repet_sim", {}),
    "nmf": ("nmf", {}),
    "nmf_sup": ("nmf", {"dictionary": "loops_accompaniment_lead"}),
    "ica": ("ica", {}),
    "unet": ("unet", {"device": "cpu"}),
}
#: Stem names of the operators, as the validation set's.
#: Stems scored as the loops' references: REPET's, and unsupervised NMF's (repetition grouping).
_AS_REFS = {"background": "accompaniment", "foreground": "lead", "repeating": "accompaniment",
            "non_repeating": "lead"}


def make_track(path: Path, minutes: float, seed: int = 0) -> float:
    """Write the test track; returns its length in seconds."""
    import numpy as np

    from sepops import load_audio
    from sepops.audio import resample
    from sepops.stream import open_writer

    rng = np.random.default_rng(seed)
    pieces = [p for p in manifest()["pieces"]]
    clips = []
    for p in pieces:
        mix, sr = load_audio(str(DATA_DIR / p["files"]["mixture_stereo"]))
        clips.append(resample(mix, sr, 44100))
    target = int(minutes * 60 * 44100)
    written = 0
    with open_writer(str(path), 44100, 2, format="flac", subtype="PCM_16") as out:
        while written < target:
            clip = clips[int(rng.integers(len(clips)))]
            gain = 10 ** (rng.uniform(-12, 0) / 20)
            block = clip[:, : target - written] * gain
            out.write(block)
            written += block.shape[1]
    return written / 44100


def run(track: Path, preset: str, mode: str, out: Path, extra: list[str] = ()) -> dict:
    operator, params = PRESETS[preset]
    args = [sys.executable, "-m", "pipelines.cli", "run", "--operator", operator, "--input", str(track),
            "--output", str(out), "--no_progress", "--set", "job.track_timeout_s=null"]
    for item in extra:
        args += ["--set", item]
    for key, value in params.items():
        args += ["--set", f"{operator}.{key}={value}"]
    if mode == "streamed":
        args += ["--set", "job.stream_above_mb=0"]
    else:
        args += ["--set", "job.stream_above_mb=null", "--set", "job.stream_above_s=null"]
    # A wrapper process per run: RUSAGE_CHILDREN's peak is then this run's alone.
    wrapper = ("import resource, subprocess, sys\n"
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stderr.write(done.stderr)\n"
               "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, *args], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - started
    code, peak_kb = (int(v) for v in done.stdout.split())
    if code != 0:
        raise SystemExit(f"{mode}: sepflow run failed:\n{done.stderr[-3000:]}")
    return {"mode": mode, "wall_s": wall, "peak_kb": peak_kb}


def _sdr(refs: dict, stems: dict) -> float:
    """Mean SDR of ``stems`` against ``refs``; unnamed stems (ICA's) by the best assignment."""
    from sepops.metrics import bss_eval, mean_sdr

    stems = {_AS_REFS.get(k, k): v for k, v in stems.items()}
    if set(refs) <= set(stems):
        return mean_sdr(bss_eval(refs, stems))
    names, values = list(refs), list(stems.values())
    return max(mean_sdr(bss_eval(refs, dict(zip(names, perm)))) for perm in itertools.permutations(values, len(names)))


def _cut_check(preset: str, pieces: list, order: list[int], block_s: float) -> dict:
    """SDR of each piece separated alone, against the same piece cut from the streamed
    concatenation of ``pieces`` in ``order``."""
    import numpy as np
    import soundfile as sf

    import sepops
    from sepops.blocks import separate_blocks
    from sepops.stream import open_stream

    operator, params = PRESETS[preset]
    op = sepops.get_operator(operator, **params)
    t = time.perf_counter()
    alone = [_sdr(refs, op.separate(mix, sr)) for mix, sr, refs in pieces]
    alone_s = time.perf_counter() - t
    sr = pieces[0][1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "concat.wav"
        sf.write(str(path), np.concatenate([pieces[i][0] for i in order], axis=1).T, sr, subtype="FLOAT")
        t = time.perf_counter()
        fitted = op.fit_stream(lambda: open_stream(str(path)))
        with open_stream(str(path)) as stream:
            blocks = list(separate_blocks(fitted, stream, block_s=block_s))
        stream_s = time.perf_counter() - t
    stems = {name: np.concatenate([b[1][name] for b in blocks], axis=1) for name in blocks[0][1]}
    cut, start = [], 0
    for i in order:
        mix, _, refs = pieces[i]
        n = mix.shape[1]
        cut.append(_sdr(refs, {k: v[:, start : start + n] for k, v in stems.items()}))
        start += n
    diffs = [c - alone[i] for c, i in zip(cut, order)]
    spec = fitted.block_context(sr)
    return {"operator": preset, "blocks": "cross-faded" if spec.crossfade else "cut",
            "pieces": len(order), "minutes": start / sr / 60,
            "SDR alone (dB)": float(np.mean([alone[i] for i in order])), "SDR cut from the stream (dB)": float(np.mean(cut)),
            "mean difference (dB)": float(np.mean(diffs)), "largest |difference| per piece (dB)": float(np.max(np.abs(diffs))),
            "x real time alone / streamed": f"{sum(p[0].shape[1] for p in pieces) / sr / alone_s:.0f} / {start / sr / stream_s:.0f}"}


def seam_check(preset: str, minutes: float, block_s: float) -> dict:
    """The 6 validation loops (12 s) separated alone, against the same pieces cut from a long
    concatenation of them that was streamed in blocks: no seams, no drift (exact operators)."""
    from benchmarks.common import load_piece, pieces

    stems_key = "hpss_stems" if preset == "hpss" else "stems"
    loops = [load_piece(p, stems_key=stems_key, stereo=preset == "ica") for p in pieces("loops")]
    order = [i % len(loops) for i in range(int(minutes * 60 / 12) + 1)]
    return _cut_check(preset, loops, order, block_s)


def song_check(preset: str, minutes: float, song_s: float, block_s: float) -> dict:
    """Songs made from the validation loops (:func:`benchmarks.common.loop_song`), each
    separated whole, against the same songs cut from their streamed concatenation."""
    from benchmarks.common import loop_song

    songs = [loop_song(i, song_s, stereo=preset == "ica") for i in range(6)]
    order = [i % len(songs) for i in range(max(1, round(minutes * 60 / song_s)))]
    return _cut_check(preset, songs, order, block_s)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--operator", default="all", help=f"comma-separated, of {', '.join(PRESETS)}; or all")
    parser.add_argument("--modes", default="streamed", help="comma-separated: streamed, whole")
    parser.add_argument("--seams", type=float, default=0.0, metavar="MINUTES",
                        help="instead: the cut check on a concatenation of the validation loops this long")
    parser.add_argument("--songs", type=float, default=0.0, metavar="MINUTES",
                        help="instead: the cut check on a concatenation of songs made from the loops")
    parser.add_argument("--song-s", type=float, default=180.0, help="length of each song (--songs)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to sepflow run (e.g. features.loudness=false); repeatable")
    parser.add_argument("--no-features", action="store_true",
                        help="also run each mode with every feature off (the features' share of memory and time)")
    args = parser.parse_args(argv)
    presets = list(PRESETS) if args.operator == "all" else args.operator.split(",")
    if args.seams or args.songs:
        rows = []
        for preset in presets:
            rows.append(seam_check(preset, args.seams, 60.0) if args.seams
                        else song_check(preset, args.songs, args.song_s, 60.0))
            print_table(rows[-1:])
        what = "validation loops (12 s)" if args.seams else f"{args.song_s:.0f} s songs"
        print_table(rows, f"{what} separated alone vs cut from a streamed concatenation")
        return
    with tempfile.TemporaryDirectory(prefix="sepflow-long-") as tmp:
        tmp = Path(tmp)
        track = tmp / "long.flac"
        t = time.perf_counter()
        seconds = make_track(track, args.minutes)
        print(f"# {seconds / 60:.1f} min of 44.1 kHz stereo FLAC ({track.stat().st_size / 1e6:.0f} MB) "
              f"made in {time.perf_counter() - t:.0f} s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        rows = []
        off = ["features.activity=false", "features.onsets=false", "features.loudness=false"]
        variants = [("default", args.overrides)] + ([("no features", args.overrides + off)] if args.no_features else [])
        for preset, mode, (name, extra) in itertools.product(presets, args.modes.split(","), variants):
            r = run(track, preset, mode, tmp / f"out-{preset}-{mode}-{len(extra)}", extra)
            rows.append({
                "operator": preset,
                "mode": mode,
                "features": name,
                "peak RSS of the process (GB)": r["peak_kb"] / 1e6,
                "wall time (s)": r["wall_s"],
                "x real time (wall, incl. start-up)": seconds / r["wall_s"],
            })
            print_table(rows[-1:])
        print_table(rows, f"{seconds / 60:.0f}-minute track through sepflow run")


if __name__ == "__main__":
    main()
