"""Train the NMF dictionaries shipped in ``sepops/models/nmf/``.

The dictionaries are learnt with sepops itself (:func:`sepops.nmf.learn_dictionary`)
from the isolated stems of rendered training pieces, never from the validation set
(``../shared/data``). Training data (same layout as the validation set) was rendered with::

    python ../shared/training/render_training_set.py --out ../train_data \\
        --chorales 160 --loops 160 --stereo

The shipped files were produced by exactly this command (single thread; 169 s for the loops
and 195 s for the chorales on a shared, busy 2-core machine)::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/train_nmf_dictionaries.py \\
        --data ../train_data --out sepops/models/nmf

It writes ``loops_accompaniment_lead.npz`` (stems ``accompaniment``, ``lead``, from the
``loops`` pieces) and ``chorales_satb.npz`` (``soprano alto tenor bass``, from the
``chorales`` pieces). Each stem's examples are the mono stem files at the data's rate
(22.05 kHz); their magnitude spectrograms (2048-sample Hann window, hop 512) are pooled,
silent frames dropped, ``--max-frames`` frames drawn at random, and factorised with the
Kullback-Leibler multiplicative updates: 96 templates per loop stem (the lead spans eight
instruments), 32 per chorale voice (one instrument each; 96 scored 0.4 dB lower on the
validation chorales).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sepops import load_audio
from sepops.nmf import learn_dictionary, save_dictionary

#: name -> (manifest subset, stems, default templates per stem) of each shipped dictionary.
DICTIONARIES = {
    "loops_accompaniment_lead": ("loops", ["accompaniment", "lead"], 96),
    "chorales_satb": ("chorales", ["soprano", "alto", "tenor", "bass"], 32),
}


def stem_examples(data: Path, subset: str, stems: list[str], max_pieces: int | None):
    """{stem: [audio, ...]} from the pieces of ``subset`` in ``data/manifest.json``; and sr."""
    manifest = json.loads((data / "manifest.json").read_text())
    if manifest.get("set") == "dev" or data.resolve() == (ROOT.parent / "shared" / "data").resolve():
        raise SystemExit(f"{data} is the validation set: train on rendered training data instead")
    pieces = [p for p in manifest["pieces"] if p["subset"] == subset][:max_pieces]
    examples = {s: [] for s in stems}
    sr = None
    for p in pieces:
        for s in stems:
            audio, sr = load_audio(str(data / p["files"]["stems"][s]))
            examples[s].append(audio)
    return examples, sr, [p["id"] for p in pieces]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="training set folder (with manifest.json)")
    ap.add_argument("--out", type=Path, default=ROOT / "sepops" / "models" / "nmf")
    ap.add_argument("--only", choices=sorted(DICTIONARIES), nargs="*", help="train only these")
    ap.add_argument("--components", type=int, default=None, help="templates per stem (default: per dictionary)")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--max-frames", type=int, default=8000, help="frames per stem")
    ap.add_argument("--max-pieces", type=int, default=None)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or DICTIONARIES:
        subset, stems, default_components = DICTIONARIES[name]
        components = args.components or default_components
        t0 = time.perf_counter()
        examples, sr, ids = stem_examples(args.data, subset, stems, args.max_pieces)
        meta = {
            "trained_on": f"{len(ids)} '{subset}' pieces of {args.data.name} ({ids[0]} .. {ids[-1]})",
            "iterations": args.iterations,
            "max_frames_per_stem": args.max_frames,
            "seed": args.seed,
            "script": "scripts/train_nmf_dictionaries.py",
        }
        d = learn_dictionary(
            examples, sr, n_components=components, beta=args.beta, n_iter=args.iterations,
            max_frames=args.max_frames, seed=args.seed, metadata=meta,
        )
        path = args.out / f"{name}.npz"
        save_dictionary(d, str(path))
        print(f"{path}: {len(ids)} pieces, {components} x {len(stems)} templates, "
              f"{path.stat().st_size / 1e3:.0f} kB, {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
