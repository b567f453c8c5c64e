"""An hour-long track through `sepflow run`: peak memory of the process and x real time.

    python benchmarks/long_track.py                     # 60 min, hpss, streamed and whole
    python benchmarks/long_track.py --minutes 20 --modes streamed

The track is 44.1 kHz stereo FLAC made of the validation pieces (loops and chorales),
resampled, each with a random gain between -12 and 0 dB, end to end until the length is
reached; it is written block by block, so making it needs no more memory than running it.
Each mode runs `sepflow run` in a fresh process (in-process runner) and reads its peak RSS
from the kernel (``ru_maxrss`` of the child):

- ``streamed``: ``--set job.stream_above_mb=0`` (the default streams tracks over 64 MB):
  decoded, separated and written in blocks of ``block_s`` seconds;
- ``whole``: ``--set job.stream_above_mb=null``: decoded whole, separated whole.

Only operators that can work in blocks (``Operator.block_context``: hpss today) stream;
figures only, nothing here asserts.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import DATA_DIR, manifest, print_table


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


def run(track: Path, operator: str, mode: str, out: Path) -> dict:
    args = [sys.executable, "-m", "pipelines.cli", "run", "--operator", operator, "--input", str(track),
            "--output", str(out), "--no_progress", "--set", "job.max_duration_s=14400",
            "--set", "job.track_timeout_s=null"]
    args += ["--set", "job.stream_above_mb=" + ("0" if mode == "streamed" else "null")]
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


def seam_check(operator: str, minutes: float, block_s: float) -> dict:
    """Per-piece SDR of the 6 validation loops separated alone, against the same pieces cut
    from a long concatenation of them that was streamed in blocks: no seams, no drift."""
    import numpy as np
    import soundfile as sf

    import sepops
    from benchmarks.common import load_piece, pieces
    from sepops.blocks import separate_blocks
    from sepops.metrics import bss_eval, mean_sdr
    from sepops.stream import open_stream

    stems_key = "hpss_stems" if operator == "hpss" else "stems"
    loops = [load_piece(p, stems_key=stems_key) for p in pieces("loops")]
    op = sepops.get_operator(operator, **({"device": "cpu"} if operator == "unet" else {}))
    alone = [mean_sdr(bss_eval(refs, op.separate(mix, sr))) for mix, sr, refs in loops]
    sr = loops[0][1]
    order = [i % len(loops) for i in range(int(minutes * 60 / 12) + 1)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "concat.wav"
        sf.write(str(path), np.concatenate([loops[i][0] for i in order], axis=1).T, sr, subtype="FLOAT")
        with open_stream(str(path)) as stream:
            blocks = list(separate_blocks(op, stream, block_s=block_s))
    stems = {name: np.concatenate([b[1][name] for b in blocks], axis=1) for name in blocks[0][1]}
    cut, start = [], 0
    for i in order:
        mix, _, refs = loops[i]
        n = mix.shape[1]
        cut.append(mean_sdr(bss_eval(refs, {k: v[:, start : start + n] for k, v in stems.items()})))
        start += n
    diffs = [c - alone[i] for c, i in zip(cut, order)]
    return {"operator": operator, "pieces in the stream": len(order), "minutes": start / sr / 60,
            "SDR alone (dB)": float(np.mean(alone)), "SDR cut from the stream (dB)": float(np.mean(cut)),
            "largest |difference| per piece (dB)": float(np.max(np.abs(diffs)))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--operator", default="hpss")
    parser.add_argument("--modes", default="streamed,whole", help="comma-separated: streamed, whole")
    parser.add_argument("--seams", type=float, default=0.0, metavar="MINUTES",
                        help="instead: the seam check on a concatenation of the validation loops this long")
    args = parser.parse_args(argv)
    if args.seams:
        print_table([seam_check(args.operator, args.seams, 60.0)], "validation loops alone vs cut from a stream")
        return
    with tempfile.TemporaryDirectory(prefix="sepflow-long-") as tmp:
        tmp = Path(tmp)
        track = tmp / "long.flac"
        t = time.perf_counter()
        seconds = make_track(track, args.minutes)
        print(f"# {seconds / 60:.1f} min of 44.1 kHz stereo FLAC ({track.stat().st_size / 1e6:.0f} MB) "
              f"made in {time.perf_counter() - t:.0f} s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        rows = []
        for mode in args.modes.split(","):
            r = run(track, args.operator, mode, tmp / f"out-{mode}")
            rows.append({
                "operator": args.operator,
                "mode": mode,
                "peak RSS of the process (GB)": r["peak_kb"] / 1e6,
                "wall time (s)": r["wall_s"],
                "x real time (wall, incl. start-up)": seconds / r["wall_s"],
            })
        print_table(rows, f"{seconds / 60:.0f}-minute track through sepflow run")


if __name__ == "__main__":
    main()
