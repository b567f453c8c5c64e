"""U-Net inference speed on CPU: x real time at 1 thread and at all cores, and peak memory.

Input: a 5-minute 44.1 kHz stereo track (``common.stereo_44k``), separated by each shipped
model exactly as the ``unet`` operator does (resampling to 22.05 kHz and back included).
Each measurement runs in a fresh process, so its peak resident memory (``ru_maxrss``) is
its own. ``cpu_s`` is the CPU time of one run; on a busy machine ``audio_s / cpu_s`` is a
steadier estimate of the speed per core than the wall-clock figures. Goal: >= 20x real time per CPU core for the 2-stem model.

    python -m benchmarks.bench_unet [--seconds 300] [--repeat 2]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os

from benchmarks.common import best_time, print_table, stereo_44k


def _measure(model: str, threads: int, seconds: float, repeat: int, queue) -> None:
    import resource
    import time

    import torch

    torch.set_num_threads(threads)
    from sepops import get_operator

    audio = stereo_44k(seconds)
    op = get_operator("unet", model=model, device="cpu")
    op.separate(audio[:, :44100], 44100)  # warm-up
    t = best_time(lambda: op.separate(audio, 44100), repeat=repeat)
    cpu = time.process_time()
    op.separate(audio, 44100)
    cpu = time.process_time() - cpu  # CPU seconds: the cost on an otherwise busy machine
    queue.put((t, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def run(seconds: float = 300.0, repeat: int = 2, models=None) -> list[dict]:
    """One row per (model, threads): seconds, x real time, x real time per core, peak MB."""
    from sepops.unet.separator import shipped_models

    cores = os.cpu_count() or 1
    ctx = mp.get_context("spawn")
    rows = []
    for model in models or shipped_models():
        for threads in sorted({1, cores}):
            queue = ctx.Queue()
            p = ctx.Process(target=_measure, args=(model, threads, seconds, repeat, queue))
            p.start()
            t, cpu, peak = queue.get()
            p.join()
            rows.append({
                "model": model,
                "threads": threads,
                "audio_s": seconds,
                "time_s": t,
                "x_realtime": seconds / t,
                "x_realtime_per_core": seconds / t / threads,
                "cpu_s": cpu,
                "x_realtime_per_cpu_s": seconds / cpu,
                "peak_rss_mb": peak,
            })
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--model", action="append", help="model name or folder (default: all shipped)")
    args = parser.parse_args(argv)
    print_table(run(args.seconds, args.repeat, args.model),
                f"U-Net inference, {args.seconds:g} s of 44.1 kHz stereo, CPU")


if __name__ == "__main__":
    main()
