"""Catalogs of many tiny tracks through `sepflow run`: wall time, per-track overhead, and the
peak memory of the driver and of a worker, as the catalog grows.

    python -m benchmarks.catalog_scale                               # 1,000 and 10,000 tracks, in-process
    python -m benchmarks.catalog_scale --tracks 1000,10000,100000
    python -m benchmarks.catalog_scale --runner dask --workers 1,2,4 --tracks 2000
    python -m benchmarks.catalog_scale --runner dask --workers 1,2 --tracks 32 --seconds 180 --sr 44100 --channels 2

Tracks are WAV of ``--seconds`` (default 0.2 s of mono 8 kHz noise: the work per track is then
almost all overhead; a second or more: the validation loops, tiled and resampled), in folders
of 1,000, written once into a cache folder and reused. The
operator is hpss (cheap at 8 kHz). Each run is `sepflow run` in a fresh process; its peak
RSS is read from the kernel (``ru_maxrss`` of the child). In-process, the driver is also the
worker. With ``--runner dask`` a ``distributed`` LocalCluster of N worker processes (one
thread each, 127.0.0.1) runs the pipeline; the driver is the `sepflow run` process, and each
worker's peak RSS is asked from the worker itself.

Per-track overhead: wall time divided by tracks, minus the separation itself (hpss on one
track, timed alone in this process); figures only, nothing asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import print_table

ROOT = Path(__file__).resolve().parents[1]

SR = 8000


def make_catalog(root: Path, n: int, seconds: float, sr: int = SR, channels: int = 1) -> Path:
    """``n`` tracks under ``root`` (kept between runs: making 100,000 files takes a while).
    Tracks of a second or more are the validation loops (:func:`benchmarks.common.stereo_44k`,
    resampled), short ones noise."""
    import numpy as np
    import soundfile as sf

    folder = root / f"catalog-{n}-{seconds:g}s-{sr}-{channels}"
    done = folder / ".complete"
    if done.exists():
        return folder
    rng = np.random.default_rng(n)
    frames = int(seconds * sr)
    for i in range(n):
        path = folder / f"f{i // 1000:04d}" / f"t{i:06d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        if seconds >= 1:
            from benchmarks.common import stereo_44k
            from sepops.audio import resample

            x = resample(stereo_44k(seconds, seed=i), 44100, sr)[:channels, :frames]
        else:
            x = (0.1 * rng.standard_normal((channels, frames))).astype(np.float32)
        sf.write(str(path), x.T, sr, subtype="PCM_16")
    done.write_text("ok")
    return folder


def separation_s(seconds: float, sr: int = SR, channels: int = 1) -> float:
    """hpss on one track alone: the work each track needs whatever the pipeline."""
    import numpy as np

    import sepops

    op = sepops.get_operator("hpss")
    x = (0.1 * np.random.default_rng(0).standard_normal((channels, int(seconds * sr)))).astype(np.float32)
    op.separate(x, sr)
    repeat = 20 if seconds < 10 else 3
    t = time.perf_counter()
    for _ in range(repeat):
        op.separate(x, sr)
    return (time.perf_counter() - t) / repeat


def run(catalog: Path, out: Path, beam_args: list[str]) -> dict:
    args = [sys.executable, "-m", "pipelines.cli", "run", "--operator", "hpss", "--input", str(catalog),
            "--output", str(out), "--no_progress", *beam_args]
    wrapper = ("import resource, subprocess, sys\n"
               "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
               "sys.stderr.write(done.stderr[-3000:])\n"
               "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", wrapper, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    code, peak_kb = (int(v) for v in done.stdout.split())
    if code != 0:
        raise SystemExit(f"sepflow run failed:\n{done.stderr}")
    record = json.loads(next((out / "_sepflow" / "runs").glob("*.json")).read_text())
    return {"wall_s": wall, "driver_peak_gb": peak_kb / 1e6, "summary": record["summary"]}


def _worker_peak_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", default="1000,10000", help="comma-separated catalog sizes")
    parser.add_argument("--seconds", type=float, default=0.2, help="length of each track")
    parser.add_argument("--sr", type=int, default=SR, help="sample rate of the tracks")
    parser.add_argument("--channels", type=int, default=1, choices=(1, 2))
    parser.add_argument("--runner", choices=("inprocess", "dask"), default="inprocess")
    parser.add_argument("--workers", default="2", help="dask: comma-separated worker counts")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "sepflow-catalog-scale"),
                        help="where the generated catalogs are kept")
    args = parser.parse_args(argv)
    cache = Path(args.cache)
    per_track_work = separation_s(args.seconds, args.sr, args.channels)
    print(f"# {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; hpss alone: {1000 * per_track_work:.1f} ms per "
          f"{args.seconds:g} s track")
    rows = []
    for n in (int(v) for v in args.tracks.split(",")):
        t = time.perf_counter()
        catalog = make_catalog(cache, n, args.seconds, args.sr, args.channels)
        print(f"# catalog of {n} tracks ready in {time.perf_counter() - t:.0f} s")
        worker_counts = [int(w) for w in args.workers.split(",")] if args.runner == "dask" else [1]
        for workers in worker_counts:
            with tempfile.TemporaryDirectory(prefix="sepflow-scale-") as tmp:
                if args.runner == "dask":
                    import distributed

                    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  host="127.0.0.1", dashboard_address=None) as cluster, \
                            distributed.Client(cluster) as client:
                        r = run(catalog, Path(tmp) / "out",
                                ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"])
                        worker_gb = max(client.run(_worker_peak_gb).values())
                else:
                    r = run(catalog, Path(tmp) / "out", [])
                    worker_gb = r["driver_peak_gb"]  # one process: the driver runs the work too
            s = r["summary"]
            assert s["tracks_ok"] == n, s
            rows.append({
                "tracks": n, "runner": args.runner, "workers": workers, "wall (s)": r["wall_s"],
                "tracks / s": n / r["wall_s"],
                "per-track overhead (ms)": 1000 * (r["wall_s"] * workers / n - per_track_work),
                "driver peak RSS (GB)": r["driver_peak_gb"], "worker peak RSS (GB)": worker_gb,
                "audio x real time": s["audio_s"] / r["wall_s"],
            })
            print_table(rows[-1:])
    print_table(rows, f"catalogs of {args.seconds:g} s tracks through sepflow run ({args.runner})")


if __name__ == "__main__":
    main()
