"""Pretrained models over a catalog: `sepflow run` against the demucs command line, same
machine, same run, same random-weight full-size models, same files.

    python -m benchmarks.pretrained                                  # everything below
    python -m benchmarks.pretrained --runs demucs_sepflow_1,demucs_cli --tracks 2 --minutes 1
    python -m benchmarks.pretrained --runs roformer_sepflow_1,roformer_sepflow_2,roformer_long

Models (random weights, written here; nothing is downloaded):

- ``demucs``: HTDemucs in the configuration of the released ``htdemucs`` (4 sources,
  dconv_mode 3, bottom_channels 512, 7.8 s segments: 41.98 M parameters), saved as a
  ``--repo`` folder (``<sig>-<checksum>.th`` and ``htdemucs.yaml``) that both commands read.
- ``roformer``: BS-RoFormer in viperx's configuration (``model_bs_roformer_ep_317_sdr_12.9755``:
  dim 512, depth 12, 62 bands), its published YAML beside a random-weight ``.ckpt``. No
  reference command line for it installs here, so sepflow runs alone.

Audio: ``--tracks`` tracks of ``--minutes`` minutes and one of ``--long-minutes`` minutes,
44.1 kHz stereo FLAC, each the real excerpts of ../shared/real end to end (starting with a
different one), written block by block.

Each run is one command in a fresh process tree with ``OMP_NUM_THREADS`` = ``--threads``;
its process tree's resident memory is sampled every 0.2 s (psutil): the peak of the tree's
sum, and of its largest process. Runs (``--runs``):

- ``demucs_sepflow_1`` / ``demucs_sepflow_2``: ``sepflow run`` on the folder, in-process
  runner with 1 worker / the multi-process DirectRunner with 2 workers, ``--threads`` torch
  threads each; stems as 16-bit WAV (as the demucs CLI writes), per-stem features off (the CLI
  computes none).
- ``demucs_cli``: ``python -m demucs --repo ... -n htdemucs -d cpu -o ...`` on the same files.
- ``demucs_long_sepflow`` / ``demucs_long_cli``: the long track alone (sepflow streams tracks
  over 600 s in 60 s blocks by default; the CLI holds the whole track).
- ``roformer_sepflow_1`` / ``roformer_sepflow_2`` / ``roformer_long``: the same for the RoFormer.

Results are appended to ``--results`` (JSON lines) as each run ends and printed as a table.
Figures only: nothing here asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real"
VIPERX_YAML = ROOT / "tests" / "data" / "roformer" / "published" / "model_bs_roformer_ep_317_sdr_12.9755.yaml"
RUNS = (
    "demucs_sepflow_1", "demucs_cli", "demucs_sepflow_2", "demucs_long_sepflow", "demucs_long_cli",
    "roformer_sepflow_1", "roformer_sepflow_2", "roformer_long",
)
SR = 44100


def write_track(path: Path, minutes: float, first: int) -> None:
    """``minutes`` of the real excerpts end to end, starting with excerpt ``first``."""
    import soundfile as sf

    from sepops import load_audio

    pieces = sorted(REAL.glob("*/mixture.flac"))
    if not pieces:
        raise SystemExit(f"no excerpts in {REAL}: the benchmark plays the real recordings")
    need = int(minutes * 60 * SR)
    with sf.SoundFile(str(path), "w", SR, 2, subtype="PCM_16", format="FLAC") as f:
        i = first
        while need > 0:
            audio, sr = load_audio(str(pieces[i % len(pieces)]))
            assert sr == SR and audio.shape[0] == 2
            part = audio[:, :need]
            f.write(part.T)
            need -= part.shape[1]
            i += 1


def make_demucs(folder: Path) -> Path:
    from fractions import Fraction

    import torch
    from demucs.htdemucs import HTDemucs

    from sepops.demucs_files import save_bag, save_model

    if (folder / "htdemucs.yaml").exists():
        return folder
    torch.manual_seed(0)
    model = HTDemucs(
        sources=["drums", "bass", "other", "vocals"], dconv_mode=3, bottom_channels=512, segment=Fraction(39, 5),
    )
    save_model(model, folder, "955717e8")
    save_bag(folder, "htdemucs", ["955717e8"])
    return folder


def make_roformer(folder: Path) -> Path:
    import torch

    from sepops.roformer import build_model, read_spec

    ckpt = folder / "model_bs_roformer_ep_317_sdr_12.9755.ckpt"
    if ckpt.exists():
        return ckpt
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(VIPERX_YAML, ckpt.with_suffix(".yaml"))
    torch.manual_seed(0)
    model = build_model(read_spec(ckpt.with_suffix(".yaml")))
    torch.save(model.state_dict(), ckpt)
    return ckpt


def measure(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; its wall time, exit code and the peak RSS of its process tree."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_tree = peak_one = 0
    done = threading.Event()

    def sample():
        nonlocal peak_tree, peak_one
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        pass
                peak_tree = max(peak_tree, sum(rss))
                peak_one = max(peak_one, max(rss, default=0))
            except psutil.Error:
                pass
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    return {"wall_s": wall, "rc": proc.returncode, "peak_rss_tree_gb": peak_tree / 1e9,
            "peak_rss_largest_gb": peak_one / 1e9, "stderr_tail": err.strip().splitlines()[-3:]}


def sepflow_cmd(operator: str, params: dict, inputs: list[Path], out: Path, workers: int) -> list[str]:
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--operator", operator, "-o", str(out),
           "--format", "wav", "--bit-depth", "16", "--no_progress"]
    for k, v in params.items():
        cmd += ["--set", f"{operator}.{k}={v}"]
    for feature in ("activity", "onsets", "loudness"):
        cmd += ["--set", f"features.{feature}=false"]
    for path in inputs:
        cmd += ["-i", str(path)]
    if workers > 1:
        return cmd + ["--runner=DirectRunner", f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    return cmd + ["--runner=DirectRunner"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of: {', '.join(RUNS)}")
    p.add_argument("--tracks", type=int, default=4, help="tracks in the folder (default 4)")
    p.add_argument("--minutes", type=float, default=3.0, help="length of each, minutes (default 3)")
    p.add_argument("--long-minutes", type=float, default=20.0, help="the long track, minutes (default 20)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker, both commands (default 1)")
    p.add_argument("--roformer-batch-size", type=int, default=1,
                   help="chunks per forward pass of the RoFormer (default 1; the YAML's 4 took 6.4 GB on the CPU)")
    p.add_argument("--workdir", default="/tmp/sepflow-pretrained-bench", help="models, audio and outputs")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "pretrained.jsonl"))
    args = p.parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        p.error(f"unknown run {', '.join(unknown)}; runs: {', '.join(RUNS)}")

    work = Path(args.workdir)
    folder = work / f"tracks_{args.tracks}x{args.minutes:g}min"
    folder.mkdir(parents=True, exist_ok=True)
    tracks = []
    for i in range(args.tracks):
        path = folder / f"track_{i}.flac"
        if not path.exists():
            write_track(path, args.minutes, i)
        tracks.append(path)
    long_track = work / f"long_{args.long_minutes:g}min" / "long.flac"
    if any("long" in r for r in runs) and not long_track.exists():
        long_track.parent.mkdir(parents=True, exist_ok=True)
        write_track(long_track, args.long_minutes, 0)

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "SEPFLOW_MODEL_CACHE": str(work / "cache")}
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for run in runs:
        model, *_ = run.split("_")
        inputs = [long_track] if "long" in run else tracks
        audio_s = len(inputs) * (args.long_minutes if "long" in run else args.minutes) * 60
        out = work / "out" / run
        shutil.rmtree(out, ignore_errors=True)
        if model == "demucs":
            repo = make_demucs(work / "demucs_repo")
            params = {"repo": repo, "device": "cpu", "threads": args.threads}
            if run.endswith("cli"):
                cmd = [sys.executable, "-m", "demucs", "--repo", str(repo), "-n", "htdemucs", "-d", "cpu",
                       "-o", str(out), *map(str, inputs)]
            else:
                cmd = sepflow_cmd("demucs", params, inputs, out, 2 if run.endswith("_2") else 1)
        else:
            ckpt = make_roformer(work / "roformer")
            params = {"checkpoint": ckpt, "device": "cpu", "threads": args.threads, "batch_size": args.roformer_batch_size}
            cmd = sepflow_cmd("roformer", params, inputs, out, 2 if run.endswith("_2") else 1)
        print(f"{run}: {len(inputs)} track(s), {audio_s / 60:g} min of audio ...", file=sys.stderr, flush=True)
        m = measure(cmd, env)
        row = {
            "run": run, "tracks": len(inputs), "audio_min": audio_s / 60, "threads": args.threads,
            "tracks_per_hour": len(inputs) / m["wall_s"] * 3600, "x_real_time": audio_s / m["wall_s"], **m,
            "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
        }
        rows.append(row)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), file=sys.stderr, flush=True)
    print("| run | tracks | audio (min) | wall (s) | tracks/hour | x real time | peak RSS tree (GB) | largest process (GB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['tracks']} | {r['audio_min']:g} | {r['wall_s']:.0f} | {r['tracks_per_hour']:.1f} | "
              f"{r['x_real_time']:.2f} | {r['peak_rss_tree_gb']:.2f} | {r['peak_rss_largest_gb']:.2f} |"
              + ("" if r["rc"] == 0 else f" exit {r['rc']}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
