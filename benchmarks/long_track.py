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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--operator", default="hpss")
    parser.add_argument("--modes", default="streamed,whole", help="comma-separated: streamed, whole")
    args = parser.parse_args(argv)
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
