"""Validation SDR of the U-Net models on ../shared/data, beside the IRM oracle and supervised NMF.

For each model, the pieces of the subset whose stems the model separates (loops:
accompaniment/lead; chorales: soprano/alto/tenor/bass) are separated from their mono
mixture and scored with BSS Eval v3; rows give the mean SDR over the task's stems and pieces.
Supervised NMF (operator "nmf" with its shipped dictionary for the subset) is included when
that operator and dictionary exist.

    python -m benchmarks.eval_unet [--model DIR_OR_NAME ...] [--record]

``--record`` writes the figures into the model's config.json (``validation``), where
tests/sepops/test_unet.py checks that the model still reproduces them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from benchmarks.common import load_piece, manifest, print_table

QUICK_PIECES = 2


def subset_for(stems: list[str]) -> str:
    for name, info in manifest()["subsets"].items():
        if set(stems) <= set(info["stems"]):
            return name
    raise ValueError(f"no subset of the validation set has the stems {stems}")


def _scores(op, pieces, stems, needs_refs=False) -> list[float]:
    from sepops.metrics import bss_eval, mean_sdr

    out = []
    for piece in pieces:
        mix, sr, refs = load_piece(piece)
        refs = {s: refs[s] for s in stems}
        est = op.separate(mix, sr, references=refs) if needs_refs else op.separate(mix, sr)
        out.append(mean_sdr(bss_eval(refs, {s: est[s] for s in stems})))
    return out


#: The supervised-NMF dictionary shipped for each subset (operator "nmf", sepops/models/nmf/).
NMF_DICTIONARIES = {"loops": "loops_accompaniment_lead", "chorales": "chorales_satb"}


def _nmf(subset):
    from sepops import get_operator

    try:
        return get_operator("nmf", dictionary=NMF_DICTIONARIES[subset])
    except Exception as exc:  # noqa: BLE001 - another engineer's operator; report and go on
        print(f"(supervised NMF not available for {subset}: {exc})", file=sys.stderr)
        return None


def evaluate(model: str, *, record: bool = False, baselines: bool = True) -> list[dict]:
    from sepops import get_operator

    op = get_operator("unet", model=model, device="cpu")
    stems = op.stem_names
    subset = subset_for(stems)
    pieces = [p for p in manifest()["pieces"] if p["subset"] == subset]
    t = time.perf_counter()
    sdr = _scores(op, pieces, stems)
    elapsed = time.perf_counter() - t
    rows = [{"model": model, "method": "unet", "subset": subset, "pieces": len(pieces),
             "mean_sdr_db": float(np.mean(sdr)), "seconds": elapsed}]
    if baselines:
        irm = get_operator("irm", stems=stems)
        rows.append({"model": model, "method": "irm (oracle)", "subset": subset, "pieces": len(pieces),
                     "mean_sdr_db": float(np.mean(_scores(irm, pieces, stems, needs_refs=True))), "seconds": 0.0})
        nmf = _nmf(subset)
        if nmf is not None:
            try:
                t = time.perf_counter()
                s = _scores(nmf, pieces, stems)
                rows.append({"model": model, "method": "nmf supervised", "subset": subset, "pieces": len(pieces),
                             "mean_sdr_db": float(np.mean(s)), "seconds": time.perf_counter() - t})
            except Exception as exc:  # noqa: BLE001 - another engineer's operator; report, go on
                print(f"(supervised NMF failed on {subset}: {exc})", file=sys.stderr)
    if record:
        path = op.path / "config.json"
        config = json.loads(path.read_text())
        config["validation"] = {
            "set": "../shared/data (dev set, mono mixtures)",
            "subset": subset,
            "pieces": len(pieces),
            "sdr": round(float(np.mean(sdr)), 3),
            "per_piece_sdr": [round(float(x), 3) for x in sdr],
            "quick_pieces": QUICK_PIECES,
            "quick_sdr": round(float(np.mean(sdr[:QUICK_PIECES])), 3),
            "baselines": {r["method"]: round(r["mean_sdr_db"], 3) for r in rows[1:]},
        }
        path.write_text(json.dumps(config, indent=2) + "\n")
    return rows


def run(models=None, record: bool = False) -> list[dict]:
    from sepops.unet.separator import shipped_models

    rows = []
    for m in models or shipped_models():
        rows += evaluate(m, record=record)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="model name or folder (default: all shipped)")
    parser.add_argument("--record", action="store_true", help="write the figures into config.json")
    args = parser.parse_args(argv)
    print_table(run(args.model, args.record), "U-Net vs oracle vs supervised NMF on ../shared/data")


if __name__ == "__main__":
    main()
