"""Onset detection against the notes of the score: sepflow's detector beside librosa's default.

    python -m benchmarks.onsets --data /tmp/onset_train              # pieces already rendered
    python -m benchmarks.onsets --data /tmp/onset_train --data /tmp/onset_train_44k
    python -m benchmarks.onsets --render /tmp/onset_train            # renders 12 chorales + 12 loops first

Ground truth: pieces rendered from MIDI by ``../shared/training/render_training_set.py`` (the
training kit; never ``../shared/data`` nor ``../shared/real``). The kit's own functions are
imported from its file and re-derive each piece's notes from the manifest (the chorale, tempo
and excerpt from ``seed`` and ``piece_index``; the loop's drums, bass and melody from its
seed), so every note's onset is known per stem:

* chorales: ``soprano``, ``alto``, ``tenor``, ``bass`` (each voice's note starts);
* loops: ``accompaniment`` (drums + bass), ``lead``, ``percussive`` (drums), ``harmonic``
  (bass + lead);
* the ``mixture``: every note of the piece.

A note counts when it starts inside the excerpt; notes that sound at once are one onset.
Each detector runs on each true stem and on the mixture; the score is
``mir_eval.onset.f_measure`` with a 50 ms window. Detectors are compared by the mean F over
every (piece, signal) pair; the table gives the mean per stem type too. Writes
``benchmarks/results/onsets.json``. Figures only; nothing here asserts.

Needs ``pretty_midi`` (the kit imports it; not a sepflow dependency), ``mir_eval`` (the dev
extra), and for ``--render`` the ``fluidsynth`` program with the FluidR3_GM SoundFont
(``apt-get install -y fluidsynth fluid-soundfont-gm``).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, print_table  # (sets NUMBA_CACHE_DIR)

KIT = ROOT.parent / "shared" / "training" / "render_training_set.py"
OUT = ROOT / "benchmarks" / "results" / "onsets.json"
WINDOW_S = 0.05

#: Stem types, in table order.
STEMS = ["soprano", "alto", "tenor", "bass", "accompaniment", "lead", "percussive", "harmonic", "mixture"]


# ---------------------------------------------------------------------------------------------
# ground truth from the kit's own functions
# ---------------------------------------------------------------------------------------------
def load_kit(path: Path):
    spec = importlib.util.spec_from_file_location("render_training_set", path)
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)
    return kit


def _in_excerpt(starts: list[float], start_s: float, seconds: float) -> np.ndarray:
    t = np.asarray([a - start_s for a in starts if start_s - 1e-9 <= a < start_s + seconds])
    return np.unique(np.round(t, 4))  # notes that start together are one onset


def true_onsets(kit, piece: dict, seconds: float, pool: list[dict]) -> dict[str, np.ndarray]:
    """{signal: onset times in seconds} of one piece, from the notes the kit rendered it from."""
    src = piece["source"]
    if piece["subset"] == "chorales":
        plan = kit.plan_chorale(piece["seed"], piece["piece_index"], piece["augmented"], seconds, pool)
        assert f"chorales_midi/{plan['entry']['file']}" == src["midi_file"], piece["id"]
        assert plan["bpm"] == src["tempo_bpm_quarter"], piece["id"]
        spq = 60.0 / plan["bpm"]
        start_s = plan["start_q"] * spq
        assert abs(start_s - src["excerpt_start_s"]) < 1e-5, piece["id"]
        starts = {v: [o * spq for (o, _, _) in notes] for v, notes in zip(kit.VOICES, plan["voices"])}
    else:
        plan = kit.plan_loop(piece["seed"], piece["augmented"], seconds)
        assert plan["bpm"] == src["tempo_bpm"], piece["id"]
        spb, loop_s, start_s = 60.0 / plan["bpm"], plan["loop_s"], plan["start_s"]
        drums = [k * loop_s + s * spb / 4 for k in range(plan["n_loops"]) for (s, _, _) in plan["drums"]]
        bass = [k * loop_s + s * spb / 2 for k in range(plan["n_loops"]) for (s, _, _, _) in plan["bass"]]
        lead = [tb * spb for (tb, _, _, _) in plan["melody"]]
        starts = {"percussive": drums, "lead": lead, "accompaniment": drums + bass, "harmonic": bass + lead}
    starts["mixture"] = [a for v in list(starts.values()) for a in v]
    return {k: _in_excerpt(v, start_s, seconds) for k, v in starts.items()}


# ---------------------------------------------------------------------------------------------
# detectors: (signal, sr) -> onset times in seconds
# ---------------------------------------------------------------------------------------------
def flux(work_sr: int, hop: int, n_fft: int, lag: int = 1, max_size: int = 1, **peak):
    """librosa's spectral-flux envelope at ``work_sr`` (the signal resampled to it) with this
    hop, window, lag and frequency max-filter, then librosa's peak picking (its defaults unless
    ``peak`` says otherwise)."""

    def detect(y: np.ndarray, sr: int) -> np.ndarray:
        import librosa
        import soxr

        if sr != work_sr:
            y = soxr.resample(y, sr, work_sr, quality="MQ")
        env = librosa.onset.onset_strength(y=y, sr=work_sr, hop_length=hop, n_fft=n_fft, lag=lag, max_size=max_size)
        return librosa.onset.onset_detect(onset_envelope=env, sr=work_sr, hop_length=hop, units="time", **peak)

    detect.__doc__ = (f"librosa onset_strength at {work_sr} Hz (hop {hop}, n_fft {n_fft}, lag {lag}, "
                      f"max_size {max_size}), onset_detect peak picking ({peak or 'defaults'})")
    return detect


def librosa_default(y: np.ndarray, sr: int) -> np.ndarray:
    """``librosa.onset.onset_detect`` with every default (hop 512, n_fft 2048 at the signal's rate)."""
    import librosa

    return librosa.onset.onset_detect(y=y, sr=sr, units="time")


def sepflow(y: np.ndarray, sr: int) -> np.ndarray:
    """What the features table's ``onset_times_s`` holds: ``sepops.features.onset_times`` of
    ``onset_envelope`` as the code is now (SuperFlux at 22.05 kHz: hop 220, n_fft 1024, lag 2,
    max_size 3; librosa's default peak picking, backtracked)."""
    from sepops.features import onset_envelope, onset_times

    return onset_times(onset_envelope(y, sr))


DETECTORS = {
    # sepops.features as it is: SuperFlux at 22.05 kHz, hop 220, n_fft 1024, lag 2, max_size 3, backtrack
    "sepflow": sepflow,
    "librosa default": librosa_default,
    # the detector sepflow shipped before this benchmark (issue 18): plain flux (lag 1, no max filter)
    "hop 220 / n_fft 1024 (sepflow before)": flux(22050, 220, 1024),
    # the same with backtracking to the energy minimum before each peak
    "hop 220 / n_fft 1024, backtrack": flux(22050, 220, 1024, backtrack=True),
    # the maximum filter alone (no lag 2)
    "hop 220 / n_fft 1024, max 3": flux(22050, 220, 1024, max_size=3),
    # SuperFlux without backtracking
    "hop 220 / n_fft 1024, lag 2, max 3": flux(22050, 220, 1024, lag=2, max_size=3),
    # SuperFlux with librosa's default window
    "hop 220 / n_fft 2048, lag 2, max 3": flux(22050, 220, 2048, lag=2, max_size=3),
    # librosa's default window and hop at sepflow's fixed 22.05 kHz (whatever the stem's rate)
    "hop 512 / n_fft 2048": flux(22050, 512, 2048),
    "hop 512 / n_fft 2048, backtrack": flux(22050, 512, 2048, backtrack=True),
}


# ---------------------------------------------------------------------------------------------
def pieces_of(folder: Path) -> tuple[dict, list[dict]]:
    m = json.loads((folder / "manifest.json").read_text())
    if m.get("set") != "training":
        raise SystemExit(f"{folder}: not a training-kit folder (its manifest's set is {m.get('set')!r})")
    return m, m["pieces"]


def evaluate(folders: list[Path], kit_path: Path, names: list[str]) -> dict:
    import mir_eval
    import soundfile as sf

    kit = load_kit(kit_path)
    pool = kit.chorale_index()
    detectors = {n: DETECTORS[n] for n in names}
    detectors[names[0]](np.zeros(22050, dtype=np.float32) + 1e-3, 22050)  # numba compiles outside the timing
    rows, seconds_of = [], {n: 0.0 for n in names}
    for folder in folders:
        m, pieces = pieces_of(folder)
        for piece in pieces:
            truth = true_onsets(kit, piece, m["duration_s"], pool)
            signals = {s: piece["files"]["stems"][s] for s in truth if s != "mixture"}
            signals["mixture"] = piece["files"]["mixture"]
            for signal, rel in signals.items():
                y, sr = sf.read(folder / rel, dtype="float32")
                ref = truth[signal]
                for name, detect in detectors.items():
                    started = time.process_time()
                    est = np.asarray(detect(y, sr), dtype=float)
                    seconds_of[name] += time.process_time() - started
                    f, p, r = mir_eval.onset.f_measure(ref, est, window=WINDOW_S)
                    rows.append({"folder": str(folder), "sr": sr, "piece": piece["id"], "signal": signal,
                                 "detector": name, "f": f, "precision": p, "recall": r,
                                 "n_true": len(ref), "n_found": len(est)})
    return {"rows": rows, "cpu_s": seconds_of}


def summarise(rows: list[dict], names: list[str]) -> list[dict]:
    table = []
    for name in names:
        mine = [r for r in rows if r["detector"] == name]
        row = {"detector": name}
        for s in STEMS:
            fs = [r["f"] for r in mine if r["signal"] == s]
            if fs:
                row[s] = float(np.mean(fs))
        row["mean F"] = float(np.mean([r["f"] for r in mine]))
        row["P"] = float(np.mean([r["precision"] for r in mine]))
        row["R"] = float(np.mean([r["recall"] for r in mine]))
        row["found / true"] = sum(r["n_found"] for r in mine) / max(1, sum(r["n_true"] for r in mine))
        table.append(row)
    return table


def compact(rows: list[dict], names: list[str]) -> dict:
    """The rows as one line per (folder, piece, signal): F and onsets found per detector."""
    keys = list(dict.fromkeys((r["folder"], r["piece"], r["signal"]) for r in rows))
    by = {(r["folder"], r["piece"], r["signal"], r["detector"]): r for r in rows}
    columns = ["folder", "piece", "signal", "sr", "n_true"] + [f"{x} {n}" for n in names for x in ("F", "found")]
    values = []
    for k in keys:
        first = by[(*k, names[0])]
        line = [*k, first["sr"], first["n_true"]]
        for n in names:
            line += [round(by[(*k, n)]["f"], 4), by[(*k, n)]["n_found"]]
        values.append(line)
    return {"columns": columns, "values": values}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, action="append",
                    help="a folder rendered by the training kit (repeat for more); nothing is rendered")
    ap.add_argument("--render", type=Path, metavar="DIR",
                    help="without --data: render --chorales and --loops pieces into DIR first (outside the repo)")
    ap.add_argument("--chorales", type=int, default=12)
    ap.add_argument("--loops", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0, help="the kit's run seed for --render")
    ap.add_argument("--sr", type=int, default=22050, help="sample rate for --render")
    ap.add_argument("--kit", type=Path, default=KIT, help="render_training_set.py")
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS))
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    if not a.data:
        if not a.render:
            ap.error("give --data DIR (rendered pieces) or --render DIR")
        if a.render.resolve().is_relative_to(ROOT):
            ap.error("--render: keep the rendered pieces outside the repository (they are large)")
        subprocess.run([sys.executable, str(a.kit), "--out", str(a.render), "--chorales", str(a.chorales),
                        "--loops", str(a.loops), "--seed", str(a.seed), "--sr", str(a.sr)], check=True)
        a.data = [a.render]
    result = evaluate(a.data, a.kit, a.detectors)
    table = summarise(result["rows"], a.detectors)
    per_folder = {}
    for folder in a.data:
        mine = [r for r in result["rows"] if r["folder"] == str(folder)]
        per_folder[str(folder)] = summarise(mine, a.detectors)
    print_table([{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in table],
                f"F-measure at {WINDOW_S * 1000:.0f} ms, mean over pieces, per true stem "
                f"({len({(r['folder'], r['piece']) for r in result['rows']})} pieces)")
    if len(per_folder) > 1:
        for folder, t in per_folder.items():
            sr = next(r["sr"] for r in result["rows"] if r["folder"] == folder)
            print_table([{k: (f"{v:.3f}" if isinstance(v, float) else v) for k, v in r.items()} for r in t],
                        f"{folder} ({sr} Hz)")
    print("\nCPU seconds per detector (all signals):",
          ", ".join(f"{n} {s:.1f}" for n, s in result["cpu_s"].items()))
    import librosa
    import mir_eval

    a.out.parent.mkdir(parents=True, exist_ok=True)
    per_signal = compact(result["rows"], a.detectors)
    lines = per_signal["values"]
    text = json.dumps({
        "benchmark": "onsets against the score (F-measure, mir_eval.onset.f_measure)",
        "window_s": WINDOW_S,
        "data": [str(d) for d in a.data],
        "manifests": {str(d): pieces_of(d)[0]["generator"]["commands"] for d in a.data},
        "detectors": {n: " ".join((DETECTORS[n].__doc__ or n).split()) for n in a.detectors},
        "choice": "by the mean F over every (piece, signal) pair of all the folders (summary's 'mean F')",
        "ranking": [r["detector"] for r in sorted(table, key=lambda r: -r["mean F"])],
        "summary": table,
        "summary_per_folder": per_folder,
        "cpu_s": result["cpu_s"],
        "per_signal": {"columns": per_signal["columns"], "values": [f"@line{i}@" for i in range(len(lines))]},
        "versions": {"python": platform.python_version(), "librosa": librosa.__version__,
                     "mir_eval": mir_eval.__version__, "numpy": np.__version__},
    }, indent=1)
    for i, line in enumerate(lines):  # one line per signal: a small file, a readable diff
        text = text.replace(f'"@line{i}@"', json.dumps(line))
    a.out.write_text(text + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
