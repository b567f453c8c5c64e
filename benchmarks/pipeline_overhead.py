"""What the Beam job costs over a plain Python loop, and what a second worker process buys.

    python -m benchmarks.pipeline_overhead                  # 8 tracks x 30 s, hpss
    python -m benchmarks.pipeline_overhead --tracks 16 --seconds 60 --operator hpss

Tracks are 44.1 kHz stereo, tiled from the validation loops into a temporary folder. Every
variant does the same work per track: decode, separate, encode and write every stem (the
Beam job also writes its metadata). Figures from one process on a shared machine are noisy;
run it twice.

1. the bare loop vs the Beam job on the in-process runner (goal: <= 1.10x for >= 30 s tracks);
2. the multi-process DirectRunner with 2 worker processes vs 1 (goal: >= 1.7x on 2 cores),
   by wall time and by "processing span" (first separation start to last metadata write,
   from the metadata), which leaves out the seconds Beam takes to start worker processes.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table, stereo_44k


def make_tracks(folder: Path, n: int, seconds: float) -> list[Path]:
    from sepops import save_audio

    paths = []
    for i in range(n):
        path = folder / f"track_{i:02d}.flac"
        save_audio(str(path), stereo_44k(seconds, seed=i), 44100)
        paths.append(path)
    return paths


def bare_loop(paths: list[Path], operator, out: Path, fmt: str) -> None:
    """The same per-track work as the pipeline, without Beam."""
    from sepops import Analysis, load_audio, save_audio

    for path in paths:
        audio, sr = load_audio(str(path))
        stems = operator.separate(audio, sr, analysis=Analysis(audio, sr))
        for name, stem in stems.items():
            save_audio(str(out / path.stem / f"{name}.{fmt}"), stem, sr, format=fmt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--operator", default="hpss")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many runs of each variant")
    parser.add_argument("--skip-multiprocess", action="store_true")
    args = parser.parse_args()

    from pipelines.config import job_config_from_dict
    from pipelines.run import run_job
    from sepops import get_operator

    job = job_config_from_dict({"operators": [args.operator]})
    fmt = job.audio.format
    operator = get_operator(args.operator, **job.operators[0].params)
    work = Path(tempfile.mkdtemp(prefix="sepflow-bench-"))
    try:
        paths = make_tracks(work / "in", args.tracks, args.seconds)
        audio_s = args.tracks * args.seconds
        inputs = [str(work / "in" / "*.flac")]
        # Warm-up: imports, numba compilation, first-call caches.
        bare_loop(paths[:1], operator, work / "warm", fmt)
        run_job(job, [str(paths[0])], str(work / "warm_beam"), progress=False)

        def timed(fn, repeat: int = args.repeat) -> tuple[float, object]:
            best, result = float("inf"), None
            for _ in range(repeat):
                started = time.perf_counter()
                result = fn()
                best = min(best, time.perf_counter() - started)
            return best, result

        def beam(out: str, beam_args=()):
            return lambda: run_job(job, inputs, str(work / out), list(beam_args), overwrite=True, progress=False)

        def processing_span(summary) -> float:
            """First separation start to last metadata write: the run without its start-up."""
            frame = summary.metadata.to_pandas()
            ends = frame["created_at"].astype("int64") / 1e3  # ms -> s
            return float(ends.max() - (ends - frame["processing_s"]).min())

        t_loop, _ = timed(lambda: bare_loop(paths, operator, work / "loop", fmt))
        t_beam, s_beam = timed(beam("beam"))
        rows = [
            {"variant": "bare Python loop", "wall_s": t_loop, "x real time": audio_s / t_loop, "vs loop": 1.0, "processing span s": t_loop},
            {"variant": "Beam, in-process runner", "wall_s": t_beam, "x real time": audio_s / t_beam,
             "vs loop": t_beam / t_loop, "processing span s": processing_span(s_beam)},
        ]
        if not args.skip_multiprocess:
            mp = ["--runner=DirectRunner", "--direct_running_mode=multi_processing"]
            t_mp1, s_mp1 = timed(beam("mp1", mp + ["--direct_num_workers=1"]))
            t_mp2, s_mp2 = timed(beam("mp2", mp + ["--direct_num_workers=2"]))
            for name, t, summary in (("1 worker", t_mp1, s_mp1), ("2 workers", t_mp2, s_mp2)):
                rows.append(
                    {"variant": f"Beam, multi-process, {name}", "wall_s": t, "x real time": audio_s / t,
                     "vs loop": t / t_loop, "processing span s": processing_span(summary)}
                )
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print_table(
            rows,
            f"{args.operator}: {args.tracks} tracks x {args.seconds:g} s, 44.1 kHz stereo, "
            f"{os.cpu_count()} CPUs, load average {load:.1f} at the end",
        )
        print(f"\nBeam overhead over the bare loop: {t_beam / t_loop:.3f}x (goal <= 1.10x)")
        if not args.skip_multiprocess:
            print(f"2 workers vs 1, wall time: {t_mp1 / t_mp2:.2f}x (goal >= 1.7x)")
            print(
                f"2 workers vs 1, processing span (without worker start-up): "
                f"{processing_span(s_mp1) / processing_span(s_mp2):.2f}x"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
