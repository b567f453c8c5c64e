"""Helpers shared by the benchmark scripts: the validation set, timing, and a table printer.

Benchmarks print figures; they never assert on time.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SEPFLOW_DATA", ROOT.parent / "shared" / "data"))
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))


def manifest() -> dict:
    return json.loads((DATA_DIR / "manifest.json").read_text())


def pieces(subset: str) -> list[dict]:
    return [p for p in manifest()["pieces"] if p["subset"] == subset]


def load_piece(piece: dict, stems_key: str = "stems", stereo: bool = False):
    """(mixture, sr, {stem: reference}) with arrays shaped (channels, samples)."""
    from sepops import load_audio

    mix, sr = load_audio(str(DATA_DIR / piece["files"]["mixture_stereo" if stereo else "mixture"]))
    refs = {s: load_audio(str(DATA_DIR / piece["files"]["stems"][s]))[0] for s in piece[stems_key]}
    if stereo:
        m = np.asarray(piece["stereo_mixing_matrix"], dtype=np.float32)
        refs = {s: m[:, [piece["stems"].index(s)]] * refs[s] for s in refs}
    return mix, sr, refs


def best_time(fn, *, repeat: int = 3) -> float:
    """Fastest of ``repeat`` calls, in wall seconds (the usual estimate of the undisturbed time)."""
    return best_times(fn, repeat=repeat)[1]


def best_times(fn, *, repeat: int = 5) -> tuple[float, float]:
    """Fastest of ``repeat`` calls: (CPU seconds of this process, wall seconds).

    On a shared, loaded machine wall time counts the waits for a core; CPU time
    (``time.process_time``) is the work done, the fairer figure at one thread.
    """
    cpu, wall = [], []
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return min(cpu), min(wall)


def stereo_44k(seconds: float = 30.0, seed: int = 0) -> np.ndarray:
    """A 44.1 kHz stereo test signal built from the validation loops (resampled, tiled)."""
    from sepops.audio import resample

    mix, sr, _ = load_piece(pieces("loops")[seed % 6], stereo=True)
    x = resample(mix, sr, 44100)
    reps = int(np.ceil(seconds * 44100 / x.shape[1]))
    return np.ascontiguousarray(np.tile(x, (1, reps))[:, : int(seconds * 44100)])


def print_table(rows: list[dict], title: str = "") -> None:
    """Print rows as Markdown tables: one table per run of rows sharing the same columns."""
    if title:
        print(f"\n### {title}\n")
    if not rows:
        print("(no rows)")
        return
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)
    keys = None
    for r in rows:
        if list(r) != keys:
            if keys is not None:
                print()
            keys = list(r)
            print("| " + " | ".join(keys) + " |")
            print("|" + "|".join("---" for _ in keys) + "|")
        print("| " + " | ".join(fmt(r[k]) for k in keys) + " |")


def loop_song(index: int, seconds: float, *, stereo: bool = False):
    """A long piece made from the validation loops, with a loop that repeats and a melody
    that does not (what REPET and NMF's repetition grouping expect of a real song; tiling a
    12 s excerpt would repeat its melody too). The accompaniment is two periods of loop
    ``index``'s drums and bass, repeated; the lead is the melodies of loops ``index``,
    ``index + 1``, ... one after the other.

    Returns
    -------
    (mixture, sr, {"accompaniment", "lead"}), arrays (channels, samples), stereo as in the
    validation set's ``mixture_stereo`` (its mixing matrix) or mono.
    """
    loops = pieces("loops")
    piece = loops[index % len(loops)]
    _, sr, refs = load_piece(piece)
    n = int(seconds * sr)
    period = round(piece["source"]["loop_period_s"] * sr)
    accompaniment = np.tile(refs["accompaniment"][:, : 2 * period], (1, -(-n // (2 * period))))[:, :n]
    leads = [load_piece(loops[(index + k) % len(loops)])[2]["lead"] for k in range(len(loops))]
    lead = np.tile(np.concatenate(leads, axis=1), (1, -(-n // sum(x.shape[1] for x in leads))))[:, :n]
    if stereo:
        m = np.asarray(piece["stereo_mixing_matrix"], dtype=np.float32)
        accompaniment, lead = m[:, [0]] * accompaniment, m[:, [1]] * lead
    refs = {"accompaniment": np.ascontiguousarray(accompaniment), "lead": np.ascontiguousarray(lead)}
    return refs["accompaniment"] + refs["lead"], sr, refs
