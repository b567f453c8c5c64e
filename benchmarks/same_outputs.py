"""Do two checkouts of sepflow write the same outputs? The evidence behind a refactor.

Runs the catalog job of a checkout (its own ``pipelines`` and ``sepops``, through
``python -m pipelines.cli``) on

* the validation set with every config of ``configs/``, then ``sepflow evaluate`` on the
  runs of the evaluate configs;
* a hostile folder: fuzzed (truncated, bit-flipped, random, extreme-header) files and
  hostile file names, with hpss;
* a streamed long track (three minutes, separated in blocks) with hpss and every feature;

and records a digest of everything the job publishes: the SHA-256 of every stem and
dead-letter file (its traceback only as present or not: it names the code's files), and every row of ``metadata/``, ``features/`` and ``evaluation/`` with the
columns that name a run or a moment (run ids, timestamps, wall-clock seconds) left out.

    python -m benchmarks.same_outputs prepare --work /tmp/same
    python -m benchmarks.same_outputs capture --work /tmp/same --tree /path/to/old --out before.json
    python -m benchmarks.same_outputs capture --work /tmp/same --tree . --out after.json
    python -m benchmarks.same_outputs compare before.json after.json

Both captures must read the same prepared folder: the prepared files are not reproducible byte
for byte (Ogg streams get random serial numbers, float WAVs a PEAK chunk with a timestamp).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import soundfile as sf

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

#: Columns that name a run or a moment, or time the work: they differ on every run.
VOLATILE = {"run_id", "created_at", "processing_s", "features_s", "evaluation_id", "sepflow_version"}
TABLES = ("metadata", "features", "evaluation")


def prepare(work: Path) -> None:
    """Writes the inputs both checkouts read: the hostile folder and the long track."""
    from tests.sepops.test_fuzz_audio import EXTREME, SEEDS, wav_header

    hostile = work / "inputs" / "hostile"
    shutil.rmtree(hostile, ignore_errors=True)
    hostile.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for seed, data in sorted(SEEDS.items()):
        ext = seed.rsplit(".", 1)[-1]
        (hostile / f"{seed}-whole.{ext}").write_bytes(data)
        for k in range(3):
            (hostile / f"{seed}-cut{k}.{ext}").write_bytes(data[: int(len(data) * rng.uniform(0.0, 1.0))])
            flipped = bytearray(data)
            for _ in range(int(rng.integers(1, 12))):
                flipped[int(rng.uniform(0, 1) ** 2 * len(flipped))] ^= int(rng.integers(1, 256))
            (hostile / f"{seed}-flip{k}.{ext}").write_bytes(bytes(flipped))
    for k in range(3):
        (hostile / f"random{k}.wav").write_bytes(rng.integers(0, 256, int(rng.integers(0, 5000)), dtype=np.uint8).tobytes())
    for i, fields in enumerate(EXTREME[name] for name in sorted(EXTREME)):
        payload = rng.integers(0, 256, min(fields["data_bytes"], 64_000), dtype=np.uint8).tobytes()
        (hostile / f"extreme{i}.wav").write_bytes(wav_header(**fields, payload=payload))
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000)
    for name in ["Song.wav", "song.wav", "..hidden.wav", "$(reboot).wav", "tab\there.wav", "café.wav"]:
        sf.write(str(hostile / name), tone, 8000, format="WAV")
    silent = np.zeros((2, 22050 * 2), np.float32)
    sf.write(str(hostile / "silent.flac"), silent.T, 22050)

    long_dir = work / "inputs" / "long"
    long_dir.mkdir(parents=True, exist_ok=True)
    loops = [sf.read(str(p / "mixture.flac"), always_2d=True)[0] for p in sorted(DATA.glob("loop_*"))]
    sr = sf.info(str(DATA / "loop_1101" / "mixture.flac")).samplerate
    audio = np.concatenate(loops * 3)[: 180 * sr]
    sf.write(str(long_dir / "long.flac"), audio, sr)


def _cases(work: Path, tree: Path) -> list[tuple[str, list[list[str]]]]:
    """(case name, the CLI invocations that make its output), outputs under work/out/<case>."""
    mixtures = [str(p / "mixture.flac") for p in sorted(DATA.iterdir()) if (p / "mixture.flac").is_file()]
    inputs = [arg for m in mixtures for arg in ("--input", m)]
    cases = []
    for config in sorted((tree / "configs").glob("*.yaml")):
        out = str(work / "out" / config.stem)
        commands = [["run", "--config", str(config), *inputs, "--output", out, "--no-progress"]]
        if config.stem.startswith("evaluate_"):
            commands.append(["evaluate", "--estimates", out, "--references", str(DATA / "manifest.json"),
                             "--oracles", "ibm,irm,mix"])
        cases.append((config.stem, commands))
    cases.append(("hostile", [["run", "--operator", "hpss", "--input", str(work / "inputs" / "hostile"),
                               "--output", str(work / "out" / "hostile"), "--set", "job.min_duration_s=0",
                               "--no-progress"]]))
    cases.append(("long_streamed", [["run", "--operator", "hpss", "--input", str(work / "inputs" / "long" / "long.flac"),
                                     "--output", str(work / "out" / "long_streamed"), "--set", "job.stream_above_s=60",
                                     "--set", "features.pitch=true", "--set", "features.rhythm=true", "--no-progress"]]))
    return cases


def _value(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    if isinstance(v, list):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _value(x) for k, x in v.items()}
    return v if v is None or isinstance(v, (int, str, bool)) else str(v)


def _rows(folder: Path, out: Path) -> list[str]:
    table = ds.dataset(str(folder), format="parquet").to_table()
    keep = [c for c in table.column_names if c not in VOLATILE]
    rows = [json.dumps(_value(r), sort_keys=True).replace(str(out), "<OUT>") for r in table.select(keep).to_pylist()]
    return sorted(rows)


def digest(out: Path) -> dict:
    """What a job published under ``out``, free of run ids, times and the output's own path."""
    files = {}
    for folder in ("stems", "dead_letter"):
        for path in sorted((out / folder).rglob("*")) if (out / folder).is_dir() else []:
            if path.is_file():
                data = path.read_bytes()
                if folder == "dead_letter":  # JSON records: drop the volatile keys
                    record = {k: v for k, v in json.loads(data).items() if k not in VOLATILE}
                    # A traceback names the code's files and lines: only whether there is one counts.
                    record["traceback"] = bool(record.get("traceback"))
                    data = json.dumps(record, sort_keys=True).replace(str(out), "<OUT>").encode()
                files[str(path.relative_to(out))] = hashlib.sha256(data).hexdigest()
    tables = {name: _rows(out / name, out) for name in TABLES if (out / name).is_dir()}
    return {"files": files, "tables": tables}


def capture(work: Path, tree: Path, result: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "1"}
    env.setdefault("NUMBA_CACHE_DIR", str(work / "numba_cache"))
    digests = {}
    for name, commands in _cases(work, tree):
        shutil.rmtree(work / "out" / name, ignore_errors=True)
        for args in commands:
            print(f"[{tree.name}] {name}: sepflow {' '.join(args[:2])} ...", flush=True)
            proc = subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=tree, env=env,
                                  capture_output=True, text=True)
            if proc.returncode not in (0, 1):  # 1: some tracks failed (the hostile folder)
                raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        digests[name] = digest(work / "out" / name)
    result.write_text(json.dumps(digests, indent=1, sort_keys=True))
    print(f"wrote {result}: {len(digests)} cases, "
          f"{sum(len(d['files']) for d in digests.values())} files, "
          f"{sum(len(r) for d in digests.values() for r in d['tables'].values())} rows")


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    problems = [f"case only in one: {name}" for name in sorted(set(a) ^ set(b))]
    for name in sorted(set(a) & set(b)):
        for path in sorted(set(a[name]["files"]) | set(b[name]["files"])):
            if a[name]["files"].get(path) != b[name]["files"].get(path):
                problems.append(f"{name}: file {path} differs")
        for table in sorted(set(a[name]["tables"]) | set(b[name]["tables"])):
            ra, rb = set(a[name]["tables"].get(table, [])), set(b[name]["tables"].get(table, []))
            problems += [f"{name}: {table} row only before: {r[:300]}" for r in sorted(ra - rb)[:3]]
            problems += [f"{name}: {table} row only after: {r[:300]}" for r in sorted(rb - ra)[:3]]
    files = sum(len(d["files"]) for d in a.values())
    rows = sum(len(r) for d in a.values() for r in d["tables"].values())
    for line in problems:
        print(line)
    print(f"{len(a)} cases, {files} files, {rows} table rows: " + ("identical" if not problems else f"{len(problems)} differences"))
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", type=Path, required=True)
    c = sub.add_parser("capture")
    c.add_argument("--work", type=Path, required=True)
    c.add_argument("--tree", type=Path, required=True, help="a checkout of sepflow")
    c.add_argument("--out", type=Path, required=True)
    d = sub.add_parser("compare")
    d.add_argument("before", type=Path)
    d.add_argument("after", type=Path)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.work)
        return 0
    if args.command == "capture":
        capture(args.work.resolve(), args.tree.resolve(), args.out)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
